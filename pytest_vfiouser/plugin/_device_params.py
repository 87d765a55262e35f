"""Parametrization over what the device reports: every region, every IRQ index.

A case that takes ``vfu_region_index`` runs once for each region index below
the device's num_regions, ``vfu_irq_index`` once for each IRQ index below
num_irqs, so one requirement covers the whole device. The device is asked
at collection time, once (the answer is the cached discovery every
``vfu_device`` fixture then uses). If it cannot be asked (the server does not
start), the indexes come from the profile, else the PCI standard ones, and
the cases themselves then report why the target is unusable.
"""

from __future__ import annotations

import pytest

from pytest_vfiouser.protocol import VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS

from ._state import RunState, get_state

_COLLECTION_KEY = "(collection)"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = [n for n in ("vfu_region_index", "vfu_irq_index") if n in metafunc.fixturenames]
    if not names:
        return
    regions, irqs = _device_indexes(get_state(metafunc.config))
    for name in names:
        indexes, prefix = (regions, "region") if name == "vfu_region_index" else (irqs, "irq")
        metafunc.parametrize(name, indexes, ids=[f"{prefix}{i}" for i in indexes])


def _device_indexes(state: RunState) -> tuple[list[int], list[int]]:
    cached = getattr(state, "_collection_indexes", None)
    if cached is not None:
        return cached
    try:
        # Its own server, except under --vfu-restart per-session: there the session's.
        key = state.manager.key_for(_COLLECTION_KEY, _COLLECTION_KEY)
        handle = state.manager.acquire(key)
        try:
            device = state.discover(handle)
        finally:
            state.manager.release(handle)
    except Exception:  # the cases report the target's failure; collection goes on
        device = None
    if device is not None:
        indexes = list(range(device.num_regions)), list(range(device.num_irqs))
    else:  # the cases report why discovery failed
        profile = state.settings.profile
        indexes = (
            _declared(profile.device.num_regions, profile.regions, VFIO_PCI_NUM_REGIONS),
            _declared(profile.device.num_irqs, profile.irqs, VFIO_PCI_NUM_IRQS),
        )
    state._collection_indexes = indexes
    return indexes


def _declared(count: int | None, described: dict, standard: int) -> list[int]:
    if count is not None:
        return list(range(count))
    return sorted(described) or list(range(standard))
