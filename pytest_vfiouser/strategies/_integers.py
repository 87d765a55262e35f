"""Integers weighted to the edges: 0, 1, the maximum, powers of two and their
neighbours, then anything; flag combinations and enum values, or any value."""

from __future__ import annotations

import functools

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy


@functools.cache
def _edges(lo: int, hi: int) -> tuple[int, ...]:
    """lo, hi, their neighbours, and powers of two +-1, within [lo, hi]."""
    values = {lo, lo + 1, hi, hi - 1}
    for k in range(hi.bit_length() + 1):
        p = 1 << k
        values |= {p - 1, p, p + 1, -p, -p - 1, -p + 1}
    return tuple(sorted(v for v in values if lo <= v <= hi))


@functools.cache
def ints_between(lo: int, hi: int) -> SearchStrategy[int]:
    """Integers in [lo, hi], half the time one of the edge values."""
    return st.one_of(st.sampled_from(_edges(lo, hi)), st.integers(lo, hi))


def uints(bits: int) -> SearchStrategy[int]:
    return ints_between(0, (1 << bits) - 1)


def u8s() -> SearchStrategy[int]:
    return uints(8)


def u16s() -> SearchStrategy[int]:
    return uints(16)


def u32s() -> SearchStrategy[int]:
    return uints(32)


def u64s() -> SearchStrategy[int]:
    return uints(64)


def s32s() -> SearchStrategy[int]:
    return ints_between(-(1 << 31), (1 << 31) - 1)


@functools.cache
def powers_of_two(bits: int = 64) -> SearchStrategy[int]:
    return st.integers(0, bits - 1).map(lambda k: 1 << k)


def flags_of(flag_type, bits: int = 32) -> SearchStrategy[int]:
    """Combinations of the defined bits of an IntFlag, or any ``bits``-bit value."""
    defined = [int(f) for f in flag_type]
    combos = st.lists(st.sampled_from(defined), max_size=len(defined)).map(
        lambda fs: functools.reduce(int.__or__, fs, 0)
    )
    return st.one_of(combos, uints(bits))


def enum_or_any(enum_type, bits: int = 32) -> SearchStrategy[int]:
    """A defined value of an IntEnum, or any ``bits``-bit value."""
    return st.one_of(st.sampled_from([int(v) for v in enum_type]), uints(bits))
