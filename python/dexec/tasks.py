"""Registering Python functions as dexec tasks: @dexec.task.

    @dexec.task                        # name "module.qualname", thread pool
    def fetch(url): ...

    @dexec.task("square", pool="process", timeout=10)
    def square(x): return x * x

    @dexec.task
    async def crawl(url): ...          # async def: the worker's event loop

A worker runs only names registered in the modules it was started with; it
never imports a module or attribute that a message names. The name of a
function defined in a script run as __main__ uses the script's file name
(`squares.py` -> "squares.square"), which is what a worker started with
`squares.py` registers too.
"""
import inspect
import os
import sys

POOLS = ("thread", "process", "async")
# Suffix of the task that runs a map chunk: a list of argument tuples in one
# job (Executor.map(chunksize>1)). Registered beside every task.
CHUNK_SUFFIX = "#map"

# name -> TaskDef, in registration order.
_registry = {}


class TaskDef:
    """A registered task: its name, function, pool and default timeout."""

    __slots__ = ("name", "fn", "pool", "timeout")

    def __init__(self, name, fn, pool, timeout):
        self.name = name
        self.fn = fn
        self.pool = pool
        self.timeout = timeout

    def __repr__(self):
        return "TaskDef(%r, pool=%r)" % (self.name, self.pool)


def module_name(fn):
    mod = getattr(fn, "__module__", None) or "__main__"
    if mod == "__main__":
        main = sys.modules.get("__main__")
        path = getattr(main, "__file__", None)
        if path:
            mod = os.path.splitext(os.path.basename(path))[0]
    return mod


def default_name(fn):
    return "%s.%s" % (module_name(fn), fn.__qualname__)


def _register(fn, name, pool, timeout):
    is_async = inspect.iscoroutinefunction(fn)
    if pool is None:
        pool = "async" if is_async else "thread"
    if pool not in POOLS:
        raise ValueError("pool=%r; use one of %s" % (pool, ", ".join(POOLS)))
    if is_async != (pool == "async"):
        raise ValueError(
            "task %r: pool='async' is for async def functions only" % name)
    if not name or CHUNK_SUFFIX in name:
        raise ValueError("task name %r is empty or contains %r" %
                         (name, CHUNK_SUFFIX))
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be positive seconds, not %r" % timeout)
    prev = _registry.get(name)
    if prev is not None and prev.fn is not fn and \
            getattr(prev.fn, "__code__", None) is not getattr(fn, "__code__", 0):
        raise ValueError("task name %r registered twice (%r and %r)" %
                         (name, prev.fn, fn))
    d = TaskDef(name, fn, pool, timeout)
    _registry[name] = d
    fn.__dexec_task__ = d
    return fn


def task(name_or_fn=None, *, name=None, pool=None, timeout=None):
    """Registers a function as a task; returns the function unchanged.

    `pool`: "thread" (default for def), "process" (CPU-bound: a pool of
    processes), or "async" (default for async def: one event loop).
    `timeout`: seconds an attempt may run, used when the submit sets none.
    """
    if callable(name_or_fn):
        fn = name_or_fn
        return _register(fn, name or default_name(fn), pool, timeout)
    if name_or_fn is not None and name is not None:
        raise TypeError("task name given twice")
    explicit = name_or_fn if name_or_fn is not None else name

    def deco(fn):
        return _register(fn, explicit or default_name(fn), pool, timeout)
    return deco


def registered():
    """The registered tasks, name -> TaskDef (a copy)."""
    return dict(_registry)


def lookup(name):
    return _registry.get(name)


def task_of(fn):
    """The TaskDef of a registered function, or None."""
    return getattr(fn, "__dexec_task__", None)
