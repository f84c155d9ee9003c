"""Running one task attempt: the code shared by every pool (and by the
process pool's children). Returns (ok, output, error_kind, error_message)."""
import asyncio

from .. import codec
from ..errors import TaskError
from ..tasks import CHUNK_SUFFIX, lookup

UNKNOWN = "unknown_task"
loads = codec.loads
dumps = codec.dumps


def resolve(name):
    """(TaskDef, is_chunk) of a registered name, or (None, False). Only the
    registry is consulted: a name is never imported."""
    chunk = name.endswith(CHUNK_SUFFIX)
    d = lookup(name[:-len(CHUNK_SUFFIX)] if chunk else name)
    return d, chunk


def _describe(e):
    s = str(e)
    return "%s: %s" % (type(e).__name__, s) if s else type(e).__name__


def failure(e):
    """A task's exception as a result tuple."""
    if isinstance(e, TaskError):
        return (False, e.result if isinstance(e.result, bytes) else b"",
                e.kind, e.message)
    return (False, codec.encode_exception(e), "exception", _describe(e))


def decode(payload, chunk):
    """(args, kwargs) or a list of argument tuples; raises on bad bytes."""
    if chunk:
        (items,), _ = codec.decode_call(payload)
        return list(items)
    return codec.decode_call(payload)


def bad_payload(name, e):
    return (False, b"", "bad_payload",
            "task %r: payload did not unpickle: %s" % (name, _describe(e)))


def run_sync(d, chunk, payload):
    """Runs a thread or process task (or a chunk of it) here."""
    fn = d.fn
    if chunk:
        try:
            call = decode(payload, chunk)
        except Exception as e:  # noqa: BLE001 - hostile or stale bytes
            return bad_payload(d.name, e)
        values = []
        for args in call:
            try:
                values.append(fn(*args))
            except Exception as e:  # noqa: BLE001 - the task's own failure
                return (True, dumps((values, _chunk_error(e))), "", "")
        return (True, dumps((values, None)), "", "")
    # codec.decode_call, inline: this is every thread task's path.
    try:
        args, kwargs = loads(payload)
        if not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise TypeError("payload is not an (args, kwargs) pair")
    except Exception as e:  # noqa: BLE001 - hostile or stale bytes
        return bad_payload(d.name, e)
    try:
        return (True, dumps(fn(*args, **kwargs)), "", "")
    except Exception as e:  # noqa: BLE001
        return failure(e)


def _chunk_error(e):
    return (_describe(e), codec.encode_exception(e))


async def run_async(d, chunk, payload):
    """Runs an async task (a chunk's items concurrently) on this loop.
    CancelledError propagates: the pool decides what it means."""
    try:
        call = decode(payload, chunk)
    except Exception as e:  # noqa: BLE001
        return bad_payload(d.name, e)
    fn = d.fn
    if chunk:
        return await _run_chunk(fn, call)
    args, kwargs = call
    try:
        return (True, codec.dumps(await fn(*args, **kwargs)), "", "")
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001
        return failure(e)


async def _run_chunk(fn, calls):
    """A chunk's items at once, as the C++ worker's loop runs them: reported
    in order up to the first failure, whose later items are cancelled (and
    awaited, so none outlives the job); cancelling the job cancels them
    all."""
    items = [asyncio.ensure_future(fn(*a)) for a in calls]
    values = []
    try:
        for i, item in enumerate(items):
            try:
                values.append(await item)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - the task's own failure
                return (True, codec.dumps((values, _chunk_error(e))), "", "")
        return (True, codec.dumps((values, None)), "", "")
    finally:
        left = [item for item in items if not item.done()]
        for item in left:
            item.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
