"""Bytes and tuples, of sizes that cross the interesting boundaries."""

from __future__ import annotations

import functools

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

# Sizes of the variable parts: small enough to be fast, big enough to cross
# the interesting boundaries (8-byte words, the 40-byte entries, ...).
MAX_DATA = 64
MAX_ENTRIES = 4


@functools.cache
def data_bytes(max_size: int = MAX_DATA, min_size: int = 0) -> SearchStrategy[bytes]:
    return st.binary(min_size=min_size, max_size=max_size)


def _tuples_of(
    strategy: SearchStrategy, max_size: int = MAX_ENTRIES, min_size: int = 0
) -> SearchStrategy[tuple]:
    return st.lists(strategy, min_size=min_size, max_size=max(min_size, max_size)).map(tuple)
