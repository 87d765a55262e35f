"""Hooks for what only the implementer of a server knows.

pytest only calls functions whose names start with ``pytest_``, so the hook
``vfu_trigger_irq`` is implemented as ``pytest_vfu_trigger_irq``, and so on.
Implement them in a plugin module and load it with ``-p your.module`` (or in
a conftest.py); the embedded reference server's implementations are in
``reference_server.pytest_hooks`` and are loaded automatically when the
target is the embedded reference server.  Every hook is ``firstresult``:
the first implementation that returns something other than None wins.
Return None for "I cannot do that": a case that needs the hook is then
UNIMPLEMENTED ("needs profile hook vfu_trigger_irq").

``client`` is a negotiated ``pytest_vfiouser.client.Client`` connected to the
server, ``device`` the ``DeviceModel`` of the ``vfu_device`` fixture.
"""

from __future__ import annotations

import pytest

hookspec = pytest.hookspec  # pluggy HookspecMarker("pytest")

# The names cases use in ``requires=`` and messages; the pytest hook is "pytest_" + name.
HOOK_NAMES: frozenset[str] = frozenset({"vfu_trigger_irq", "vfu_trigger_dma", "vfu_device_state"})


def hook_attr(name: str) -> str:
    """The pytest hook implementing ``name`` ("vfu_trigger_irq" -> "pytest_vfu_trigger_irq")."""
    return "pytest_" + name


@hookspec(firstresult=True)
def pytest_vfu_trigger_irq(client, device, index: int, subindex: int):
    """Make the device raise interrupt ``subindex`` of IRQ type ``index``.

    Typically a REGION_WRITE to a device register through ``client``.
    Return True once the device was told to; None if not supported.
    """


@hookspec(firstresult=True)
def pytest_vfu_trigger_dma(
    client, device, direction: str, address: int, length: int, device_offset: int
):
    """Make the device perform DMA through ``client``.

    ``direction`` is ``"read"`` (device reads ``length`` bytes of client memory
    at ``address`` into its own buffer at ``device_offset``) or ``"write"``
    (device writes its buffer at ``device_offset`` to client memory at
    ``address``).  The client serves the resulting DMA_READ/DMA_WRITE
    messages while it waits for replies.  Return a result (True, or the bytes
    involved); None if not supported.
    """


@hookspec(firstresult=True)
def pytest_vfu_device_state(client, device):
    """The device's observable state as bytes, for migration equality checks.

    Two devices in the same state must return equal bytes.  Return None if
    not supported.
    """
