"""Protobuf varints written by hand, for the Python package's hand-encoded
messages (dexec/executor.py's JobSpec and Submit, dexec/worker/
result_frame.py's Results frames): the same bytes protobuf writes."""

SMALL = [bytes([i]) if i < 128 else bytes([(i & 0x7F) | 0x80, i >> 7])
         for i in range(1 << 14)]
# The low 14 bits of a varint of at least 2**14: two bytes, both with the
# continuation bit.
LOW14 = [bytes([(i & 0x7F) | 0x80, (i >> 7) | 0x80]) for i in range(1 << 14)]


def varint(n):
    """The protobuf varint of n (an int64 below 0 as its 10-byte form)."""
    if 0 <= n < 16384:
        return SMALL[n]
    if 0 < n < 1 << 28:
        return LOW14[n & 0x3FFF] + SMALL[n >> 14]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
