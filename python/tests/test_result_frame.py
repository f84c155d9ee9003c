"""The Python worker's hand-written Results frames (dexec/worker/
result_frame.py) are byte for byte what the generated protobuf code writes,
so the broker reads them as any other worker's."""
import random

import pytest

from dexec._proto import wire_pb2 as wire
from dexec.worker.result_frame import Encoder, Result, varint

EDGES = [0, 1, 127, 128, 16383, 16384, (1 << 21) - 1, 1 << 21, (1 << 28) - 1,
         1 << 28, 1 << 35, 1 << 50, (1 << 63) - 1]


def reference(results):
    f = wire.Frame(version=1)
    f.results.SetInParent()
    for r in results:
        f.results.results.add(
            job_id=r.job_id, attempt=r.attempt, ok=r.ok, output=r.output,
            error_kind=r.error_kind, error_message=r.error_message,
            started_at_us=r.started_at_us, finished_at_us=r.finished_at_us,
            output_size=r.output_size, output_offset=r.output_offset)
    return f.SerializeToString()


@pytest.mark.parametrize("n", EDGES + [-1, -(1 << 40)])
def test_varint_is_protobufs(n):
    f = wire.TaskResult(started_at_us=n, finished_at_us=1)
    # The field's tag (0x38) then its varint; proto3 writes no zero.
    assert f.SerializeToString() == \
        (b"\x38" + varint(n) if n else b"") + b"\x40\x01"


def test_frame_of_no_results_is_an_empty_results_body():
    assert Encoder(1).frame([]) == reference([])
    assert wire.Frame.FromString(Encoder(1).frame([])).WhichOneof("body") \
        == "results"


def test_frames_match_protobuf_for_mixed_results():
    rng = random.Random(11)
    noise = rng.randbytes(20000)
    enc = Encoder(1)
    now_us = 1796235791376942
    for round_ in range(50):
        results = []
        for i in range(rng.randrange(1, 40)):
            ok = rng.random() < 0.7
            results.append(Result(
                job_id=rng.choice(EDGES + [rng.randrange(1, 1 << 40)]),
                attempt=rng.choice([0, 1, 2, 200, 70000]),
                ok=ok,
                output=rng.choice([b"", b"\x80\x05K\x00.", b"x" * 300,
                                   noise]),
                error_kind="" if ok else rng.choice(["exception", "timeout",
                                                     "kind-\u00e9\u4e2d"]),
                error_message="" if ok else rng.choice(
                    ["", "boom", "\u00fcber " * 50, "m" * 70000]),
                # Timestamps move on between results and across the 2**14
                # boundaries the encoder keeps varints for.
                started_at_us=rng.choice([0, 5, -1,
                                          now_us + round_ * 9999 + i]),
                finished_at_us=rng.choice([0, now_us + round_ * 16384 + i,
                                           (1 << 63) - 1])))
        assert enc.frame(results) == reference(results)


def test_a_large_output_arrives_whole():
    big = bytes(range(256)) * 4096 * 4  # 4 MiB
    r = Result(7, 1, True, big, "", "", 1, 2)
    f = wire.Frame.FromString(Encoder(1).frame([r]))
    assert f.version == 1
    (got,) = f.results.results
    assert got.job_id == 7 and got.ok and got.output == big


def test_pieces_of_a_long_output_match_protobuf():
    # The fields of a piece (output_size, output_offset), first, middle and
    # last, as the worker sends an output over the broker's max_chunk_bytes.
    from dexec.worker import _pieces
    whole = Result(job_id=7, attempt=2, ok=False, output=bytes(range(256)) * 9,
                   error_kind="exception", error_message="late",
                   started_at_us=1796235791376942,
                   finished_at_us=1796235791376999)
    pieces = _pieces(whole, 1000)
    assert [len(p.output) for p in pieces] == [1000, 1000, 304]
    assert [p.output_offset for p in pieces] == [0, 1000, 2000]
    assert b"".join(p.output for p in pieces) == whole.output
    assert Encoder(1).frame(pieces) == reference(pieces)
    last = wire.Frame.FromString(Encoder(1).frame(pieces)).results.results[-1]
    assert (last.ok, last.error_message, last.output_size) == \
        (False, "late", 2304)
