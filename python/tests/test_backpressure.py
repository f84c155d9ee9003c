"""A broker that refuses submits for room (--max_queued, --max_queued_bytes):
Executor.map and submit() wait in the client and retry, as the C++
client's Map does; nothing fails, nothing is lost, nothing runs twice."""
import contextlib
import threading
import time

from dexec._proto import dexec_pb2 as pb

import tasks_mod as t

MAX_QUEUED = 50


@contextlib.contextmanager
def executor(broker):
    """An Executor that, on a failed assertion, does not wait for the
    futures of a broker with no worker."""
    ex = broker.executor()
    try:
        yield ex
    except BaseException:
        ex.shutdown(wait=False, cancel_futures=True)
        raise
    ex.shutdown(wait=True)


def stats(broker):
    ch, stub = broker.stub()
    try:
        return stub.GetStats(pb.GetStatsRequest(), timeout=5,
                             metadata=broker.metadata())
    finally:
        ch.close()


def wait_queued(broker, n, timeout=20):
    """Until the broker holds n queued jobs; returns its Stats."""
    end = time.monotonic() + timeout
    while True:
        s = stats(broker)
        if s.queued >= n:
            return s
        assert time.monotonic() < end, \
            "broker queued %d jobs, not %d, within %ss" % (s.queued, n,
                                                           timeout)
        time.sleep(0.02)  # polling an RPC under a deadline


def run_in_thread(fn):
    out = {}

    def body():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised by the test
            out["error"] = e
    th = threading.Thread(target=body, name="test-map")
    th.start()
    return th, out


def finish(th, out, timeout=60):
    for _ in range(timeout):
        th.join(1)
        if not th.is_alive():
            break
    assert not th.is_alive(), "map did not finish within %ss" % timeout
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_map_waits_for_room_and_completes_in_order(procs):
    b = procs.broker(in_memory=True, flags=["--max_queued=%d" % MAX_QUEUED])
    n = 40 * MAX_QUEUED
    with executor(b) as ex:
        # No worker yet: the broker fills to its limit and refuses the rest.
        th, out = run_in_thread(lambda: list(ex.map(t.square, range(n))))
        s = wait_queued(b, MAX_QUEUED)
        assert s.queued == MAX_QUEUED and s.submitted_total == MAX_QUEUED
        procs.worker(b, flags=["--threads=4"])
        assert finish(th, out) == [i * i for i in range(n)]
    s = stats(b)
    # Every item was one job, run once: none lost, none submitted twice.
    assert s.submitted_total == n and s.succeeded == n and s.failed == 0


def test_chunked_map_and_submits_wait_for_room(procs):
    b = procs.broker(in_memory=True, flags=["--max_queued=%d" % MAX_QUEUED])
    with executor(b) as ex:
        fs = [ex.submit(t.add, i, b=1) for i in range(10 * MAX_QUEUED)]
        th, out = run_in_thread(lambda: list(
            ex.map(t.square, range(3000), chunksize=10)))
        wait_queued(b, MAX_QUEUED)
        procs.worker(b, flags=["--threads=4"])
        assert finish(th, out) == [i * i for i in range(3000)]
        assert [f.result(60) for f in fs] == \
            [i + 1 for i in range(10 * MAX_QUEUED)]
    s = stats(b)
    assert s.submitted_total == 10 * MAX_QUEUED + 300
    assert s.succeeded == s.submitted_total


def test_map_waits_for_payload_room(procs):
    # The broker takes one batch into an empty queue whatever its size,
    # then no more than 1 MB of payloads: a map of 2,000 x 10 kB waits.
    b = procs.broker(in_memory=True, flags=["--max_queued_bytes=1000000"])
    blob = b"x" * 10000
    n = 2000
    with executor(b) as ex:
        th, out = run_in_thread(lambda: list(
            ex.map(t.ident, [blob + b"%d" % i for i in range(n)])))
        s = wait_queued(b, 50)
        assert s.submitted_total < n
        procs.worker(b, flags=["--threads=4"])
        assert finish(th, out) == [blob + b"%d" % i for i in range(n)]
    s = stats(b)
    assert s.submitted_total == n and s.succeeded == n


def test_cancel_of_a_job_waiting_for_room(procs):
    b = procs.broker(in_memory=True, flags=["--max_queued=%d" % MAX_QUEUED])
    with executor(b) as ex:
        fs = [ex.submit(t.square, i) for i in range(3 * MAX_QUEUED)]
        wait_queued(b, MAX_QUEUED)
        # The last one waits in the client: cancelled there, never sent.
        assert fs[-1].cancel() and fs[-1].cancelled()
        procs.worker(b, flags=["--threads=4"])
        assert [f.result(60) for f in fs[:-1]] == \
            [i * i for i in range(3 * MAX_QUEUED - 1)]
    s = stats(b)
    assert s.submitted_total == 3 * MAX_QUEUED - 1


def test_shutdown_cancels_jobs_waiting_for_room(procs):
    b = procs.broker(in_memory=True, flags=["--max_queued=%d" % MAX_QUEUED])
    ex = b.executor()
    fs = [ex.submit(t.square, i) for i in range(20 * MAX_QUEUED)]
    wait_queued(b, MAX_QUEUED)
    t0 = time.monotonic()
    ex.shutdown(wait=True, cancel_futures=True)
    assert time.monotonic() - t0 < 10
    assert all(f.cancelled() for f in fs)
    assert stats(b).cancelled == MAX_QUEUED
