"""DEVICE_GET_INFO, DEVICE_GET_REGION_INFO, DEVICE_GET_IRQ_INFO, DEVICE_GET_REGION_IO_FDS,
and the PCI config space."""

from __future__ import annotations

import errno
import os
import struct

import pytest
from test_server_support import client, read32, ref_server, write32  # noqa: F401  (fixtures)

from pytest_vfiouser.protocol import (
    Command,
    DeviceInfo,
    IrqInfo,
    RegionFlags,
    RegionInfo,
    RegionIoFdsRequest,
    RegionTypeCap,
    SparseMmapCap,
)
from reference_server import registers as R

EINVAL = errno.EINVAL


def test_device_get_info(client):  # noqa: F811
    info = client.device_get_info().check().body
    assert (info.argsz, info.flags, info.num_regions, info.num_irqs) == (16, 3, 10, 5)
    assert client.device_get_info(argsz=1000).check().body.argsz == 16


@pytest.mark.parametrize(
    "payload",
    [
        DeviceInfo(15).pack(),
        DeviceInfo(16, flags=1).pack(),
        DeviceInfo(16, num_regions=1).pack(),
        DeviceInfo(16, num_irqs=1).pack(),
        DeviceInfo(16).pack()[:15],
        DeviceInfo(16).pack() + b"\0",
        b"",
    ],
)
def test_device_get_info_errors(client, payload):  # noqa: F811
    r = client.request(Command.DEVICE_GET_INFO, payload)
    assert r.error == EINVAL and not r.payload


EXPECTED_REGIONS = {  # index: (flags, size, fd)
    0: (3, 0x1000, False),
    1: (7, 0x10000, True),
    2: (15, 0x10000, True),
    3: (1, 0x1000, False),
    4: (2, 0x1000, False),
    5: (0, 0, False),
    6: (0, 0, False),
    7: (3, 256, False),
    8: (0, 0, False),
    9: (11, R.MIGRATION_SIZE, False),
}


@pytest.mark.parametrize("index", sorted(EXPECTED_REGIONS))
def test_region_info(client, index):  # noqa: F811
    r = client.region_info(index, argsz=4096).check()
    fds = r.take_fds()
    for fd in fds:
        os.close(fd)
    info = r.body
    flags, size, fd = EXPECTED_REGIONS[index]
    assert (info.flags, info.index, info.size, info.offset) == (flags, index, size, 0)
    assert len(fds) == (1 if fd else 0)
    if index == R.DMA_RAM_REGION:
        assert info.caps == (SparseMmapCap(R.DMA_RAM_SPARSE_AREAS),)
        assert info.argsz == 32 + 8 + 8 + 32 == len(r.payload)
    elif index == R.MIGRATION_REGION:
        assert info.caps == (RegionTypeCap(3, 1),) and info.argsz == 32 + 16 == len(r.payload)
    else:
        assert info.caps == () and info.argsz == 32 == len(r.payload)


def test_region_info_small_argsz_gets_fixed_part_and_needed_size(client):  # noqa: F811
    r = client.region_info(R.DMA_RAM_REGION, argsz=32).check()
    r.close_fds()
    assert len(r.payload) == 32
    info = r.body
    assert info.argsz == 80 and info.cap_offset == 0 and info.caps == ()
    assert not info.flags & RegionFlags.CAPS  # none in the reply (QEMU refuses CAPS there)
    r = client.region_info(R.DMA_RAM_REGION, argsz=79).check()
    r.close_fds()
    assert len(r.payload) == 32 and r.body.argsz == 80
    r = client.region_info(R.DMA_RAM_REGION, argsz=80).check()
    r.close_fds()
    assert len(r.payload) == 80 and r.body.cap_offset == 32


@pytest.mark.parametrize(
    "payload",
    [
        RegionInfo(31, index=0).pack(),
        RegionInfo(0, index=0).pack(),
        RegionInfo(32, index=10).pack(),
        RegionInfo(32, index=0xFFFFFFFF).pack(),
        RegionInfo(32, flags=1).pack(),
        RegionInfo(32, cap_offset=32).pack(),
        RegionInfo(32, size=1).pack(),
        RegionInfo(32, offset=1).pack(),
        RegionInfo(32).pack()[:31],
        RegionInfo(32).pack() + b"\0" * 8,
    ],
)
def test_region_info_errors(client, payload):  # noqa: F811
    r = client.request(Command.DEVICE_GET_REGION_INFO, payload)
    assert r.error == EINVAL and not r.payload and r.fd_count == 0


EXPECTED_IRQS = {0: (7, 1), 1: (9, 4), 2: (3, 8), 3: (1, 1), 4: (1, 1)}


@pytest.mark.parametrize("index", sorted(EXPECTED_IRQS))
def test_irq_info(client, index):  # noqa: F811
    info = client.irq_info(index).check().body
    assert (info.argsz, info.index, (info.flags, info.count)) == (16, index, EXPECTED_IRQS[index])


@pytest.mark.parametrize(
    "payload",
    [
        IrqInfo(16, index=5).pack(),
        IrqInfo(15, index=0).pack(),
        IrqInfo(16, flags=1).pack(),
        IrqInfo(16, count=1).pack(),
        IrqInfo(16).pack()[:12],
        IrqInfo(16).pack() + b"\0",
    ],
)
def test_irq_info_errors(client, payload):  # noqa: F811
    assert client.request(Command.DEVICE_GET_IRQ_INFO, payload).error == EINVAL


def test_region_io_fds(client):  # noqa: F811
    r = client.region_io_fds(R.REGISTERS_REGION, argsz=4096).check()
    body = r.body
    assert (body.argsz, body.flags, body.index, body.count) == (56, 0, 0, 1)
    (sub,) = body.sub_regions
    assert (sub.offset, sub.size, sub.fd_index, sub.type) == (R.REG_NOTIFY, R.NOTIFY_SIZE, 0, 0)
    (fd,) = r.take_fds()
    try:
        before = read32(client, R.REG_NOTIFY_COUNT)
        os.eventfd_write(fd, 1)  # as KVM would on a guest write to the doorbell
        os.eventfd_write(fd, 1)
        assert read32(client, R.REG_NOTIFY_COUNT) == before + 2
        write32(client, R.REG_NOTIFY, 1).check()  # the trapped path counts the same
        assert read32(client, R.REG_NOTIFY_COUNT) == before + 3
    finally:
        os.close(fd)


def test_region_io_fds_small_argsz(client):  # noqa: F811
    for argsz in (16, 55):
        r = client.region_io_fds(R.REGISTERS_REGION, argsz=argsz).check()
        assert len(r.payload) == 16 and r.fd_count == 0
        assert (r.body.argsz, r.body.count, r.body.sub_regions) == (56, 1, ())


@pytest.mark.parametrize("index", [1, 2, 3, 5, 7, 9])
def test_region_io_fds_other_regions_have_none(client, index):  # noqa: F811
    r = client.region_io_fds(index).check()
    assert (r.body.argsz, r.body.count, r.fd_count) == (16, 0, 0)


@pytest.mark.parametrize(
    "payload",
    [
        RegionIoFdsRequest(16, flags=1).pack(),
        RegionIoFdsRequest(64, count=1).pack(),
        RegionIoFdsRequest(15).pack(),
        RegionIoFdsRequest(64, index=10).pack(),
        RegionIoFdsRequest(64).pack()[:15],
        RegionIoFdsRequest(64).pack() + b"\0",
    ],
)
def test_region_io_fds_errors(client, payload):  # noqa: F811
    r = client.request(Command.DEVICE_GET_REGION_IO_FDS, payload)
    assert r.error == EINVAL and r.fd_count == 0


def test_config_space(client):  # noqa: F811
    cfg = client.region_read(R.CONFIG_REGION, 0, 256).check().body.data
    vendor, device = struct.unpack_from("<HH", cfg, 0)
    assert (vendor, device) == (R.VENDOR_ID, R.DEVICE_ID)
    assert cfg[8] == R.REVISION_ID and int.from_bytes(cfg[9:12], "little") == R.CLASS_CODE
    assert struct.unpack_from("<HH", cfg, 0x2C) == (R.SUBSYSTEM_VENDOR_ID, R.SUBSYSTEM_ID)
    assert cfg[0x3D] == 1  # INTA
    write32(client, 0, 0xFFFFFFFF, region=7).check()  # read-only: ignored
    assert read32(client, 0, region=7) == R.VENDOR_ID | R.DEVICE_ID << 16


@pytest.mark.parametrize(
    "bar, size", [(0, 0x1000), (1, 0x10000), (2, 0x10000), (3, 0x1000), (4, 0x1000), (5, 0)]
)
def test_bar_sizing(client, bar, size):  # noqa: F811
    off = 0x10 + 4 * bar
    write32(client, off, 0xFFFFFFFF, region=7).check()
    assert read32(client, off, region=7) == (~(size - 1) & 0xFFFFFFFF if size else 0)
    write32(client, off, 0, region=7).check()
