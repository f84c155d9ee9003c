"""Breaking things the way users will: cancel in each pool, a child process
dying, kill -9 of a worker mid-map, a broker restart mid-map, a task holding
the GIL, SIGTERM drain. Each test has its own processes."""
import concurrent.futures as cf
import os
import signal
import time

import pytest

import dexec
import tasks_mod as t


def _running(f, timeout=10):
    end = time.monotonic() + timeout
    while not f.running():
        assert not f.done(), "finished before it could be cancelled: %r" % f
        assert time.monotonic() < end, "job never reported RUNNING"
        cf.wait([f], timeout=0.02)


@pytest.mark.parametrize("fn,arg", [(t.wait_cancel, 30), (t.psleep, 30),
                                    (t.asleep, 30)],
                         ids=["thread", "process", "async"])
def test_cancel_running_and_queued_job_in_each_pool(procs, fn, arg):
    b = procs.broker(in_memory=True)
    procs.worker(b, flags=["--threads=1", "--processes=1",
                           "--concurrency=1", "--prefetch=0"])
    with b.executor() as ex:
        running = ex.submit(fn, arg)
        queued = ex.submit(fn, arg)
        _running(running)
        t0 = time.monotonic()
        assert queued.cancel() and queued.cancelled()
        assert running.cancel() and running.cancelled()
        with pytest.raises(cf.CancelledError):
            running.result(1)
        # The one slot is free again at once: the task was stopped.
        assert ex.submit(fn, 0).result(10) in (0, "slept")
        assert time.monotonic() - t0 < 5
        assert running.cancel()  # cancelled stays cancelled


def test_cancel_of_a_finished_job_is_false(procs):
    b = procs.broker(in_memory=True)
    procs.worker(b)
    with b.executor() as ex:
        f = ex.submit(t.square, 2)
        assert f.result(10) == 4
        assert f.cancel() is False


def test_process_child_dying_fails_its_job_crashed_and_worker_lives(procs):
    b = procs.broker(in_memory=True)
    w = procs.worker(b, flags=["--processes=1"])
    with b.executor() as ex:
        before = ex.submit(t.ppid).result(10)
        with pytest.raises(dexec.TaskError) as info:
            ex.options(retries=0).submit(t.pcrash).result(20)
        assert info.value.kind == "crashed"
        after = ex.submit(t.ppid).result(20)
        assert after != before  # a new child
        assert w.proc.poll() is None


def test_heartbeats_go_on_while_a_task_holds_the_gil(procs):
    # 4.5 s of pure-Python spinning > heartbeat x liveness (3 s): a worker
    # whose heartbeats stalled would be declared lost and the job rerun.
    b = procs.broker(in_memory=True)
    procs.worker(b, flags=["--threads=1"])
    with b.executor() as ex:
        f = ex.submit(t.spin, 4.5)
        assert f.result(30) > 0
        ch, stub = b.stub()
        from dexec._proto import dexec_pb2 as pb
        job = stub.GetJobs(pb.GetJobsRequest(job_ids=[f.job_id]),
                           metadata=b.metadata(), timeout=5).jobs[0]
        ch.close()
        assert job.attempts == 1, "the job ran again: the worker was lost"


def test_kill_9_of_a_python_worker_mid_map(procs):
    # A short heartbeat: the dead worker is noticed within 0.6 s.
    b = procs.broker(in_memory=True, flags=["--heartbeat_interval=200ms"])
    w1 = procs.worker(b, flags=["--threads=4"])
    procs.worker(b, flags=["--threads=4"])
    with b.executor() as ex:
        it = ex.map(t.sleep, [0.05] * 200)
        got = [next(it) for _ in range(20)]
        os.kill(w1.pid, signal.SIGKILL)
        got += list(it)
        assert got == [0.05] * 200


def test_broker_restart_mid_map(procs):
    b = procs.broker()  # durable: the journal in its data_dir
    procs.worker(b, flags=["--threads=4"])
    with b.executor() as ex:
        it = ex.map(t.sleep, [0.02] * 300, buffersize=100)
        got = [next(it) for _ in range(30)]
        b.stop(signal.SIGKILL)
        b.start()  # the same ports and journal
        got += list(it)
        assert got == [0.02] * 300


def test_sigterm_drains_running_jobs_then_exits_0(procs):
    b = procs.broker(in_memory=True)
    w = procs.worker(b, flags=["--threads=2"])
    with b.executor() as ex:
        f = ex.submit(t.sleep, 1.0)
        _running(f)
        os.kill(w.pid, signal.SIGTERM)
        assert f.result(10) == 1.0
        assert w.proc.wait(10) == 0
        b.wait_gone(w.name)


def test_worker_refuses_credentials_readable_by_others(procs, tmp_path):
    import subprocess
    key = tmp_path / "worker.key"
    key.write_text("name=w\npublic=%s\nsecret=%s\nbroker_public=%s\n" %
                   ("a" * 40, "b" * 40, "c" * 40))
    os.chmod(key, 0o644)
    from conftest import PY, _env
    r = subprocess.run([PY, "-m", "dexec.worker", "--worker_key=%s" % key,
                        "tasks_mod"], env=_env(), capture_output=True,
                       timeout=30)
    assert r.returncode == 2
    assert str(key) in r.stderr.decode() and "chmod 600" in r.stderr.decode()
    missing = tmp_path / "nope.key"
    r = subprocess.run([PY, "-m", "dexec.worker", "--worker_key=%s" % missing,
                        "tasks_mod"], env=_env(), capture_output=True,
                       timeout=30)
    assert r.returncode == 2 and str(missing) in r.stderr.decode()
