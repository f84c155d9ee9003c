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


def test_a_chunk_runs_its_items_at_once_and_stops_at_a_failure(procs):
    b = procs.broker(in_memory=True)
    procs.worker(b, flags=["--threads=1"])
    with b.executor() as ex:
        # 10 chunks of 100 one-second naps: one after another a chunk
        # would take 100 s.
        t0 = time.monotonic()
        assert list(ex.map(t.anap, [1.0] * 1000, chunksize=100)) == [1.0] * 1000
        assert time.monotonic() - t0 < 30
        # Item 1 fails at 0.05 s; item 0 is still reported; item 2, a
        # minute long, is cancelled rather than waited for.
        t0 = time.monotonic()
        it = ex.map(t.anap, [0.1, 0.05, 60.0], [False, True, False],
                    chunksize=3)
        assert next(it) == 0.1
        try:
            next(it)
            raise AssertionError("the failed item did not raise")
        except ValueError as e:
            assert "nap 0.05 failed" in str(e)
        assert time.monotonic() - t0 < 30
