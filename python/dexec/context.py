"""What a running task can ask about itself: dexec.current().

    @dexec.task
    def fetch_all(urls):
        ctx = dexec.current()
        for u in urls:
            if ctx.cancelled:          # cancelled at the broker, or past the
                return                 # job's deadline
            ...
            ctx.sleep(0.1)             # wakes early when cancelled

Thread tasks stop cooperatively through this context; async tasks are
cancelled with asyncio.Task.cancel(); process tasks by terminating their
child process.
"""
import contextvars
import threading
import time

_current = contextvars.ContextVar("dexec_task_context", default=None)


class TaskContext:
    """One attempt of a job, as its task sees it. Thread-safe."""

    __slots__ = ("job_id", "attempt", "deadline", "_flag", "_event")

    def __init__(self, job_id, attempt, deadline):
        self.job_id = job_id
        self.attempt = attempt
        # time.monotonic() seconds, or None for no deadline.
        self.deadline = deadline
        self._flag = False
        # Made on the first sleep() only: an Event per task costs more than
        # a no-op task itself.
        self._event = None

    @property
    def cancelled(self):
        """True once the job was cancelled or abandoned, or its deadline
        passed."""
        if self._flag:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline

    def remaining(self):
        """Seconds to the deadline (None without one)."""
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - time.monotonic())

    def _wakeup(self):
        with _event_lock:
            if self._event is None:
                self._event = threading.Event()
                if self._flag:
                    self._event.set()
            return self._event

    def sleep(self, seconds):
        """Sleeps; returns False early if cancelled (or the deadline came)."""
        limit = seconds
        r = self.remaining()
        if r is not None and r < limit:
            limit = r
        if self._wakeup().wait(limit):
            return False
        return not self.cancelled or seconds <= limit

    def cancel(self):
        with _event_lock:
            self._flag = True
            if self._event is not None:
                self._event.set()


_event_lock = threading.Lock()


def current():
    """The TaskContext of the task running in this thread or asyncio task,
    or None outside a dexec worker."""
    return _current.get()


def _set(ctx):
    return _current.set(ctx)
