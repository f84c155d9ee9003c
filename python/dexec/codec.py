"""How Python values cross between a dexec client and a Python worker.

Arguments and results are pickled, as ProcessPoolExecutor, Dask and Ray do.
Anything that cannot be pickled by reference (lambdas, closures, classes
defined in __main__) goes through cloudpickle, by value.

Consequence: unpickling runs code chosen by whoever made the bytes. A
worker trusts every holder of a token that may submit to its broker with
code execution on the worker, exactly as the C++ worker's sys.exec does.
"""
import pickle
import traceback

try:
    import cloudpickle
except ImportError:  # pragma: no cover - Debian's python3-cloudpickle
    cloudpickle = None

PROTOCOL = 5


def dumps(obj):
    try:
        data = pickle.dumps(obj, PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError):
        if cloudpickle is None:
            raise
        return cloudpickle.dumps(obj, PROTOCOL)
    # By reference, a __main__ object would name a module the worker does
    # not have; by value it arrives whole. Cheap test, rare slow path.
    if b"__main__" in data and cloudpickle is not None:
        return cloudpickle.dumps(obj, PROTOCOL)
    return data


loads = pickle.loads


def encode_call(args, kwargs):
    """A Python task's payload: the pickled (args, kwargs) pair."""
    return dumps((args, kwargs))


def decode_call(payload):
    args, kwargs = loads(payload)
    if not isinstance(args, tuple) or not isinstance(kwargs, dict):
        raise TypeError("payload is not an (args, kwargs) pair")
    return args, kwargs


def encode_exception(exc):
    """A failed task's output: the pickled exception and its traceback text,
    or (None, type name, message, traceback) when it does not pickle."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        return dumps((exc, tb))
    except Exception:  # noqa: BLE001 - any pickling failure
        return dumps((None, "%s.%s" % (type(exc).__module__,
                                       type(exc).__qualname__), str(exc), tb))
