"""The reference server at 0.9.2, as a device description changes it: a device without
PRE_COPY, one that does not migrate, and the VERSION reply's 0.9.2 capabilities. (What
every 0.9.2 command does is the conformance suite's to check: the kill matrix runs it at
0.9.2 against the server and 35 faults of that revision.)"""

from __future__ import annotations

import os
import struct

import pytest
from test_server_support import RefServer, eventfd, eventfd_value, write32

from pytest_vfiouser.protocol import (
    DeviceFeatureFlags,
    Feature,
    FeatureMigDeviceState,
    IrqSetFlags,
    MigrationFlags,
    MigState,
)
from reference_server import pytest_hooks
from reference_server import registers as R
from reference_server.migration import FINAL, PRECOPY, chunk
from reference_server.migration_v2 import final_blob

GET, SET = int(DeviceFeatureFlags.GET), int(DeviceFeatureFlags.SET)


def _state(client) -> int:
    reply = client.device_feature(GET | Feature.MIG_DEVICE_STATE).check()
    return FeatureMigDeviceState.unpack(reply.body.data).device_state


def _set(client, state: int):
    return client.device_feature(
        SET | Feature.MIG_DEVICE_STATE, FeatureMigDeviceState(state).pack()
    )


def test_a_device_without_pre_copy_removes_the_arcs_touching_it(tmp_path):
    device = tmp_path / "d.toml"
    device.write_text("[device]\npre_copy = false\n")
    server = RefServer(tmp_path, "--spec=0.9.2", f"--device={device}")
    try:
        c = server.connect()
        reply = c.device_feature(GET | Feature.MIGRATION).check()
        (flags,) = struct.unpack("<Q", reply.body.data)
        assert flags == MigrationFlags.STOP_COPY
        refused = _set(c, MigState.PRE_COPY)
        assert not refused.ok and _state(c) == MigState.RUNNING
        assert _set(c, MigState.STOP_COPY).ok and _state(c) == MigState.STOP_COPY  # by STOP
        assert c.reset().ok and _state(c) == MigState.RUNNING
        c.close()
    finally:
        server.stop()


def test_a_device_without_a_migration_region_does_not_migrate(tmp_path):
    device = tmp_path / "d.toml"
    device.write_text('[[regions]]\nindex = 9\nkind = "absent"\n')
    server = RefServer(tmp_path, "--spec=0.9.2", f"--device={device}")
    try:
        c = server.connect()
        assert c.device_get_info().check().body.num_regions == 10  # nothing to drop: absent
        reply = c.device_feature(GET | Feature.MIGRATION)
        assert not reply.ok and reply.error == 95  # ENOTSUP: a feature the device lacks
        assert c.device_feature(SET | Feature.DMA_LOGGING_STOP).ok  # logging is the DMA's
        c.close()
    finally:
        server.stop()


@pytest.mark.parametrize("spec, keys", [("0.9.1", set()), ("0.9.2", {"pgsizes", "max_dma_maps"})])
def test_the_0_9_2_capabilities_are_answered_at_0_9_2_only(tmp_path, spec, keys):
    server = RefServer(tmp_path, f"--spec={spec}")
    try:
        caps = {"max_msg_fds": 8, "pgsizes": 4096, "max_dma_maps": 100, "write_multiple": True}
        c = server.connect(capabilities=caps)
        answered = set(c.server_caps.raw) - {"max_msg_fds"}
        assert answered == keys | ({"write_multiple"} if keys else set())
        if keys:
            assert c.server_caps.pgsizes == 4096 and c.server_caps.max_dma_maps == 65535
        c.close()
    finally:
        server.stop()


def test_a_stream_is_refused_where_it_is_cut_damaged_or_has_no_final_record():
    blob = b"state" * 10
    whole = chunk(0, PRECOPY, 0, 3, b"pre") + chunk(1, FINAL, 0, len(blob), blob)
    assert final_blob(whole) == blob
    with pytest.raises(ValueError, match="incomplete"):
        final_blob(whole[:-1])
    damaged = bytearray(whole)
    damaged[-1] ^= 1
    with pytest.raises(ValueError, match="damaged"):
        final_blob(bytes(damaged))
    with pytest.raises(ValueError, match="no final record"):
        final_blob(chunk(0, PRECOPY, 0, 3, b"pre"))
    with pytest.raises(ValueError, match="follow the final record"):
        final_blob(whole + b"x")


def test_a_v2_migration_carries_the_whole_device_interrupt_masks_included(tmp_path):
    """Source STOP_COPY read to its end, destination RESUMING -> STOP -> RUNNING: the
    device state (registers, RAMs, config space) and the interrupt masks arrive (the
    eventfds cannot: the client sets them again on the destination)."""
    src = RefServer(tmp_path, "--spec=0.9.2", name="src")
    dst = RefServer(tmp_path, "--spec=0.9.2", name="dst")
    try:
        s, d = src.connect(), dst.connect()
        for n in range(R.SCRATCH_COUNT):
            write32(s, R.scratch(n), 0x0BADCAFE + n).check()
        s.region_write(R.RAM_REGION, 0x40, b"migrated at 0.9.2").check()
        mask = IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_MASK
        s.set_irqs(R.IRQ_MSIX, mask, 3, 1).check()
        before = pytest_hooks.pytest_vfu_device_state(s, None)
        assert before != pytest_hooks.pytest_vfu_device_state(d, None)
        assert _set(s, MigState.STOP_COPY).ok
        stream = []
        while data := s.mig_data_read(4096).check().body.data:
            stream.append(data)
        assert _set(d, MigState.STOP).ok and _set(d, MigState.RESUMING).ok
        for data in stream:
            d.mig_data_write(data).check()
        assert _set(d, MigState.STOP).ok and _set(d, MigState.RUNNING).ok
        assert pytest_hooks.pytest_vfu_device_state(d, None) == before
        fd = eventfd()
        try:
            trigger = IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER
            d.set_irqs(R.IRQ_MSIX, trigger, 3, 1, [fd]).check()
            write32(d, R.REG_IRQ_TRIGGER, R.irq_trigger_value(R.IRQ_MSIX, 3)).check()
            assert eventfd_value(fd) == 0  # masked on the source: held pending here
            unmask = IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_UNMASK
            d.set_irqs(R.IRQ_MSIX, unmask, 3, 1).check()
            assert eventfd_value(fd) == 1
        finally:
            os.close(fd)
        s.close()
        d.close()
    finally:
        assert src.stop() == 0 and dst.stop() == 0
