"""Several items back to back, cut into writes."""

from __future__ import annotations

import functools

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from pytest_vfiouser.protocol import HEADER_SIZE

from ._wire import Transmission


def transmissions(
    items: SearchStrategy, max_items: int = 3, split: bool | None = None
) -> SearchStrategy[Transmission]:
    """1..``max_items`` of ``items`` back to back; cut into several writes
    (``split=True``), sent whole (False), or either (None)."""
    some_items = st.lists(items, min_size=1, max_size=max_items)

    @st.composite
    def build(draw):
        its = tuple(draw(some_items))
        total = sum(len(i.encode()) for i in its)
        cuts: tuple[int, ...] = ()
        if total > 1 and (split or (split is None and draw(st.booleans()))):
            cuts = tuple(sorted(set(draw(_cut_lists(total)))))
        return Transmission(its, cuts)

    return build()


@functools.lru_cache(maxsize=4096)
def _cut_lists(total: int) -> SearchStrategy[list[int]]:
    """1-4 cut positions in a stream of ``total`` bytes, often at the header's edges."""
    positions = st.one_of(
        st.integers(1, total - 1),
        st.sampled_from(
            tuple(
                p
                for p in (1, 4, 8, HEADER_SIZE - 1, HEADER_SIZE, HEADER_SIZE + 1, total - 1)
                if 0 < p < total
            )
        ),
    )
    return st.lists(positions, min_size=1, max_size=4)
