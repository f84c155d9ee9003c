"""dexec.Executor against a real broker, a Python worker and a C++ worker:
futures, the standard library's wait/as_completed, map semantics,
exceptions, options, attach."""
import concurrent.futures as cf
import itertools
import time

import pytest

import dexec
import tasks_mod as t


def test_submit_result_is_a_real_future(ex):
    f = ex.submit(t.square, 7)
    assert isinstance(f, cf.Future)
    assert f.result(timeout=10) == 49
    assert f.done() and not f.cancelled() and f.exception() is None
    assert f.job_id > 0


def test_submit_passes_kwargs_and_arbitrary_values(ex):
    assert ex.submit(t.add, [1], b=[2]).result(10) == [1, 2]
    assert ex.submit(t.ident, {"k": (1, 2.5, None)}).result(10) == \
        {"k": (1, 2.5, None)}
    # A lambda is not a task, but may be an argument (cloudpickle).
    assert ex.submit(t.ident, lambda: 3).result(10)() == 3


def test_raw_task_takes_and_returns_bytes(ex):
    assert ex.submit("sys.echo", b"hi").result(10) == b"hi"
    assert list(ex.map("sys.echo", [b"a", b"b"])) == [b"a", b"b"]


def test_unregistered_function_is_refused_at_submit(ex):
    with pytest.raises(TypeError, match="not a dexec task"):
        ex.submit(len, [1])


def test_wait_all_first_completed_and_first_exception(ex):
    fs = [ex.submit(t.sleep, 0.01 * i) for i in range(5)]
    done, not_done = cf.wait(fs, timeout=10, return_when=cf.ALL_COMPLETED)
    assert len(done) == 5 and not not_done

    slow = ex.submit(t.wait_cancel, 30)
    quick = ex.submit(t.square, 3)
    done, not_done = cf.wait([slow, quick], timeout=10,
                             return_when=cf.FIRST_COMPLETED)
    assert quick in done and slow in not_done

    bad = ex.submit(t.raise_value, "x")
    done, not_done = cf.wait([slow, bad], timeout=10,
                             return_when=cf.FIRST_EXCEPTION)
    assert bad in done and slow in not_done
    assert slow.cancel()
    done, _ = cf.wait([slow], timeout=10)
    assert slow in done and slow.cancelled()


def test_as_completed_yields_in_completion_order(ex):
    fs = [ex.submit(t.sleep, s) for s in (0.6, 0.3, 0.0)]
    order = [f.result() for f in cf.as_completed(fs, timeout=20)]
    assert order == [0.0, 0.3, 0.6]


def test_result_timeout_raises_timeouterror(ex):
    f = ex.submit(t.wait_cancel, 30)
    with pytest.raises(TimeoutError):
        f.result(timeout=0.05)
    assert f.cancel()
    with pytest.raises(cf.CancelledError):
        f.result(timeout=10)


def test_exception_keeps_type_message_and_remote_traceback(ex):
    with pytest.raises(ValueError, match="^boom$") as info:
        ex.submit(t.raise_value, "boom").result(10)
    cause = info.value.__cause__
    assert isinstance(cause, dexec.RemoteTraceback)
    assert "raise ValueError(msg)" in str(cause)
    assert "tasks_mod.py" in str(cause)

    with pytest.raises(t.Oops, match="oops 3"):
        ex.submit(t.raise_oops, 3).result(10)
    with pytest.raises(RuntimeError, match="async boom"):
        ex.submit(t.araise, "async boom").result(10)


def test_other_failures_are_task_errors_with_kind(ex):
    with pytest.raises(dexec.TaskError) as info:
        ex.submit(t.fail_kind, "quota", "over quota").result(10)
    assert info.value.kind == "quota" and info.value.message == "over quota"

    with pytest.raises(dexec.TaskError) as info:
        ex.submit("sys.fail", b"from C++").result(10)
    assert info.value.kind == "task_error"
    assert "from C++" in info.value.message


def test_timeout_option_and_task_default_timeout(ex):
    with pytest.raises(dexec.TaskError) as info:
        ex.options(timeout=0.2).submit(t.sleep, 1).result(15)
    assert info.value.kind == "timeout"
    with pytest.raises(dexec.TaskError) as info:
        ex.submit(t.with_timeout, 1).result(15)
    assert info.value.kind == "timeout"
    with pytest.raises(dexec.TaskError) as info:
        ex.options(timeout=0.2).submit(t.asleep, 5).result(15)
    assert info.value.kind == "timeout"


def test_idempotency_key_returns_the_first_job(ex):
    a = ex.options(idempotency_key="k-once").submit(t.square, 5)
    b = ex.options(idempotency_key="k-once").submit(t.square, 6)
    assert a.result(10) == 25 and b.result(10) == 25
    assert a.job_id == b.job_id


def test_priority_option_is_accepted(ex):
    assert ex.options(priority=7, retries=2).submit(t.square, 2).result(10) == 4


def test_map_in_order_including_chunks(ex):
    xs = list(range(200))
    want = [x * x for x in xs]
    assert list(ex.map(t.square, xs)) == want
    assert list(ex.map(t.square, xs, chunksize=7)) == want
    assert list(ex.map(t.add, xs, xs)) == [2 * x for x in xs]
    assert list(ex.map(t.psquare, xs, chunksize=50)) == want
    assert list(ex.map(t.asleep, [0.0] * 30, chunksize=8)) == [0.0] * 30


def test_map_with_buffersize_reads_input_lazily(ex):
    pulled = []

    def source():
        for i in itertools.count():
            pulled.append(i)
            yield i
    it = ex.map(t.square, source(), buffersize=4)
    got = [next(it) for _ in range(10)]
    assert got == [i * i for i in range(10)]
    assert len(pulled) <= 10 + 4
    it.close()


def test_map_raises_first_error_at_its_element_and_cancels_the_rest(ex):
    it = ex.map(t.fail_at, range(10), [2] * 10)
    assert next(it) == 0 and next(it) == 1
    with pytest.raises(KeyError):
        next(it)
    # The rest of a map is cancelled when it stops at an error.
    fs = []
    orig = ex._submit_many

    def spy(call, arg_list):
        out = orig(call, arg_list)
        fs.extend(out)
        return out
    ex._submit_many = spy
    try:
        it = ex.map(t.wait_cancel, [0, 30, 30, 30], buffersize=None)
        assert next(it) == "slept"
        it.close()
    finally:
        del ex._submit_many
    cf.wait(fs, timeout=10)
    assert all(f.cancelled() for f in fs[1:])


def test_map_chunk_error_raised_after_the_items_before_it(ex):
    it = ex.map(t.fail_at, range(10), [5] * 10, chunksize=4)
    assert [next(it) for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(KeyError):
        next(it)


def test_map_timeout(ex):
    it = ex.map(t.wait_cancel, [30], timeout=0.2)
    with pytest.raises(TimeoutError):
        next(it)


def test_attach_follows_jobs_of_another_executor(cluster, ex):
    f = ex.submit(t.sleep, 0.3)
    g = ex.submit("sys.echo", b"raw")
    # job_id is set when the broker acknowledges the submit: g's result
    # comes after that of both (f's batch is g's, or an earlier one).
    assert g.result(10) == b"raw"
    with cluster.executor() as other:
        with pytest.raises(TypeError, match="job ids"):
            other.attach([None])
        a, b = other.attach([f.job_id, g.job_id])
        assert a.result(10) == 0.3
        (c,) = other.attach([g.job_id], raw=True)
        assert c.result(10) == b"raw"
        (lost,) = other.attach([10 ** 12])
        with pytest.raises(dexec.TaskError) as info:
            lost.result(10)
        assert info.value.kind == "not_found"


def test_done_callbacks_run_off_the_session_thread(ex):
    import threading
    seen = []
    done = threading.Event()

    def cb(f):
        seen.append((threading.current_thread().name, f.result()))
        # A callback may block on another job without stalling the stream.
        seen.append(ex.submit(t.square, 4).result(10))
        done.set()
    ex.submit(t.square, 3).add_done_callback(cb)
    assert done.wait(10)
    assert seen == [("dexec-callback", 9), 16]


def test_shutdown_waits_and_refuses_new_work(cluster):
    e = cluster.executor()
    fs = [e.submit(t.sleep, 0.2) for _ in range(3)]
    e.shutdown(wait=True)
    assert all(f.done() and f.result() == 0.2 for f in fs)
    with pytest.raises(RuntimeError, match="after shutdown"):
        e.submit(t.square, 1)


def test_shutdown_cancel_futures_cancels_what_has_not_started(cluster):
    with cluster.executor() as e:
        running = e.submit(t.wait_cancel, 0.5)
        # No worker offers this task: it stays QUEUED at the broker.
        queued = [e.submit("nobody.offers.this", b"") for _ in range(5)]
        assert cf.wait([running], timeout=10) and _wait_running(running)
        e.shutdown(wait=False, cancel_futures=True)
        assert all(f.cancelled() for f in queued)
        assert running.result(10) == "slept"


def _wait_running(f, timeout=10):
    end = time.monotonic() + timeout
    while not (f.running() or f.done()):
        assert time.monotonic() < end, "job never started"
        cf.wait([f], timeout=0.02)
    return True
