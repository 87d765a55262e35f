"""VFIO_USER_DEVICE_GET_INFO: basic information about the device."""

from __future__ import annotations

import pytest

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import VFIO_PCI_NUM_REGIONS, Command, DeviceFlags, DeviceInfo

from ._support import refused


@case("device_info/reply-argsz", MUST)
def test_reply_argsz(vfu_client):
    """The reply states argsz 16, the size of the full reply payload.

    Spec (VFIO_USER_DEVICE_GET_INFO): "argsz is the size required for the full
    reply payload (16 bytes today)"
    """
    reply = vfu_client.device_get_info().check()
    assert len(reply.payload) == DeviceInfo.SIZE, f"reply payload is {len(reply.payload)} bytes"
    assert reply.body.argsz == DeviceInfo.SIZE


@case("device_info/pci-flag", MUST)
def test_pci_flag(vfu_client):
    """The device is a PCI device: VFIO_DEVICE_FLAGS_PCI is set.

    Spec (VFIO_USER_DEVICE_GET_INFO): "This version of the protocol only
    supports PCI devices."
    """
    info = vfu_client.device_get_info().check().body
    assert info.flags & DeviceFlags.PCI, f"flags {info.flags:#x} lack VFIO_DEVICE_FLAGS_PCI"


@case("device_info/pci-num-regions", MUST)
def test_num_regions_covers_pci(vfu_client):
    """A PCI device exposes at least the VFIO_PCI_NUM_REGIONS (9) standard regions.

    Spec (Device-Specific Regions): "for PCI devices this value can be equal
    to, or higher than, VFIO_PCI_NUM_REGIONS."
    """
    info = vfu_client.device_get_info().check().body
    assert info.num_regions >= VFIO_PCI_NUM_REGIONS


@case("device_info/matches-profile", MUST)
@pytest.mark.parametrize("field", ["flags", "num_regions", "num_irqs"])
def test_matches_profile(vfu_client, vfu_profile, field):
    """DEVICE_GET_INFO reports what the device profile expects.

    Spec (VFIO_USER_DEVICE_GET_INFO): "num_regions is the number of memory
    regions that the device exposes."
    """
    expected = getattr(vfu_profile.device, field)
    if expected is None:
        pytest.skip(f"needs profile: device.{field}")
    info = vfu_client.device_get_info().check().body
    assert getattr(info, field) == expected


@case("device_info/reset-flag-reset-works", MUST)
def test_reset_flag_reset_works(vfu_client):
    """With VFIO_DEVICE_FLAGS_RESET set, DEVICE_RESET succeeds (a reply without payload).

    Spec (VFIO_USER_DEVICE_GET_INFO): "VFIO_DEVICE_FLAGS_RESET indicates that the
    device supports the VFIO_USER_DEVICE_RESET message." (VFIO_USER_DEVICE_RESET:
    "Neither the request or reply have a payload.")
    """
    info = vfu_client.device_get_info().check().body
    if not info.flags & DeviceFlags.RESET:
        pytest.skip("the device does not set VFIO_DEVICE_FLAGS_RESET")
    reply = vfu_client.reset()
    assert reply.ok, (
        f"the device sets VFIO_DEVICE_FLAGS_RESET but DEVICE_RESET failed (errno {reply.error})"
    )
    assert reply.payload == b"", f"the DEVICE_RESET reply carries {len(reply.payload)} bytes"


@case("device_info/no-reset-flag-reset-refused", SHOULD)
def test_no_reset_flag_reset_refused(vfu_client, vfu_connect, vfu_observe):
    """Without VFIO_DEVICE_FLAGS_RESET, DEVICE_RESET is refused.

    Spec (VFIO_USER_DEVICE_GET_INFO): "VFIO_DEVICE_FLAGS_RESET indicates that the
    device supports the VFIO_USER_DEVICE_RESET message." (without it, the device
    does not support the message)
    """
    info = vfu_client.device_get_info().check().body
    if info.flags & DeviceFlags.RESET:
        pytest.skip("the device sets VFIO_DEVICE_FLAGS_RESET")
    msg_id = vfu_client.send(Command.DEVICE_RESET)
    refused(
        vfu_client,
        msg_id,
        Command.DEVICE_RESET,
        vfu_connect,
        "DEVICE_RESET of a device without VFIO_DEVICE_FLAGS_RESET",
        vfu_observe,
        timeout=None,
    )
