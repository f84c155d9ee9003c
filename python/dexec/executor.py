"""dexec.Executor: a concurrent.futures.Executor whose jobs run on a cluster.

    import dexec, tasks                      # tasks.square is a @dexec.task
    with dexec.Executor("127.0.0.1:50051") as ex:
        print(list(ex.map(tasks.square, range(10))))
        f = ex.options(priority=5, timeout=30).submit(tasks.square, 7)
        print(f.result())                    # 49
        print(ex.submit("sys.echo", b"hi").result())   # b'hi': a C++ task

Futures are real concurrent.futures.Future objects (a subclass), so
concurrent.futures.wait and as_completed work on them unchanged.

Threads: `dexec-session` owns the gRPC Session stream and completes futures
from the events the broker pushes; gRPC's own request thread writes the
batches the callers queued (many jobs per message: a Python gRPC stream
carries only about 8k messages/s). `dexec-callback` runs done callbacks, in
the order they were added, never on a gRPC thread. The Executor is
thread-safe.

Reconnecting follows docs/DESIGN.md ("Reconnecting"): one random client_id
per Executor, a seq per batch, unacknowledged batches resent with their seq
on a new stream after re-watching every unfinished job id.
"""
import collections
import concurrent.futures as cf
import itertools
import os
import queue
import random
import threading
import time
import uuid
from concurrent.futures._base import (CANCELLED, CANCELLED_AND_NOTIFIED,
                                      FINISHED, PENDING, RUNNING)

import grpc

from . import codec, credentials
from ._varint import varint
from pickle import dumps as _pickle_dumps
from ._proto import dexec_pb2 as pb
from .errors import AuthError, BrokerUnavailable, RemoteTraceback, TaskError
from .tasks import CHUNK_SUFFIX, task_of

DEFAULT_BROKER = "127.0.0.1:50051"
# A batch is cut at this many jobs or this many payload bytes (the broker's
# gRPC limit is far above; smaller messages keep the stream responsive).
MAX_BATCH_JOBS = 8192
MAX_BATCH_BYTES = 3 << 20
# At most this many batches written and not acknowledged: half the 256 the
# broker remembers per client, so a resent batch it took is still known.
MAX_UNACKED = 128
RECONNECT_INITIAL_S = 0.05
RECONNECT_MAX_S = 2.0
# A new stream that lived this long (or answered) ends an outage.
STABLE_STREAM_S = 1.0
# A batch the broker refuses for room (--max_queued, --max_queued_bytes)
# waits in the client: one probe batch at a time, halved on each refusal,
# doubled on each success; a refused single job retries after a backoff
# from ROOM_INITIAL_S doubling to ROOM_MAX_S (client/session.cc does the
# same).
ROOM_INITIAL_S = 0.01
ROOM_MAX_S = 1.0
MAX_WATCH_IDS = 65536
MAX_CANCEL_IDS = 65536
CONDITION_STRIPES = 64

_SUCCEEDED = pb.Job.SUCCEEDED
_FAILED = pb.Job.FAILED
_CANCELLED = pb.Job.CANCELLED
_RUNNING = pb.Job.RUNNING

_RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
_DONE = frozenset((CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED))


_loads = codec.loads
_NO_KWARGS = {}  # pickled as the kwargs of map's jobs; never changed

# ---------------------------------------------------------------- encoding
# JobSpec and SessionRequest.Submit are encoded by hand: building a protobuf
# message per job costs several microseconds in Python, the bytes below
# about one. Field numbers are those of protos/dexec.proto.

def _len_field(tag, data):
    return tag + varint(len(data)) + data


class _SpecTemplate:
    """The bytes of every JobSpec field but the payload, for one task name
    and set of options; shared by all jobs submitted with them."""

    __slots__ = ("head", "tail")

    def __init__(self, task, priority=0, timeout=None, max_attempts=0,
                 idempotency_key=None):
        self.head = _len_field(b"\x0a", task.encode()) + b"\x12"
        tail = b""
        if priority:
            tail += b"\x18" + varint(priority)
        if timeout:
            secs = int(timeout)
            nanos = int(round((timeout - secs) * 1e9))
            d = (b"\x08" + varint(secs) if secs else b"") + \
                (b"\x10" + varint(nanos) if nanos else b"")
            tail += _len_field(b"\x22", d)
        if max_attempts:
            tail += b"\x28" + varint(max_attempts)
        if idempotency_key:
            tail += _len_field(b"\x32", idempotency_key.encode())
        self.tail = tail

    def encode(self, payload):
        """One repeated `jobs` entry (field 2 of Submit), framed."""
        spec = self.head + varint(len(payload)) + payload + self.tail
        return b"\x12" + varint(len(spec)) + spec


def _encode_submit(seq, client_id, job_bytes):
    body = b"\x08" + varint(seq) + _len_field(b"\x1a", client_id) + \
        b"".join(job_bytes)
    return _len_field(b"\x0a", body)


def _encode_watch(ids):
    return pb.SessionRequest(watch=pb.SessionRequest.Watch(
        job_ids=ids)).SerializeToString()


# ---------------------------------------------------------------- futures

def _stripe():
    """A Condition shared by some futures. `.lock` is its RLock, taken
    directly where a `with condition:` (Python code) costs too much."""
    lock = threading.RLock()
    c = threading.Condition(lock)
    c.lock = lock
    return c


class _ListOnFirstUse:
    """A Future's _waiters or _done_callbacks: an empty list made when
    something first reads it (the standard library's wait() and
    as_completed() append to _waiters directly), which also marks the
    future _watched. Most futures never need either, and two lists fewer
    per submit is less for the cyclic GC to traverse, a good part of a
    submit's cost when 100,000 futures are alive. Every first read happens
    under the future's condition (concurrent.futures takes it for both
    lists; so does this module), so two threads never make two lists."""

    def __init__(self, name):
        self._name = name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return self
        v = []
        # The instance's attribute shadows this non-data descriptor.
        setattr(obj, self._name, v)
        obj._watched = True
        return v


class Future(cf.Future):
    """A dexec job's future. `job_id` is set once the broker has the job.

    cancel() also stops a running job at its worker, and returns True
    exactly when no result will come.
    """

    # Defaults read from the class until a future sets its own: a submit
    # sets only what differs per future.
    _state = PENDING
    _result = None
    _exception = None
    job_id = None
    _seq = None  # the batch it was written in
    _withdrawn = False  # cancelled before it was written
    _counted = False  # settled and counted by the session
    _waiters = _ListOnFirstUse("_waiters")
    _done_callbacks = _ListOnFirstUse("_done_callbacks")
    _watched = False  # either list exists (may be empty)

    def __init__(self, session, decode):
        # cf.Future.__init__ but for the condition: one Condition per future
        # costs more than the rest of a submit, so futures share a few of
        # their session's (result() and exception() loop over wake-ups
        # meant for a neighbour; wait() and as_completed() take the
        # futures' conditions, which are re-entrant locks, in any order).
        self._condition = session.next_condition()
        self._session = session
        self._decode = decode  # bytes -> value; None: the raw bytes

    def cancel(self):
        with self._condition:
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            if self._state == FINISHED:
                return False
        return self._session.cancel([self])[0]

    def result(self, timeout=None):
        if self._state == FINISHED and self._exception is None:
            # Settled (set once, _result before _state): no lock needed.
            return self._result
        try:
            with self._condition.lock:
                self._wait_done(timeout)
                return self._Future__get_result()
        finally:
            self = None  # no cycle with the exception's frames (as cf)

    def exception(self, timeout=None):
        with self._condition:
            self._wait_done(timeout)
            return self._exception

    def _wait_done(self, timeout):
        """Holding the condition: returns when FINISHED; raises
        CancelledError or TimeoutError."""
        end = None
        while True:
            st = self._state
            if st in (CANCELLED, CANCELLED_AND_NOTIFIED):
                raise cf.CancelledError()
            if st == FINISHED:
                return
            if timeout is not None:
                if end is None:
                    end = time.monotonic() + timeout
                left = end - time.monotonic()
                if left <= 0:
                    raise TimeoutError()
                self._condition.wait(left)
            else:
                self._condition.wait()

    def _invoke_callbacks(self):
        if self._watched and self._done_callbacks:
            self._session.run_callbacks(self)

    def _run_callbacks_here(self):
        cf.Future._invoke_callbacks(self)

    # -- completion, by the session (never raise on a settled future)

    def _finish(self, value=None, exc=None):
        with self._condition:
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED, FINISHED):
                return
            if exc is not None:
                self.set_exception(exc)
            else:
                self.set_result(value)

    def _force_cancel(self):
        """CANCELLED whatever the local state (the broker decided)."""
        with self._condition:
            if self._state == FINISHED:
                return False
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            self._state = CANCELLED
            self._condition.notify_all()
            # CANCELLED -> CANCELLED_AND_NOTIFIED and wake wait()/
            # as_completed waiters, as a pool does when it skips the item.
            self.set_running_or_notify_cancel()
        self._invoke_callbacks()
        return True


def _remote_exception(kind, message, output):
    """The exception a failed job's future raises."""
    if kind == "exception" and output:
        try:
            v = codec.loads(output)
        except Exception as e:  # noqa: BLE001 - its class may be missing here
            err = TaskError(kind, message)
            err.add_note("the exception did not unpickle here: %r" % (e,))
            return err
        if isinstance(v, tuple) and len(v) == 2 and \
                isinstance(v[0], BaseException):
            exc, tb = v
            exc.__cause__ = RemoteTraceback(tb)
            return exc
        if isinstance(v, tuple) and len(v) == 4:
            err = TaskError(kind, message)
            err.__cause__ = RemoteTraceback(v[3])
            return err
    return TaskError(kind, message, output)


# ---------------------------------------------------------------- session

class _Stream:
    __slots__ = ("closed", "opened_at", "answered", "call")

    def __init__(self):
        self.closed = False
        self.opened_at = time.monotonic()
        self.answered = False
        self.call = None


class _Session:
    """Owns the Session stream; see the module docstring for threads."""

    def __init__(self, broker, channel, metadata, token_source,
                 reconnect_timeout, connect_timeout):
        self.broker = broker
        self._channel = channel
        self._md = metadata
        self._token_source = token_source
        self._reconnect_timeout = reconnect_timeout
        self._client_id = uuid.uuid4().hex.encode()
        self._session_rpc = channel.stream_stream(
            "/dexec.v1.Broker/Session", request_serializer=None,
            response_deserializer=pb.SessionResponse.FromString)
        self._cancel_rpc = channel.unary_unary(
            "/dexec.v1.Broker/Cancel",
            request_serializer=pb.CancelRequest.SerializeToString,
            response_deserializer=pb.CancelResponse.FromString)
        self._get_jobs_rpc = channel.unary_unary(
            "/dexec.v1.Broker/GetJobs",
            request_serializer=pb.GetJobsRequest.SerializeToString,
            response_deserializer=pb.GetJobsResponse.FromString)

        # Guards everything below; never held across I/O or user code.
        self._mu = threading.Lock()
        # The sender waits here for work, window room or its stream closing.
        self._send_cv = threading.Condition(self._mu)
        # True while it waits: a submit notifies only then (Condition.notify
        # is Python code, a good part of a submit's cost).
        self._sender_waiting = False
        # cancel() waits here for a written job's id.
        self._ack_cv = threading.Condition(self._mu)
        # shutdown(wait=True) waits here for every future to settle.
        self._idle_cv = threading.Condition(self._mu)
        self._pending = collections.deque()  # (future, job bytes)
        # seq -> (futures, job bytes, message bytes): written, not answered.
        self._unacked = collections.OrderedDict()
        # Refused for room: [ticket, [(future, job bytes)...]] in ticket
        # order (a batch's first seq), sent again before anything in
        # _pending (see ROOM_INITIAL_S).
        self._room_wait = []
        self._room_probe_seq = None  # the probe batch written, if any
        self._room_probe_ticket = None  # and the ticket it was taken from
        self._room_limit = MAX_BATCH_JOBS  # jobs in the next probe
        self._room_retry_at = 0.0
        self._room_backoff = ROOM_INITIAL_S
        self._by_id = {}  # job id -> unresolved future
        # job id -> later futures of the same job (idempotency keys).
        self._same_job = {}
        self._watch_q = []  # ids to watch on the current stream
        self._next_seq = 1
        self._stream = None
        self._closing = False  # shutdown(): no new submits
        # shutdown(cancel_futures=True): a batch refused for room is
        # cancelled, not kept waiting.
        self._closing_cancel = False
        self._broken = None  # an exception: the session gave up
        self._outstanding = 0  # futures not settled yet

        # Shared by futures, round-robin (see Future.__init__).
        self._conditions = [_stripe() for _ in range(CONDITION_STRIPES)]
        self._next_condition = itertools.cycle(self._conditions).__next__

        self._callbacks = None  # queue.SimpleQueue, started on first use
        self._callback_thread = None

        self._probe(connect_timeout)
        self._thread = threading.Thread(target=self._run, name="dexec-session",
                                        daemon=True)
        self._thread.start()

    # ---- errors

    def _auth_error(self, e):
        code = e.code()
        detail = e.details() or code.name
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return AuthError("broker %s refused the call for this token's role "
                             "(%s): %s" % (self.broker, self._token_source or
                                           "no token", detail))
        if self._token_source is None:
            return AuthError("broker %s requires a token and none was found: "
                             "%s (%s)" % (self.broker,
                                          credentials.WHERE_TOKENS_COME_FROM,
                                          detail))
        return AuthError("broker %s refused the token from %s: %s" %
                         (self.broker, self._token_source, detail))

    def _probe(self, timeout):
        """Fails fast, with a clear error, on a wrong address or token."""
        try:
            self._get_jobs_rpc(pb.GetJobsRequest(), metadata=self._md,
                               timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as e:
            code = e.code()
            if code == grpc.StatusCode.UNAUTHENTICATED:
                raise self._auth_error(e) from None
            if code == grpc.StatusCode.PERMISSION_DENIED:
                return  # authenticated; the role decides per call
            if code in (grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.UNAVAILABLE):
                raise BrokerUnavailable(
                    "broker %s unreachable within %.3g s (%s)" %
                    (self.broker, timeout, e.details() or code.name)) from None
            raise

    def next_condition(self):
        return self._next_condition()

    # ---- callers' side

    def add(self, entries):
        """Queues (future, job bytes) pairs for the sender."""
        with self._mu:
            if self._broken is not None:
                raise self._broken
            if self._closing:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.extend(entries)
            self._outstanding += len(entries)
            if self._sender_waiting:
                self._send_cv.notify()

    def add_one(self, f, job):
        with self._mu:
            if self._broken is not None:
                raise self._broken
            if self._closing:
                raise RuntimeError("cannot schedule new futures after shutdown")
            self._pending.append((f, job))
            self._outstanding += 1
            if self._sender_waiting:
                self._send_cv.notify()

    def attach(self, job_ids, decode):
        for jid in job_ids:
            # Checked before any is watched: one bad id would otherwise
            # fail the session stream's encoding, for every future on it.
            if isinstance(jid, bool) or not isinstance(jid, int) or jid < 0:
                raise TypeError(
                    "attach() takes job ids (ints >= 0, Future.job_id once "
                    "the broker has the job), not %r" % (jid,))
        out = []
        with self._mu:
            if self._broken is not None:
                raise self._broken
            for jid in job_ids:
                f = self._by_id.get(jid)
                if f is None:
                    f = Future(self, decode)
                    f.job_id = jid
                    self._by_id[jid] = f
                    self._outstanding += 1
                    self._watch_q.append(jid)
                out.append(f)
            self._send_cv.notify()
        return out

    def cancel(self, futures):
        """Cancels at the broker; one bool per future (Future.cancel())."""
        results = [False] * len(futures)
        ask = []  # (index, future) with a job id
        deadline = time.monotonic() + self._reconnect_timeout
        with self._mu:
            for i, f in enumerate(futures):
                if f.done():
                    results[i] = f.cancelled()
                    continue
                if f.job_id is None and f._seq is None and not f._withdrawn:
                    # Never written: the broker will never see it.
                    f._withdrawn = True
                    results[i] = True
                    continue
                ask.append((i, f))
            # A written job not acknowledged yet: wait for its id (or for
            # the broker to refuse it for room: then it is withdrawn).
            while True:
                for i, f in ask:
                    if f.job_id is None and f._seq is None and \
                            not f._withdrawn and not f.done():
                        f._withdrawn = True
                        results[i] = True
                if not any(f.job_id is None and not f.done() and
                           not f._withdrawn for _, f in ask):
                    break
                if self._broken is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._ack_cv.wait(left)
        for i, f in enumerate(futures):
            if results[i] and f._withdrawn:
                self._settle(f, cancel=True)
        for i, f in ask:
            if f._withdrawn:
                self._settle(f, cancel=True)
        ids = [(i, f) for i, f in ask if f.job_id is not None and not f.done()]
        for start in range(0, len(ids), MAX_CANCEL_IDS):
            part = ids[start:start + MAX_CANCEL_IDS]
            try:
                resp = self._cancel_rpc(
                    pb.CancelRequest(job_ids=[f.job_id for _, f in part]),
                    metadata=self._md, timeout=30)
            except grpc.RpcError as e:
                if e.code() in (grpc.StatusCode.UNAUTHENTICATED,
                                grpc.StatusCode.PERMISSION_DENIED):
                    raise self._auth_error(e) from None
                raise BrokerUnavailable("cancel at broker %s failed: %s" %
                                        (self.broker, e.details())) from None
            for (i, f), ok in zip(part, resp.cancelled):
                if ok:
                    self._settle(f, cancel=True)
        for i, f in ask:
            results[i] = f.cancelled()
        return results

    def run_callbacks(self, future):
        with self._mu:
            if self._callbacks is None:
                self._callbacks = queue.SimpleQueue()
                self._callback_thread = threading.Thread(
                    target=self._callback_loop, name="dexec-callback",
                    daemon=True)
                self._callback_thread.start()
        self._callbacks.put(future)

    def _callback_loop(self):
        while True:
            f = self._callbacks.get()
            if f is None:
                return
            f._run_callbacks_here()

    def cancel_pending(self):
        """shutdown(cancel_futures=True): every future not running yet."""
        with self._mu:
            self._closing_cancel = True
            fs = [f for f, _ in self._pending if not f._withdrawn]
            fs += [f for f in self._by_id.values() if f._state == PENDING]
            for futs, _, _ in self._unacked.values():
                fs.extend(f for f in futs if f._state == PENDING)
            for _, entries in self._room_wait:
                fs.extend(f for f, _ in entries if not f._withdrawn)
        if fs:
            self.cancel(fs)

    def close(self, wait):
        with self._mu:
            self._closing = True
            if wait:
                while self._outstanding > 0 and self._broken is None:
                    self._idle_cv.wait()
            idle = self._outstanding == 0 or self._broken is not None
            if idle and self._stream is not None:
                self._stream.closed = True
            self._send_cv.notify_all()
        if wait:
            self._thread.join()
            if self._callbacks is not None:
                self._callbacks.put(None)
                self._callback_thread.join()

    # ---- settling futures

    def _settle(self, f, value=None, exc=None, cancel=False):
        """Completes a future once; counts it for shutdown(wait=True)."""
        if cancel:
            changed = f._force_cancel()
        else:
            before = f._state
            f._finish(value, exc)
            changed = before not in (FINISHED, CANCELLED,
                                     CANCELLED_AND_NOTIFIED)
        if not changed:
            return
        with self._mu:
            if f._counted:
                return
            f._counted = True
            if f.job_id is not None and self._by_id.get(f.job_id) is f:
                del self._by_id[f.job_id]
            copies = self._same_job.pop(f.job_id, ()) if self._same_job \
                else ()
            self._outstanding -= 1
            if self._outstanding == 0:
                self._idle_cv.notify_all()
                if self._closing and self._stream is not None:
                    self._stream.closed = True
                    self._send_cv.notify_all()
        for g in copies:
            self._copy_outcome(f, g)

    def _copy_outcome(self, first, g):
        if first is None or first.cancelled():
            self._settle(g, cancel=True)
        elif first._exception is not None:
            self._settle(g, exc=first._exception)
        else:
            self._settle(g, first._result)

    def _fail_all(self, exc):
        with self._mu:
            self._broken = exc
            fs = [f for f, _ in self._pending]
            self._pending.clear()
            for futs, _, _ in self._unacked.values():
                fs.extend(futs)
            self._unacked.clear()
            for _, entries in self._room_wait:
                fs.extend(f for f, _ in entries)
            self._room_wait = []
            fs.extend(self._by_id.values())
            self._ack_cv.notify_all()
            self._idle_cv.notify_all()
        for fs_same in list(self._same_job.values()):
            fs.extend(fs_same)
        for f in fs:
            self._settle(f, exc=exc)

    # ---- the sender (runs on gRPC's request thread)

    def _requests(self, stream):
        with self._mu:
            watch = sorted(self._by_id)
            self._watch_q = []
            resend = [b for _, _, b in self._unacked.values()]
        # Watches first: a restarted in-memory broker hands out ids from 1
        # again, and a resent batch must not take an id we re-watch.
        for start in range(0, len(watch), MAX_WATCH_IDS):
            yield _encode_watch(watch[start:start + MAX_WATCH_IDS])
        yield from resend
        while True:
            with self._mu:
                while True:
                    if stream.closed:
                        return
                    if self._watch_q:
                        break
                    wait = self._batch_wait_locked(time.monotonic())
                    if wait == 0:
                        break
                    self._sender_waiting = True
                    self._send_cv.wait(wait)
                    self._sender_waiting = False
                watch, self._watch_q = self._watch_q, []
                batch = None
                if self._batch_wait_locked(time.monotonic()) == 0:
                    batch = self._take_batch()
            if watch:
                yield _encode_watch(watch)
            if batch is not None:
                yield batch

    def _batch_wait_locked(self, now):
        """0 when a batch can be written now; else how long to wait (None:
        until notified)."""
        if len(self._unacked) >= MAX_UNACKED:
            return None
        if self._room_wait or self._room_probe_seq is not None:
            # The broker is full: only the probe goes, when it is due.
            if self._room_probe_seq is not None or not self._room_wait:
                return None
            return max(0.0, self._room_retry_at - now)
        return 0 if self._pending else None

    def _take_batch(self):
        futs, jobs, size = [], [], 0
        seq = self._next_seq
        if self._room_wait:
            # The probe: the oldest refused jobs, at most _room_limit.
            head = self._room_wait[0]
            self._room_probe_ticket = ticket = head[0]
            entries = head[1]
            n = min(len(entries), self._room_limit)
            take, rest = entries[:n], entries[n:]
            if rest:
                head[1] = rest
            else:
                del self._room_wait[0]
            source = iter(take)
            limit = n
            self._room_probe_seq = seq
        else:
            source = None
            limit = MAX_BATCH_JOBS
        pending = self._pending
        while len(jobs) < limit and size < MAX_BATCH_BYTES:
            if source is not None:
                e = next(source, None)
                if e is None:
                    break
            elif pending:
                e = pending.popleft()
            else:
                break
            f, b = e
            if f._withdrawn:
                continue
            f._seq = seq
            futs.append(f)
            jobs.append(b)
            size += len(b)
        if source is not None:
            rest = [e for e in source]
            if rest:  # cut by bytes: back to the front
                self._room_wait.insert(0, [ticket, rest])
        if not futs:
            if self._room_probe_seq == seq:
                self._room_probe_seq = None
            return None
        self._next_seq += 1
        data = _encode_submit(seq, self._client_id, jobs)
        self._unacked[seq] = (futs, jobs, data)
        return data

    def _wait_for_room_locked(self, seq, entry):
        """A batch refused for room waits in the client (holding _mu)."""
        futs, jobs, _ = entry
        now = time.monotonic()
        probe = self._room_probe_seq == seq
        # A probe goes back before the rest of its chunk; another batch
        # (written before the broker was full) by its own seq.
        ticket = self._room_probe_ticket if probe else seq
        entries = []
        for f, b in zip(futs, jobs):
            f._seq = None  # not written: cancel() may withdraw it
            if not f._withdrawn and not f.done():
                entries.append((f, b))
        n = len(entries)
        if entries:
            i = 0
            while i < len(self._room_wait) and \
                    self._room_wait[i][0] < ticket:
                i += 1
            self._room_wait.insert(i, [seq, entries])
        if probe:
            self._room_probe_seq = None
        self._room_limit = max(1, min(self._room_limit, n // 2 or 1))
        if probe and n > 1:
            # Maybe it was only too big: offer the first half at once.
            self._room_retry_at = now
        elif probe or self._room_retry_at <= now:
            self._room_retry_at = now + self._room_backoff * (
                0.5 + random.random() / 2)
            self._room_backoff = min(self._room_backoff * 2, ROOM_MAX_S)
        self._send_cv.notify()
        self._ack_cv.notify_all()  # cancel() may withdraw these now

    def _room_made_locked(self):
        """A batch was taken while jobs wait for room: the next goes now,
        twice as large."""
        self._room_probe_seq = None
        self._room_backoff = ROOM_INITIAL_S
        self._room_retry_at = 0.0
        self._room_limit = min(MAX_BATCH_JOBS, self._room_limit * 2)

    # ---- the receiver: dexec-session

    def _run(self):
        backoff = RECONNECT_INITIAL_S
        outage_since = None
        while True:
            with self._mu:
                if self._broken is not None:
                    return
                if self._closing and self._outstanding == 0:
                    return
                stream = self._stream = _Stream()
            try:
                call = stream.call = self._session_rpc(
                    self._requests(stream), metadata=self._md)
                for resp in call:
                    if not stream.answered:
                        stream.answered = True
                        outage_since = None
                        backoff = RECONNECT_INITIAL_S
                    self._on_response(resp)
                    if stream.closed:
                        # Closing: our half is done; let the broker end it.
                        pass
                code = grpc.StatusCode.OK
                details = "stream ended"
            except grpc.RpcError as e:
                code, details = e.code(), e.details()
                if code in (grpc.StatusCode.UNAUTHENTICATED,
                            grpc.StatusCode.PERMISSION_DENIED):
                    self._fail_all(self._auth_error(e))
                    return
            with self._mu:
                stream.closed = True
                self._send_cv.notify_all()
                done = self._closing and self._outstanding == 0
            if done:
                return
            now = time.monotonic()
            if outage_since is None or stream.answered or \
                    now - stream.opened_at >= STABLE_STREAM_S:
                if outage_since is None or stream.answered:
                    outage_since = now
            if now - outage_since >= self._reconnect_timeout:
                self._fail_all(BrokerUnavailable(
                    "broker %s unreachable for %.0f s (%s: %s)" %
                    (self.broker, now - outage_since, code.name, details)))
                return
            # Wait for the channel, then a jittered backoff.
            try:
                grpc.channel_ready_future(self._channel).result(
                    timeout=max(0.05, self._reconnect_timeout -
                                (time.monotonic() - outage_since)))
            except grpc.FutureTimeoutError:
                continue
            time.sleep(backoff * (0.5 + random.random() / 2))
            backoff = min(backoff * 2, RECONNECT_MAX_S)

    def _on_response(self, resp):
        if resp.HasField("submitted"):
            s = resp.submitted
            with self._mu:
                entry = self._unacked.pop(s.seq, None)
                self._send_cv.notify()
                copies = []
                refused = entry is not None and \
                    s.error_code == _RESOURCE_EXHAUSTED
                if refused and not self._closing_cancel:
                    self._wait_for_room_locked(s.seq, entry)
                    entry = None
                elif entry is not None and s.error_code == 0 and \
                        s.seq == self._room_probe_seq:
                    self._room_made_locked()
                elif refused and s.seq == self._room_probe_seq:
                    self._room_probe_seq = None
                if entry is not None and s.error_code == 0:
                    by_id = self._by_id
                    for f, jid in zip(entry[0], s.job_ids):
                        f.job_id = jid
                        if f._state in _DONE:  # done(), without its lock
                            continue
                        first = by_id.get(jid)
                        if first is None:
                            by_id[jid] = f
                        else:
                            # The same job again (an idempotency key):
                            # it settles with the first future.
                            self._same_job.setdefault(jid, []).append(f)
                    self._ack_cv.notify_all()
                for jid, fs in list(self._same_job.items()):
                    first = self._by_id.get(jid)
                    if first is None or first.done():
                        copies.extend((first, g) for g in fs)
                        del self._same_job[jid]
            for first, g in copies:
                self._copy_outcome(first, g)
            if entry is not None and s.error_code != 0:
                for f in entry[0]:
                    if refused:  # shutdown(cancel_futures=True)
                        self._settle(f, cancel=True)
                    else:
                        self._settle(f, exc=TaskError("rejected",
                                                      s.error_message))
                # cancel() waits for these written jobs' ids: they are
                # done instead, and it must not wait out its deadline.
                with self._mu:
                    self._ack_cv.notify_all()
        if resp.HasField("events"):
            self._on_events(resp.events.events)

    def _on_events(self, events):
        by_id = self._by_id
        settled = []  # futures this response finished, counted at the end
        slow = []  # (future, event) needing the general path
        for e in events:
            f = by_id.get(e.job_id)
            if f is None:
                continue  # settled already: a duplicate event
            st = e.state
            if st == _RUNNING:
                # set_running_or_notify_cancel() of a PENDING future, inline
                # (the broker reports every job running before its result).
                if f._state == PENDING:
                    with f._condition.lock:
                        if f._state == PENDING:
                            f._state = RUNNING
                continue
            if st != _SUCCEEDED or self._same_job or (
                    f._watched and f._done_callbacks):
                slow.append((f, e))
                continue
            try:
                v = e.result if f._decode is None else f._decode(e.result)
            except Exception as ex:  # noqa: BLE001
                slow.append((f, ex))
                continue
            # Future.set_result, inline: this loop is the client's hot path.
            c = f._condition
            with c.lock:
                if f._state in _DONE:
                    continue
                f._result = v
                f._state = FINISHED
                if f._watched:
                    for w in f._waiters:
                        w.add_result(f)
                # Condition.notify_all is Python code; most futures have
                # no result() waiting (CPython's Condition keeps its
                # waiters in _waiters).
                if getattr(c, "_waiters", True):
                    c.notify_all()
            settled.append(f)
        if settled:
            with self._mu:
                for f in settled:
                    if not f._counted:
                        f._counted = True
                        if by_id.get(f.job_id) is f:
                            del by_id[f.job_id]
                        self._outstanding -= 1
                if self._outstanding == 0:
                    self._idle_cv.notify_all()
                    if self._closing and self._stream is not None:
                        self._stream.closed = True
                        self._send_cv.notify_all()
        for f, e in slow:
            if isinstance(e, Exception):
                self._settle(f, exc=TaskError(
                    "bad_result", "job %d: result did not unpickle: %r" %
                    (f.job_id, e)))
                continue
            st = e.state
            if st == _SUCCEEDED:
                try:
                    v = e.result if f._decode is None else f._decode(e.result)
                except Exception as ex:  # noqa: BLE001
                    self._settle(f, exc=TaskError(
                        "bad_result", "job %d: result did not unpickle: %r" %
                        (e.job_id, ex)))
                    continue
                self._settle(f, v)
            elif st == _CANCELLED:
                self._settle(f, cancel=True)
            elif st == _FAILED or e.error.kind:
                kind = e.error.kind or "unknown"
                msg = e.error.message
                if kind == "not_found" and f._seq is not None:
                    msg = "job %d was lost by the broker" % e.job_id
                self._settle(f, exc=_remote_exception(kind, msg, e.result))


# ---------------------------------------------------------------- executor

class _Options:
    """Per-job options; see Executor.options()."""

    __slots__ = ("priority", "timeout", "max_attempts", "idempotency_key")

    def __init__(self, priority=0, timeout=None, retries=None,
                 idempotency_key=None):
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive seconds")
        if retries is not None and retries < 0:
            raise ValueError("retries must be >= 0")
        self.priority = int(priority)
        self.timeout = timeout
        self.max_attempts = retries + 1 if retries is not None else 0
        self.idempotency_key = idempotency_key


class _Call:
    """How one fn is submitted: its task name, spec template and decoder."""

    __slots__ = ("raw", "template", "name")

    def __init__(self, fn, opts, chunk=False):
        if isinstance(fn, str):
            if chunk:
                raise ValueError("chunksize > 1 needs a @dexec.task function; "
                                 "task %r takes one bytes payload per job" % fn)
            self.raw = True
            name, timeout = fn, opts.timeout
        else:
            d = task_of(fn)
            if d is None:
                raise TypeError(
                    "%r is not a dexec task: decorate it with @dexec.task (and "
                    "start a worker with its module), or pass a task name "
                    "string and a bytes payload" % (fn,))
            self.raw = False
            name = d.name + CHUNK_SUFFIX if chunk else d.name
            timeout = opts.timeout if opts.timeout is not None else d.timeout
        self.name = name
        self.template = _SpecTemplate(name, opts.priority, timeout,
                                      opts.max_attempts, opts.idempotency_key)

    def payload(self, args, kwargs):
        if self.raw:
            if len(args) != 1 or kwargs or not isinstance(
                    args[0], (bytes, bytearray, memoryview)):
                raise TypeError("task %r takes exactly one bytes payload" %
                                self.name)
            return bytes(args[0])
        return codec.encode_call(args, kwargs)


class _Submitter:
    """submit() and map() with a fixed set of job options."""

    def __init__(self, executor, opts):
        self._ex = executor
        self._opts = opts
        self._calls = {}  # fn -> _Call

    def submit(self, fn, /, *args, **kwargs):
        call = self._calls.get(fn)
        if call is None:
            call = _Call(fn, self._opts)
            if len(self._calls) < 1024:
                self._calls[fn] = call
        return self._ex._submit_one(call, args, kwargs)

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        return self._ex._map(fn, iterables, timeout, chunksize, buffersize,
                             self._opts)


class Executor(cf.Executor):
    """Runs @dexec.task functions (or named tasks) on a dexec cluster.

    broker: "HOST:PORT" of the broker's gRPC API (default $DEXEC_BROKER,
    else 127.0.0.1:50051). token / token_file: see dexec.credentials for
    where a token is found otherwise. tls_ca (or $DEXEC_TLS_CA), tls_cert,
    tls_key: TLS, mutual with the last two. connect_timeout: the first
    connection must succeed within it (BrokerUnavailable otherwise, AuthError
    on a refused token). reconnect_timeout: how long an outage may last
    before every unfinished future fails with BrokerUnavailable.
    """

    def __init__(self, broker=None, *, token=None, token_file=None,
                 tls_ca=None, tls_cert=None, tls_key=None,
                 connect_timeout=10.0, reconnect_timeout=60.0):
        self.broker = broker or os.environ.get("DEXEC_BROKER") or \
            DEFAULT_BROKER
        tok, source = credentials.find_token(token, token_file)
        metadata = (("authorization", "Bearer " + tok),) if tok else None
        options = [
            ("grpc.max_receive_message_length", -1),
            ("grpc.max_send_message_length", -1),
            ("grpc.initial_reconnect_backoff_ms", 50),
            ("grpc.min_reconnect_backoff_ms", 50),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ]
        creds = credentials.channel_credentials(tls_ca, tls_cert, tls_key)
        if creds is None:
            # Plaintext (loopback): gRPC drops call credentials on insecure
            # channels, so the token goes as metadata on every call.
            self._channel = grpc.insecure_channel(self.broker, options)
        else:
            self._channel = grpc.secure_channel(self.broker, creds, options)
        try:
            self._session = _Session(self.broker, self._channel, metadata,
                                     source, reconnect_timeout,
                                     connect_timeout)
        except BaseException:
            self._channel.close()
            raise
        self._default = _Submitter(self, _Options())
        self._shutdown = False

    # ---- concurrent.futures.Executor

    def submit(self, fn, /, *args, **kwargs):
        """Schedules fn(*args, **kwargs) as a job; returns its Future.

        fn is a @dexec.task function, or a task name string followed by one
        bytes payload (C++ and built-in tasks, e.g. "sys.echo"); the future
        of the latter gives the result bytes.
        """
        d = self._default
        call = d._calls.get(fn)
        if call is None:
            return d.submit(fn, *args, **kwargs)
        return self._submit_one(call, args, kwargs)

    def map(self, fn, *iterables, timeout=None, chunksize=1, buffersize=None):
        """Like Executor.map of Python 3.14: results in input order; with
        buffersize, at most that many jobs ahead of the consumer (the input
        is read lazily); the first error is raised at its element and the
        jobs not yet yielded are cancelled. chunksize > 1 puts that many
        items in one job."""
        return self._map(fn, iterables, timeout, chunksize, buffersize,
                         self._default._opts)

    def shutdown(self, wait=True, *, cancel_futures=False):
        """No new jobs; with cancel_futures, cancels those not running yet;
        with wait, returns once every future has settled."""
        self._shutdown = True
        if cancel_futures:
            self._session.cancel_pending()
        self._session.close(wait)
        if wait:
            self._channel.close()

    # ---- dexec additions

    def options(self, *, priority=0, timeout=None, retries=None,
                idempotency_key=None):
        """submit()/map() with job options: `priority` (higher first),
        `timeout` (seconds per attempt), `retries` (attempts after the
        first, also after a task's own failure), `idempotency_key` (a
        second submit with the key returns the first job).

            ex.options(priority=5, timeout=30).submit(fn, x)
        """
        return _Submitter(self, _Options(priority, timeout, retries,
                                         idempotency_key))

    def attach(self, job_ids, *, raw=False):
        """Futures for jobs submitted earlier (by another process, or before
        this one restarted). raw=True: the results are bytes, not pickles
        (jobs of C++ or built-in tasks)."""
        return self._session.attach(list(job_ids),
                                    None if raw else codec.loads)

    def cancel(self, futures):
        """Cancels many futures in one call; a list of bools as
        Future.cancel() would return them."""
        return self._session.cancel(list(futures))

    # ---- internals

    def _submit_one(self, call, args, kwargs):
        s = self._session
        if call.raw:
            f = Future(s, None)
            s.add_one(f, call.template.encode(call.payload(args, kwargs)))
            return f
        # codec.encode_call, inline for the common case.
        try:
            data = _pickle_dumps((args, kwargs), codec.PROTOCOL)
        except Exception:  # noqa: BLE001 - codec.dumps decides
            data = None
        if data is None or b"__main__" in data:
            data = codec.encode_call(args, kwargs)
        f = Future(s, _loads)
        s.add_one(f, call.template.encode(data))
        return f

    def _submit_many(self, call, arg_list):
        """One future per args tuple of arg_list (fn(*args), no keyword
        arguments), queued together."""
        s = self._session
        encode = call.template.encode
        entries = []
        append = entries.append
        if call.raw:
            for args in arg_list:
                append((Future(s, None), encode(call.payload(args, {}))))
        else:
            for args in arg_list:
                # codec.encode_call, inline for the common case.
                try:
                    data = _pickle_dumps((args, _NO_KWARGS), codec.PROTOCOL)
                except Exception:  # noqa: BLE001 - codec.dumps decides
                    data = None
                if data is None or b"__main__" in data:
                    data = codec.encode_call(args, {})
                append((Future(s, _loads), encode(data)))
        s.add(entries)
        return [f for f, _ in entries]

    def _map(self, fn, iterables, timeout, chunksize, buffersize, opts):
        if buffersize is not None:
            if not isinstance(buffersize, int):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        chunked = chunksize > 1
        call = _Call(fn, opts, chunk=chunked)
        end_time = None if timeout is None else timeout + time.monotonic()

        items = zip(*iterables)
        if chunked:
            items = _batched(items, chunksize)

        def submit(n):
            batch = list(itertools.islice(items, n))
            if not batch:
                return []
            if chunked:
                return self._submit_many(call, [(c,) for c in batch])
            return self._submit_many(call, batch)

        fs = collections.deque()
        if buffersize is None:
            while True:
                part = submit(MAX_BATCH_JOBS)
                if not part:
                    break
                fs.extend(part)
        else:
            fs.extend(submit(buffersize))
        session = self._session

        def result_iterator():
            try:
                while fs:
                    f = fs.popleft()
                    if buffersize is not None:
                        fs.extend(submit(1))
                    left = None if end_time is None else \
                        end_time - time.monotonic()
                    r = f.result(left)
                    if chunked:
                        values, error = r
                        yield from values
                        if error is not None:
                            # The item after the last value failed: its
                            # error message and encoded exception.
                            raise _remote_exception("exception", error[0],
                                                    error[1])
                    else:
                        yield r
            finally:
                rest = [f for f in fs if not f.done()]
                fs.clear()
                if rest:
                    try:
                        session.cancel(rest)
                    except Exception:  # noqa: BLE001 - best effort on close
                        pass
        return result_iterator()


def _batched(it, n):
    while True:
        chunk = tuple(itertools.islice(it, n))
        if not chunk:
            return
        yield chunk
