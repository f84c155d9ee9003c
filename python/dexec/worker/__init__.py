"""The Python worker: docs/DESIGN.md's worker wire protocol over pyzmq.

    /usr/bin/python3 -m dexec.worker --broker=tcp://HOST:50052 MODULE...

`worker-io` owns the DEALER socket for life: it registers, sends heartbeats
(from this thread, so a busy task cannot stall them), takes Dispatch and
Abandon frames, and sends every result finished since its last pass in one
Results frame. Pools hand finished runs back through a mailbox (a deque
and a pipe that wakes the poll). The rules it follows - liveness and
reconnect backoff, results held across a broker restart and offered again
in Register.held, deadlines, abandon, drain - are those of the C++ worker
(worker/worker.cc), described in docs/DESIGN.md, "Worker protocol".
"""
import collections
import logging
import os
import socket
import threading
import time

import zmq

from .._proto import wire_pb2 as wire
from ..tasks import CHUNK_SUFFIX, registered
from . import _run
from .pools import AsyncPool, ProcessPool, Run, ThreadPool
from .result_frame import Encoder, Result

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 256 << 20
INITIAL_BACKOFF_S = 0.25
MAX_BACKOFF_S = 8.0
MAX_FRAMES_PER_PASS = 1024
LINGER_MS = 500
MAX_IN_DOUBT_BYTES = 64 << 20
BAD_FRAME_LOG_INTERVAL_S = 10.0
# As the C++ worker (protos/wire.h, worker/worker_core.h): a Results frame
# holds at most RESULTS_FRAME_BUDGET bytes of results (one larger result
# goes alone), and stays FRAME_ENVELOPE_BYTES under the broker's
# max_frame_bytes; error text is cut so it fits the envelope; an output
# longer than the Welcome's max_chunk_bytes goes in pieces, back to back
# (docs/DESIGN.md, "Frame sizes").
RESULTS_FRAME_BUDGET = 4 << 20
FRAME_ENVELOPE_BYTES = 1 << 20
MAX_ERROR_MESSAGE_BYTES = 64 << 10
MAX_ERROR_KIND_BYTES = 256
RESULT_TOO_LARGE = "result_too_large"

log = logging.getLogger("dexec.worker")


def result_too_large_message(size, max_result_bytes):
    """wire::ResultTooLargeMessage: the broker's text for the same case."""
    return "the result is %d bytes; the broker keeps at most %d " \
        "(--max_result_bytes)" % (size, max_result_bytes)


def truncate_utf8(s, max_bytes):
    """s cut to at most max_bytes of UTF-8, never inside a character."""
    b = s.encode("utf-8", "replace")
    if len(b) <= max_bytes:
        return s
    return b[:max_bytes].decode("utf-8", "ignore")


def _cost(r):
    return len(r.output) + len(r.error_message) + 64


def _pieces(r, chunk):
    """r's output in pieces of `chunk` bytes (TaskResult.output_size); the
    last one says how the task ended."""
    out = r.output
    size = len(out)
    last = (size - 1) // chunk * chunk
    pieces = [Result(r.job_id, r.attempt, True, out[o:o + chunk], "", "", 0,
                     0, output_size=size, output_offset=o)
              for o in range(0, last, chunk)]
    pieces.append(Result(r.job_id, r.attempt, r.ok, out[last:], r.error_kind,
                         r.error_message, r.started_at_us, r.finished_at_us,
                         output_size=size, output_offset=last))
    return pieces


class Worker:
    """One worker process's connection to a broker. start(), then drain()
    or stop() from any thread, then wait(). Not reusable."""

    def __init__(self, broker, modules=(), threads=8, processes=None,
                 concurrency=1000, prefetch=None, name=None, curve=None,
                 drain_timeout=30.0, heartbeat_interval=1.0, liveness=3):
        self.broker = broker
        self.name = name or "%s:%d" % (socket.gethostname(), os.getpid())
        self._modules = list(modules)
        self._tasks = registered()
        if not self._tasks:
            raise ValueError("no @dexec.task registered by the modules %s" %
                             (" ".join(self._modules) or "(none given)"))
        pools_used = {d.pool for d in self._tasks.values()}
        self._n_threads = threads
        self._n_processes = processes or os.cpu_count() or 1
        self._concurrency = concurrency
        # Credit: the broker fills a worker's `threads` before it
        # prefetches, so we report the slots of the pools our tasks use.
        # Coroutine tasks hold no slot: they go in Register.async_tasks and
        # the broker keeps up to `concurrency` of them here besides.
        self.slots = max(1, (threads if "thread" in pools_used else 0) +
                         (self._n_processes if "process" in pools_used
                          else 0))
        self.prefetch = prefetch if prefetch is not None else \
            max(256, 4 * self.slots)
        self._pools_used = pools_used
        self._curve = curve
        self._drain_timeout = drain_timeout
        self._interval = heartbeat_interval
        self._liveness = liveness

        self._ctx = zmq.Context(1)
        self._sock = None
        self._mailbox = collections.deque()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._wake_pending = False
        self._busy = [0]
        self._requested = 0  # 0, 1 drain, 2 stop; only increases
        self._thread = None
        self.pools = {}

        # Owned by worker-io.
        self._welcomed = False
        self._register_pending = False
        self._backoff = INITIAL_BACKOFF_S
        self._reconnect_at = 0.0
        self._last_recv = 0.0
        self._last_send = 0.0
        self._draining = False
        self._drain_deadline = None
        self._active = {}  # (job, attempt) -> Run
        self._resolved = {}  # task name -> (TaskDef, is_chunk), registered
        self._unsent = []  # Result
        # One entry per Results frame sent: (sent_at, [Result], cost).
        self._in_doubt = collections.deque()
        self._in_doubt_bytes = 0
        self._bad_frames = 0
        # The broker's limits, from its Welcome (0: not said).
        self._max_result_bytes = 0
        self._max_frame_bytes = 0
        self._max_chunk_bytes = 0
        self._last_bad_log = -1e9
        self._encoder = Encoder(PROTOCOL_VERSION)

    # ---- lifecycle

    def start(self):
        if "thread" in self._pools_used:
            self.pools["thread"] = ThreadPool(self._n_threads, self._post,
                                              self._busy)
        if "process" in self._pools_used:
            self.pools["process"] = ProcessPool(self._n_processes,
                                                self._modules, self._post,
                                                self._busy)
        if "async" in self._pools_used:
            self.pools["async"] = AsyncPool(self._concurrency, self._post,
                                            self._busy)
        self._connect()
        self._thread = threading.Thread(target=self._io_loop, name="worker-io")
        self._thread.start()
        log.info("worker started worker=%s broker=%s slots=%d prefetch=%d "
                 "tasks=%d pools=%s", self.name, self.broker, self.slots,
                 self.prefetch, len(self._tasks),
                 ",".join(sorted(self._pools_used)))

    def drain(self):
        self._request(1)

    def stop(self):
        self._request(2)

    def wait(self, timeout=None):
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _request(self, how):
        if how > self._requested:
            self._requested = how
        self._wake()

    # ---- mailbox (any thread)

    def _post(self, run):
        self._mailbox.append(run)
        if not self._wake_pending:
            self._wake()

    def _wake(self):
        if not self._wake_pending:
            self._wake_pending = True
            try:
                os.write(self._wake_w, b"x")
            except BlockingIOError:
                pass

    # ---- worker-io

    def _connect(self):
        s = self._ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, LINGER_MS)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        if self._curve is not None:
            s.curve_secretkey = self._curve["secret"].encode()
            s.curve_publickey = self._curve["public"].encode()
            s.curve_serverkey = self._curve["broker_public"].encode()
        s.connect(self.broker)
        self._sock = s

    def _close_socket(self, linger_ms):
        if self._sock is None:
            return
        self._sock.setsockopt(zmq.LINGER, linger_ms)
        self._sock.close()
        self._sock = None
        self._welcomed = False
        self._register_pending = False

    def _io_loop(self):
        now = time.monotonic()
        self._last_recv = now
        self._send_register(now)
        poller = zmq.Poller()
        poller.register(self._wake_r, zmq.POLLIN)
        polled = None
        while True:
            now = time.monotonic()
            if not self._handle_shutdown(now):
                break
            self._check_connection(now)
            if self._sock is not polled:
                if polled is not None:
                    try:
                        poller.unregister(polled)
                    except KeyError:
                        pass
                if self._sock is not None:
                    poller.register(self._sock, zmq.POLLIN)
                polled = self._sock
            timeout_ms = max(0, int((self._next_timer() - now) * 1000) + 1)
            events = dict(poller.poll(min(timeout_ms, 60000)))
            now = time.monotonic()
            if self._sock is not None and self._sock in events:
                self._read_frames(now)
            if self._wake_r in events or self._mailbox:
                self._collect(leaving=False)
                self._flush(now)
        for p in self.pools.values():
            p.close()
        self._ctx.term()

    def _handle_shutdown(self, now):
        if self._requested == 2:
            self._leave(now, "stopped")
            return False
        if self._requested == 1 and not self._draining:
            self._draining = True
            self._drain_deadline = now + self._drain_timeout
            log.info("worker draining worker=%s tasks=%d timeout=%gs",
                     self.name, len(self._active), self._drain_timeout)
            if self._welcomed:
                self._send(wire.Frame(worker_state=wire.WorkerState(
                    draining=True)), now)
        if self._draining and not self._active and not self._unsent and \
                not self._mailbox:
            self._leave(now, "drained")
            return False
        if self._draining and now >= self._drain_deadline:
            self._leave(now, "drain timeout")
            return False
        return True

    def _check_connection(self, now):
        if self._sock is None:
            if now < self._reconnect_at:
                return
            self._connect()
            self._last_recv = now
            self._send_register(now)
            return
        if now - self._last_recv >= self._interval * self._liveness:
            log.warning("broker lost worker=%s broker=%s silent_for=%.1fs "
                        "retry_in=%.2fs tasks=%d", self.name, self.broker,
                        now - self._last_recv, self._backoff,
                        len(self._active))
            self._close_socket(0)
            self._reconnect_at = now + self._backoff
            self._backoff = min(self._backoff * 2, MAX_BACKOFF_S)
            return
        self._forget_settled()
        if self._welcomed and now - self._last_send >= self._interval:
            self._send(wire.Frame(heartbeat=wire.Heartbeat(
                busy=self._busy[0])), now)

    def _heartbeat_if_due(self):
        """Inside long passes of worker-io; returns the time now."""
        now = time.monotonic()
        if self._welcomed and now - self._last_send >= self._interval:
            self._flush(now)
            if now - self._last_send >= self._interval:
                self._send(wire.Frame(heartbeat=wire.Heartbeat(
                    busy=self._busy[0])), now)
        return now

    def _next_timer(self):
        nxt = self._drain_deadline if self._drain_deadline is not None \
            else float("inf")
        if self._sock is None:
            return min(nxt, self._reconnect_at)
        nxt = min(nxt, self._last_recv + self._interval * self._liveness)
        if self._welcomed:
            nxt = min(nxt, self._last_send + self._interval)
        return nxt

    def _send(self, frame, now):
        if self._sock is None:
            return
        frame.version = PROTOCOL_VERSION
        try:
            self._sock.send(frame.SerializeToString(), zmq.NOBLOCK)
        except zmq.ZMQError as e:
            log.error("send to broker failed worker=%s error=%r", self.name, e)
        self._last_send = now

    def _send_register(self, now):
        self._welcomed = False
        self._register_pending = True
        if self._in_doubt:
            # Offer them again, ahead of the newer unsent ones.
            self._unsent = [r for _, rs, _ in self._in_doubt for r in rs] + \
                self._unsent
            self._in_doubt.clear()
            self._in_doubt_bytes = 0
        reg = wire.Register(name=self.name, host=socket.gethostname(),
                            pid=os.getpid(), threads=self.slots,
                            prefetch=self.prefetch, chunked_results=True)
        names = sorted(self._tasks)
        reg.tasks.extend(names)
        reg.tasks.extend(n + CHUNK_SUFFIX for n in names)
        async_names = [n for n in names if self._tasks[n].pool == "async"]
        if async_names:
            reg.concurrency = self._concurrency
            reg.async_tasks.extend(async_names)
            reg.async_tasks.extend(n + CHUNK_SUFFIX for n in async_names)
        held = set(self._active)
        held.update((r.job_id, r.attempt) for r in self._unsent)
        for job_id, attempt in sorted(held):
            reg.held.add(job_id=job_id, attempt=attempt)
        self._send(wire.Frame(register=reg), now)

    def _read_frames(self, now):
        sock = self._sock
        for _ in range(MAX_FRAMES_PER_PASS):
            if self._sock is not sock or sock is None:
                return
            try:
                data = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            if sock.getsockopt(zmq.RCVMORE):
                while sock.getsockopt(zmq.RCVMORE):
                    sock.recv()
                self._bad_frame("message with more than one part", now)
                continue
            try:
                frame = wire.Frame.FromString(data)
            except Exception:  # noqa: BLE001 - garbage from the network
                self._bad_frame("unparsable frame", now)
                continue
            if frame.version != PROTOCOL_VERSION:
                self._bad_frame("protocol version %d, expected %d" %
                                (frame.version, PROTOCOL_VERSION), now)
                continue
            self._last_recv = now
            self._on_frame(frame, now)
            now = self._heartbeat_if_due()

    def _bad_frame(self, why, now):
        self._bad_frames += 1
        if now - self._last_bad_log >= BAD_FRAME_LOG_INTERVAL_S:
            self._last_bad_log = now
            log.warning("bad frame from broker dropped worker=%s reason=\"%s\""
                        " bad_frames_total=%d", self.name, why,
                        self._bad_frames)

    def _on_frame(self, frame, now):
        kind = frame.WhichOneof("body")
        if kind == "dispatch":
            self._on_dispatch(frame.dispatch, now)
        elif kind == "welcome":
            self._interval = frame.welcome.heartbeat_interval_ms / 1000.0 or \
                self._interval
            self._liveness = frame.welcome.liveness or self._liveness
            self._max_result_bytes = frame.welcome.max_result_bytes
            self._max_frame_bytes = frame.welcome.max_frame_bytes
            self._max_chunk_bytes = frame.welcome.max_chunk_bytes
            self._backoff = INITIAL_BACKOFF_S
            self._welcomed = True
            self._register_pending = False
            log.info("registered with broker worker=%s broker=%s "
                     "heartbeat=%gs liveness=%d pending_results=%d",
                     self.name, self.broker, self._interval, self._liveness,
                     len(self._unsent))
            if self._draining:
                self._send(wire.Frame(worker_state=wire.WorkerState(
                    draining=True)), now)
            self._flush(now)
        elif kind == "abandon":
            self._on_abandon(frame.abandon)
        elif kind == "reconnect":
            if not self._register_pending:
                log.info("broker asked to register again worker=%s",
                         self.name)
                self._send_register(now)
        elif kind == "heartbeat":
            pass
        else:
            self._bad_frame("frame of a kind only workers send (%s)" % kind,
                            now)

    def _on_dispatch(self, dispatch, now):
        active = self._active
        resolved = self._resolved
        batches = {}  # pool name -> runs, handed over together
        for i, t in enumerate(dispatch.tasks):
            if i & 1023 == 1023:
                # A Dispatch of many thousand tasks takes a while on a
                # starved machine: the broker must still hear from us, and
                # the pools may start on what we have.
                self._start(batches)
                self._heartbeat_if_due()
            job_id = t.job_id
            attempt = t.attempt
            key = (job_id, attempt)
            if key in active:
                continue  # a repeated (job, attempt)
            timeout_ms = t.timeout_ms
            deadline = now + timeout_ms / 1000.0 if timeout_ms > 0 else None
            name = t.name
            r = resolved.get(name)
            if r is None:
                r = _run.resolve(name)
                if r[0] is not None:
                    resolved[name] = r
            d, chunk = r
            run = Run(job_id, attempt, name, t.payload, timeout_ms, d, chunk,
                      deadline)
            active[key] = run
            if d is None:
                run.started = run.finished = time.time()
                run.result = (False, b"", _run.UNKNOWN, "task %r is not "
                              "registered on worker %s" % (name, self.name))
                self._post(run)
                continue
            b = batches.get(d.pool)
            if b is None:
                b = batches[d.pool] = []
            b.append(run)
        self._start(batches)

    def _start(self, batches):
        for pool, runs in batches.items():
            if runs:
                self.pools[pool].submit_many(runs)
        batches.clear()

    def _on_abandon(self, abandon):
        finished = set()
        for ref in abandon.tasks:
            key = (ref.job_id, ref.attempt)
            run = self._active.pop(key, None)
            if run is None:
                finished.add(key)
                continue
            run.abandoned = True
            if run.task is not None:
                self.pools[run.task.pool].cancel(run)
        if not finished:
            return
        self._unsent = [r for r in self._unsent
                        if (r.job_id, r.attempt) not in finished]
        kept = collections.deque()
        for sent_at, rs, cost in self._in_doubt:
            left = [r for r in rs if (r.job_id, r.attempt) not in finished]
            if len(left) < len(rs):
                self._in_doubt_bytes -= cost
                cost = sum(_cost(r) for r in left)
                self._in_doubt_bytes += cost
            if left:
                kept.append((sent_at, left, cost))
        self._in_doubt = kept

    def _collect(self, leaving):
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        self._wake_pending = False
        mb = self._mailbox
        active = self._active
        unsent = self._unsent
        while mb:
            run = mb.popleft()
            key = (run.job_id, run.attempt)
            if active.get(key) is not run:
                continue  # abandoned: never reported
            del active[key]
            ok, output, kind, msg = run.result
            if leaving and not ok and kind == "cancelled":
                continue  # we cancelled it; the broker requeues it
            if not ok:
                kind = truncate_utf8(kind, MAX_ERROR_KIND_BYTES)
                msg = truncate_utf8(msg, MAX_ERROR_MESSAGE_BYTES)
            unsent.append(Result(run.job_id, run.attempt, ok, output, kind,
                                 msg, int(run.started * 1e6),
                                 int(run.finished * 1e6)))

    def _flush(self, now):
        if not self._unsent or not self._welcomed:
            return
        budget = RESULTS_FRAME_BUDGET
        if self._max_frame_bytes > FRAME_ENVELOPE_BYTES:
            budget = min(budget, self._max_frame_bytes - FRAME_ENVELOPE_BYTES)
        limit = self._max_result_bytes
        chunk = self._max_chunk_bytes
        results = []  # the next frame's results, whole or pieces
        whole = []  # the results whose last piece it carries
        n = 0
        size_sum = 0
        for r in self._unsent:
            size = len(r.output)
            if limit > 0 and size > limit:
                r.output = b""
                r.ok = False
                r.error_kind = RESULT_TOO_LARGE
                r.error_message = result_too_large_message(size, limit)
                size = 0
            if chunk and size > chunk:
                pieces = _pieces(r, chunk)
            else:
                pieces = (r,)
            for p in pieces:
                # Error text counts too (failures only: successes have none).
                cost = len(p.output) + (
                    32 if p.ok else len(p.error_message) + 288)
                if n and size_sum + cost > budget:
                    self._send_results(results, whole, now)
                    results = []
                    whole = []
                    n = 0
                    size_sum = 0
                size_sum += cost
                n += 1
                results.append(p)
            whole.append(r)
        self._unsent = []
        self._send_results(results, whole, now)
        self._forget_settled()

    def _send_results(self, results, whole, now):
        """One Results frame of `results` (whole results or pieces); `whole`,
        the results whose last piece it carries, stay in doubt until
        settled (whole, so a result sent again goes in all its pieces)."""
        if self._sock is not None:
            try:
                self._sock.send(self._encoder.frame(results), zmq.NOBLOCK)
            except zmq.ZMQError as e:
                log.error("send to broker failed worker=%s error=%r",
                          self.name, e)
            self._last_send = now
        if not whole:
            return
        cost = 0
        for r in whole:
            cost += len(r.output) + len(r.error_message) + 64
        self._in_doubt_bytes += cost
        self._in_doubt.append((now, whole, cost))

    def _forget_settled(self):
        # Sent an interval before the broker's latest frame: it has almost
        # surely read and journaled them. A heuristic: there are no acks.
        settled_before = self._last_recv - self._interval
        d = self._in_doubt
        while d and (d[0][0] < settled_before or
                     self._in_doubt_bytes > MAX_IN_DOUBT_BYTES):
            self._in_doubt_bytes -= d.popleft()[2]

    def _leave(self, now, why):
        cancelled = 0
        for run in self._active.values():
            if not run.cancelled:
                cancelled += 1
            if run.task is not None:
                self.pools[run.task.pool].cancel(run)
        # Cancelled runs come back quickly (a flag, a Task.cancel, a killed
        # child); give them a moment so their slots are reported free.
        end = time.monotonic() + 0.2
        while self._active and time.monotonic() < end and cancelled:
            self._collect(leaving=True)
            if self._active:
                time.sleep(0.01)
        self._collect(leaving=True)
        self._flush(now)
        if self._sock is not None:
            self._send(wire.Frame(worker_state=wire.WorkerState(
                leaving=True)), now)
        self._close_socket(LINGER_MS)
        log.info("worker left broker worker=%s reason=\"%s\" cancelled=%d "
                 "unreported=%d", self.name, why, cancelled,
                 len(self._active) + len(self._unsent))
