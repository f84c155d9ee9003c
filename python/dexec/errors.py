"""Exceptions a dexec client raises."""


class TaskError(Exception):
    """A job failed in a way that is not a Python exception of its task.

    `kind` is the broker's error kind ("task_error", "timeout",
    "worker_lost", "unknown_task", "bad_payload", "exit_code", "crashed",
    "not_found", ...); `message` is its detail. `result` holds what the
    task kept despite failing (sys.exec keeps its ExecResult), else b"".
    """

    def __init__(self, kind, message, result=b""):
        super().__init__(kind, message)
        self.kind = kind
        self.message = message
        self.result = result

    def __str__(self):
        return "%s: %s" % (self.kind, self.message)


class AuthError(PermissionError):
    """The broker refused the credentials (UNAUTHENTICATED) or the role
    (PERMISSION_DENIED). The message says where a token is looked for."""


class BrokerUnavailable(ConnectionError):
    """The broker could not be reached, or stayed unreachable for longer
    than the Executor's reconnect_timeout."""


class RemoteTraceback(Exception):
    """The traceback of a task's exception on its worker; set as the
    re-raised exception's __cause__ (as ProcessPoolExecutor does)."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb
