"""Valid encodings damaged the ways a broken or hostile peer damages them:
truncated, extended, bits flipped, counts set huge."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ._collections import data_bytes

# Values a corrupted count or size field takes: the ones that overflow.
HUGE_WORDS = {
    4: [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFF0, 0x10000000],
    8: [(1 << 64) - 1, (1 << 63) - 1, 1 << 63, 1 << 32, (1 << 64) - 8],
}


_MUTATIONS = ("truncate", "extend", "flip", "huge", "insert", "delete")
# An index into the data, taken modulo its length: one strategy for any length.
_POSITIONS = st.integers(0, (1 << 24) - 1)


def _apply_mutation(buf: bytearray, op: str, pos: int, width: int, huge: int, extra: bytes) -> None:
    if op == "truncate" and buf:
        del buf[pos % len(buf) :]
    elif op == "extend":
        buf += extra or b"\0"
    elif op == "flip" and buf:
        bit = pos % (8 * len(buf))
        buf[bit // 8] ^= 1 << (bit % 8)
    elif op == "huge" and len(buf) >= width:
        # Fields sit on 4-byte boundaries in every vfio-user structure.
        at = 4 * (pos % ((len(buf) - width) // 4 + 1))
        buf[at : at + width] = huge.to_bytes(width, "little")
    elif op == "insert":
        at = pos % (len(buf) + 1)
        buf[at:at] = extra[:8] or b"\xff"
    elif op == "delete" and buf:
        at = pos % len(buf)
        del buf[at : at + 1 + pos % 8]


_MUTATION_STEPS = st.lists(
    st.tuples(
        st.sampled_from(_MUTATIONS),
        _POSITIONS,
        st.sampled_from([(w, v) for w, values in HUGE_WORDS.items() for v in values]),
        data_bytes(40),
    ),
    min_size=1,
    max_size=3,
)


def _mutate(data: bytes, steps) -> bytes:
    buf = bytearray(data)
    for op, pos, (width, huge), extra in steps:
        _apply_mutation(buf, op, pos, width, huge, extra)
    return bytes(buf)


def mutated(valid: SearchStrategy[bytes]) -> SearchStrategy[bytes]:
    """Valid encodings damaged 1-3 times: truncated, extended, bits flipped,
    a 4- or 8-byte field set huge, bytes inserted or deleted."""
    return st.builds(_mutate, valid, _MUTATION_STEPS)


def hostile(valid: SearchStrategy[bytes], max_size: int = 256) -> SearchStrategy[bytes]:
    """Arbitrary bytes, or mutations of ``valid``."""
    return st.one_of(st.binary(max_size=max_size), mutated(valid))
