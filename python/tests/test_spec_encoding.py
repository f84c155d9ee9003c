"""The client's hand-written JobSpec bytes (dexec/executor.py,
_SpecTemplate over dexec/_varint.py) are what protobuf writes for the same
fields, negative priorities included (int32: the 10-byte varint)."""
import pytest

from dexec._proto import dexec_pb2 as pb
from dexec.executor import _SpecTemplate


@pytest.mark.parametrize("priority", [0, 1, 5, 127, 128, 16383, 16384,
                                      (1 << 31) - 1, -1, -5, -(1 << 31)])
@pytest.mark.parametrize("timeout", [None, 30, 0.25, 1.5])
def test_job_spec_matches_protobuf(priority, timeout):
    t = _SpecTemplate("mod.square", priority=priority, timeout=timeout,
                      max_attempts=3, idempotency_key="k-1")
    payload = b"\x80\x05K\x07." * 40
    ref = pb.SessionRequest.Submit()
    spec = ref.jobs.add(task="mod.square", payload=payload,
                        priority=priority, max_attempts=3,
                        idempotency_key="k-1")
    if timeout:
        spec.timeout.FromNanoseconds(int(round(timeout * 1e9)))
    assert t.encode(payload) == ref.SerializeToString()
