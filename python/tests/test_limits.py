"""The Python worker honours the broker's limits from its Welcome
(max_result_bytes, max_frame_bytes), as the C++ worker does."""
import pytest

import dexec
import tasks_mod as t


def test_result_over_max_result_bytes_fails_and_worker_stays(procs):
    b = procs.broker(in_memory=True, flags=["--max_result_bytes=100000"])
    w = procs.worker(b, flags=["--threads=2"])
    with b.executor() as ex:
        f = ex.submit(t.blob, 200000)
        with pytest.raises(dexec.TaskError) as e:
            f.result(30)
        assert e.value.kind == "result_too_large"
        assert "bytes; the broker keeps at most 100000 (--max_result_bytes)" \
            in e.value.message
        # The worker kept its connection: it still serves jobs.
        assert ex.submit(t.blob, 1000).result(30) == b"x" * 1000
        assert w.name in {x.name for x in b.list_workers()}
        assert w.proc.poll() is None


def test_many_mid_size_results_in_one_flush_arrive(procs):
    # 40 x 1 MB results finish together: the worker cuts them into frames
    # of at most 4 MiB (and under the broker's frame limit of 2 MiB +
    # envelope here), so none is lost and the worker is not dropped.
    b = procs.broker(in_memory=True, flags=["--max_result_bytes=2000000",
                                            "--max_payload_bytes=2000000"])
    w = procs.worker(b, flags=["--threads=8"])
    with b.executor() as ex:
        out = list(ex.map(t.blob, [1000000] * 40))
        assert out == [b"x" * 1000000] * 40
    assert w.proc.poll() is None


def test_a_result_of_several_mib_arrives_whole_in_pieces(procs):
    # Over the broker's piece size (1 MiB) many times over: the worker
    # sends it in pieces under the broker's frame limit (8 MiB, whatever
    # --max_result_bytes says) and the broker puts them back together.
    b = procs.broker(in_memory=True, flags=["--max_result_bytes=67108864"])
    w = procs.worker(b, flags=["--threads=2"])
    with b.executor() as ex:
        f = ex.submit(t.patterned, 20 << 20)
        small = ex.submit(t.blob, 1000)
        assert f.result(60) == t.patterned(20 << 20)
        assert small.result(60) == b"x" * 1000
    assert w.proc.poll() is None
