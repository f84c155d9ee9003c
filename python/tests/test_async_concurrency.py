"""Coroutine tasks get the worker's --concurrency, not its --threads: the
worker registers them in Register.async_tasks."""
import time

import tasks_mod as t

N = 10000


def test_10k_async_sleeps_overlap_on_one_worker(procs):
    b = procs.broker(in_memory=True)
    procs.worker(b, flags=["--threads=2", "--concurrency=%d" % N])
    with b.executor() as ex:
        list(ex.map(t.timed_sleep, [0.0] * 100))  # warm up
        t0 = time.monotonic()
        times = list(ex.map(t.timed_sleep, [1.0] * N))
        wall = time.monotonic() - t0
    starts = [s for s, _ in times]
    ends = [e for _, e in times]
    # Every sleep had started before the first one ended: all N ran at
    # once on the one worker (2 threads would have taken N / 2 s).
    assert max(starts) < min(ends), (max(starts) - min(starts))
    assert wall < 20
