"""dexec for Python: a concurrent.futures.Executor over a dexec cluster, and
workers that run Python functions on threads, processes and coroutines.

    import dexec

    @dexec.task
    def square(x):
        return x * x

    with dexec.Executor("127.0.0.1:50051") as ex:
        print(list(ex.map(square, range(10))))

Workers: /usr/bin/python3 -m dexec.worker --broker=tcp://HOST:50052 MODULE...
See python/README.md.
"""
from .errors import AuthError, BrokerUnavailable, RemoteTraceback, TaskError
from .executor import Executor, Future
from .tasks import task
from .context import TaskContext, current

__all__ = ["Executor", "Future", "task", "TaskError", "AuthError",
           "BrokerUnavailable", "RemoteTraceback", "TaskContext", "current"]
