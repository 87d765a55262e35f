"""Payloads of the IRQ commands: DEVICE_GET_IRQ_INFO and DEVICE_SET_IRQS."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from pytest_vfiouser.protocol import (
    IRQ_SET_ACTION_MASK,
    IRQ_SET_DATA_MASK,
    IrqInfo,
    IrqSetFlags,
    SetIrqs,
)

from ._collections import MAX_DATA, data_bytes
from ._integers import u8s, u32s


def irq_infos() -> SearchStrategy[IrqInfo]:
    return st.builds(IrqInfo, argsz=u32s(), flags=u32s(), index=u32s(), count=u32s())


_IRQ_DATA = [int(f) for f in IrqSetFlags if f & IRQ_SET_DATA_MASK]
_IRQ_ACTIONS = [int(f) for f in IrqSetFlags if f & IRQ_SET_ACTION_MASK]


def irq_set_flags() -> SearchStrategy[int]:
    """One DATA flag and one ACTION flag, or any u32."""
    return st.one_of(
        st.builds(int.__or__, st.sampled_from(_IRQ_DATA), st.sampled_from(_IRQ_ACTIONS)), u32s()
    )


def _set_irqs_bool(flags: int, index: int, start: int, bools: list[int]) -> SetIrqs:
    return SetIrqs(
        SetIrqs.FIXED_SIZE + len(bools),
        flags | IrqSetFlags.DATA_BOOL,
        index,
        start,
        len(bools),
        bytes(bools),
    )


def set_irqs(data_bool: bool = False) -> SearchStrategy[SetIrqs]:
    """SET_IRQS requests: any flags and count, some data or none; or DATA_BOOL
    with ``count`` bool bytes (mostly 0 and 1). ``data_bool=True``: only the latter.
    """
    with_bools = st.builds(
        _set_irqs_bool,
        st.sampled_from(_IRQ_ACTIONS),
        u32s(),
        u32s(),
        st.lists(st.one_of(st.sampled_from([0, 1]), u8s()), min_size=1, max_size=MAX_DATA),
    )
    if data_bool:
        return with_bools
    anything = st.builds(
        SetIrqs,
        argsz=u32s(),
        flags=irq_set_flags(),
        index=u32s(),
        start=u32s(),
        count=u32s(),
        data=st.one_of(st.just(b""), data_bytes()),
    )
    return st.one_of(anything, with_bools)
