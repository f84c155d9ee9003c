"""The three ways a Python worker runs tasks: threads, processes, coroutines.

Each pool takes Runs from worker-io (submit), runs them, fills run.result
with (ok, output, error_kind, error_message) and hands the run back through
`post` (the worker's mailbox). cancel(run) stops one attempt the way its
pool can: a flag for thread tasks, asyncio.Task.cancel() for async ones,
terminating the child for process tasks. close() stops the pool.
"""
import asyncio
import collections
import os
import pickle
import signal
import sys
import threading
import time

from .. import context
from . import _run


class Run(context.TaskContext):
    """One attempt, shared by worker-io and the pool running it. It is also
    the attempt's TaskContext (what dexec.current() returns in the task):
    one object per job instead of two, on the worker's hottest path."""

    __slots__ = ("name", "payload", "timeout_ms", "task", "chunk",
                 "abandoned", "result", "started", "finished", "handle")

    def __init__(self, job_id, attempt, name, payload, timeout_ms, task,
                 chunk, deadline):
        # TaskContext's fields, set here rather than by its __init__ (a call
        # per job).
        self.job_id = job_id
        self.attempt = attempt
        self.deadline = deadline
        self._flag = False
        self._event = None
        self.name = name
        self.payload = payload
        self.timeout_ms = timeout_ms
        self.task = task
        self.chunk = chunk
        # Set by worker-io when the broker abandons the attempt: it is not
        # started if still queued, and its result is never sent.
        self.abandoned = False
        self.result = None
        self.started = 0.0  # time.time()
        self.finished = 0.0
        self.handle = None  # the pool's: asyncio.Task, child slot

    def late(self):
        d = self.deadline
        return d is not None and time.monotonic() > d

    def timed_out_result(self):
        return (False, b"", "timeout", "task %r ran past its deadline "
                "(timeout_ms=%d)" % (self.name, self.timeout_ms))


def _expired_in_queue(run):
    return (False, b"", "timeout", "the job's deadline passed while the task "
            "waited for a free worker slot")


class ThreadPool:
    """N threads, worker-pool-0..N-1, for IO-bound functions.

    Runs wait in one deque that every thread pops; a thread parks (on its
    own lock) only when the deque is empty, and a batch wakes at most one
    parked thread per run. So a flood of short tasks costs no wake-up or
    lock per task, while ten sleeping tasks still get ten threads."""

    def __init__(self, n, post, busy):
        self._q = collections.deque()
        # Guards _idle and each thread's decision to park (so a batch
        # appended while it decides is never missed).
        self._mu = threading.Lock()
        self._idle = []  # parking locks of parked threads, each held
        self._post = post
        self._busy = busy
        self._threads = [threading.Thread(target=self._loop,
                                          name="worker-pool-%d" % i,
                                          daemon=True) for i in range(n)]
        for t in self._threads:
            t.start()

    def submit(self, run):
        self.submit_many((run,))

    def submit_many(self, runs):
        self._q.extend(runs)
        with self._mu:
            idle = self._idle
            k = min(len(runs), len(idle))
            if not k:
                return
            wake = idle[-k:]
            del idle[-k:]
        for park in wake:
            park.release()

    def cancel(self, run):
        run.cancel()

    def close(self):
        self.submit_many([None] * len(self._threads))

    def _loop(self):
        q = self._q
        mu = self._mu
        idle = self._idle
        post = self._post
        busy = self._busy
        run_sync = _run.run_sync
        set_ctx = context._current.set
        reset_ctx = context._current.reset
        now = time.time
        park = threading.Lock()
        park.acquire()
        while True:
            try:
                run = q.popleft()
            except IndexError:
                with mu:
                    if q:
                        continue
                    idle.append(park)
                park.acquire()  # released by submit_many
                continue
            if run is None:
                return
            if run.abandoned:
                continue
            run.started = now()
            if run._flag or run.deadline is not None:
                if run.cancelled:
                    run.result = (_expired_in_queue(run) if run.late() else
                                  (False, b"", "cancelled",
                                   "cancelled before it started"))
                    run.finished = now()
                    run.payload = None
                    post(run)
                    continue
            busy[0] += 1
            token = set_ctx(run)
            try:
                run.result = run_sync(run.task, run.chunk, run.payload)
            finally:
                reset_ctx(token)
                busy[0] -= 1
            if run.deadline is not None and run.late():
                run.result = run.timed_out_result()
            run.finished = now()
            run.payload = None
            post(run)


class AsyncPool:
    """One event loop (thread worker-async) running up to `concurrency`
    async tasks at once; the rest wait in arrival order."""

    def __init__(self, concurrency, post, busy):
        self._concurrency = concurrency
        self._post = post
        self._busy = busy
        self._waiting = collections.deque()
        self._running = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever,
                                        name="worker-async", daemon=True)
        self._thread.start()
        # Runs handed over since the loop last looked; one wake-up per batch.
        self._inbox = collections.deque()
        self._wake_pending = False
        self._mu = threading.Lock()

    def submit(self, run):
        self.submit_many((run,))

    def submit_many(self, runs):
        self._inbox.extend(runs)
        with self._mu:
            if self._wake_pending:
                return
            self._wake_pending = True
        self._loop.call_soon_threadsafe(self._take_inbox)

    def cancel(self, run):
        run.cancel()
        self._loop.call_soon_threadsafe(self._cancel_on_loop, run)

    def close(self):
        def stop():
            for t in asyncio.all_tasks(self._loop):
                t.cancel()
            self._loop.stop()
        self._loop.call_soon_threadsafe(stop)

    # ---- on the loop

    def _take_inbox(self):
        with self._mu:
            self._wake_pending = False
        inbox = self._inbox
        while inbox:
            self._waiting.append(inbox.popleft())
        self._start_some()

    def _start_some(self):
        while self._waiting and self._running < self._concurrency:
            run = self._waiting.popleft()
            if run.abandoned:
                continue
            self._running += 1
            run.handle = self._loop.create_task(self._run(run))

    def _cancel_on_loop(self, run):
        if run.handle is not None:
            run.handle.cancel()

    async def _run(self, run):
        run.started = time.time()
        self._busy[0] += 1
        try:
            if run.cancelled:
                run.result = (_expired_in_queue(run) if run.late() else
                              (False, b"", "cancelled",
                               "cancelled before it started"))
            else:
                context._set(run)
                coro = _run.run_async(run.task, run.chunk, run.payload)
                left = run.remaining()
                try:
                    if left is None:
                        run.result = await coro
                    else:
                        run.result = await asyncio.wait_for(coro, left)
                except asyncio.TimeoutError:
                    run.result = run.timed_out_result()
                except asyncio.CancelledError:
                    run.result = (False, b"", "cancelled",
                                  "cancelled while it ran")
                if run.late() and run.result[0]:
                    run.result = run.timed_out_result()
        finally:
            self._busy[0] -= 1
            self._running -= 1
        run.finished = time.time()
        run.payload = None
        self._post(run)
        self._start_some()


# ---------------------------------------------------------------- processes

def _child_main(conn, modules):
    """A process-pool child: loads the task modules, then runs one task per
    message until its pipe closes. Ctrl-C goes to the worker, which drains;
    children ignore it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from . import loader
    loader.load_modules(modules)
    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):
            return
        name, payload = pickle.loads(msg)
        d, chunk = _run.resolve(name)
        if d is None:
            out = (False, b"", _run.UNKNOWN, "task %r is not registered in "
                   "the process pool" % name)
        else:
            out = _run.run_sync(d, chunk, payload)
        conn.send_bytes(pickle.dumps(out, 5))


class _Slot:
    """One child process and the thread (worker-proc-i) that talks to it."""

    def __init__(self, pool, i):
        self.pool = pool
        self.i = i
        self.proc = None
        self.conn = None
        self.run = None
        self.killed_for = None  # "cancelled" / "timeout" when we killed it
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.loop,
                                       name="worker-proc-%d" % i, daemon=True)

    def spawn(self):
        parent, child = self.pool.mp.Pipe()
        p = self.pool.mp.Process(target=_child_main,
                                 args=(child, self.pool.modules),
                                 name="dexec-child-%d" % self.i, daemon=True)
        p.start()
        child.close()
        self.proc, self.conn = p, parent

    def kill(self, why):
        with self.lock:
            if self.proc is not None and self.killed_for is None:
                self.killed_for = why
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass

    def loop(self):
        pool = self.pool
        while True:
            run = pool.take()
            if run is None:
                break
            if run.abandoned:
                continue
            run.started = time.time()
            if run.cancelled:
                run.result = (_expired_in_queue(run) if run.late() else
                              (False, b"", "cancelled",
                               "cancelled before it started"))
            else:
                run.result = self.execute(run)
            run.finished = time.time()
            run.payload = None
            pool.post(run)
        with self.lock:
            if self.proc is not None:
                self.proc.kill()

    def execute(self, run):
        with self.lock:
            if self.proc is None or not self.proc.is_alive():
                self.spawn()
            self.run = run
            self.killed_for = None
        run.handle = self
        self.pool.busy[0] += 1
        try:
            try:
                self.conn.send_bytes(pickle.dumps((run.name, run.payload), 5))
            except OSError:
                pass  # the child died: recv below says how
            while True:
                left = run.remaining()
                if self.conn.poll(0.5 if left is None else min(left, 0.5)):
                    try:
                        out = pickle.loads(self.conn.recv_bytes())
                        if run.late():
                            out = run.timed_out_result()
                        return out
                    except (EOFError, OSError):
                        return self.died(run)
                if run.cancelled and not run.late():
                    self.kill("cancelled")
                elif run.late():
                    self.kill("timeout")
                if not self.proc.is_alive() and not self.conn.poll(0):
                    return self.died(run)
        finally:
            self.pool.busy[0] -= 1
            with self.lock:
                self.run = None

    def died(self, run):
        self.proc.join(1.0)
        code = self.proc.exitcode
        why = self.killed_for
        with self.lock:
            self.proc = None
        self.conn.close()
        if why == "cancelled":
            return (False, b"", "cancelled", "cancelled while it ran "
                    "(its process was terminated)")
        if why == "timeout":
            return run.timed_out_result()
        how = ("signal %d" % -code) if code is not None and code < 0 else \
            "exit code %s" % code
        return (False, b"", "crashed", "the process running task %r died "
                "(%s); the worker started another" % (run.name, how))


class ProcessPool:
    """N child processes (forkserver children, each running one task at a
    time) for CPU-bound functions, free of the worker's GIL. A child that
    dies fails its job with kind `crashed` and is replaced; the worker
    lives."""

    def __init__(self, n, modules, post, busy):
        import multiprocessing
        self.mp = multiprocessing.get_context("forkserver")
        self.mp.set_forkserver_preload(["dexec.worker.pools"])
        self.modules = list(modules)
        self.post = post
        self.busy = busy
        self._q = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self._slots = [_Slot(self, i) for i in range(n)]
        for s in self._slots:
            s.spawn()  # start now: the first task should not wait for it
            s.thread.start()

    def take(self):
        with self._cv:
            while not self._q and not self._closed:
                self._cv.wait()
            if self._closed:
                return None
            return self._q.popleft()

    def submit(self, run):
        self.submit_many((run,))

    def submit_many(self, runs):
        with self._cv:
            self._q.extend(runs)
            self._cv.notify(len(runs))

    def cancel(self, run):
        run.cancel()
        slot = run.handle
        if isinstance(slot, _Slot) and slot.run is run:
            slot.kill("cancelled")

    def close(self):
        with self._cv:
            self._closed = True
            self._q.clear()
            self._cv.notify_all()
        for s in self._slots:
            if s.run is not None:
                s.kill("cancelled")

    def join(self, timeout):
        end = time.monotonic() + timeout
        for s in self._slots:
            s.thread.join(max(0.0, end - time.monotonic()))
