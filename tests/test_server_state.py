"""In-process: device descriptions (TOML), save_state/load_state, the dispatch table,
and the pluggable region interface the migration region will use."""

from __future__ import annotations

import errno

import pytest

from pytest_vfiouser.protocol import (
    COMMANDS_BY_REVISION,
    Command,
    RegionFlags,
    RegionTypeCap,
    SetIrqs,
)
from reference_server import registers as R
from reference_server.commands import HANDLERS, dispatch_table
from reference_server.device import Device
from reference_server.device_config import ConfigError, default_config, load, parse
from reference_server.dma_map import DmaMapTable
from reference_server.errors import VfioError
from reference_server.regions import Region


@pytest.fixture
def device():
    d = Device()
    yield d
    d.close()


def test_default_config_is_the_documented_device():
    cfg = parse({})
    assert cfg == default_config()
    assert cfg.num_regions == R.NUM_REGIONS and cfg.dma_ram_region == R.DMA_RAM_REGION
    assert cfg.region(R.DMA_RAM_REGION).sparse_mmap == R.DMA_RAM_SPARSE_AREAS
    assert cfg.region(5).kind == "absent"


@pytest.mark.parametrize(
    "doc, key",
    [
        ({"bogus": {}}, "bogus: unknown key"),
        ({"server": {"max_msg_fds": 0}}, "server.max_msg_fds"),
        ({"server": {"max_msg_fds": True}}, "server.max_msg_fds: must be int"),
        ({"server": {"max_data_xfer_size": 100}}, "server.max_data_xfer_size"),
        ({"server": {"dma_reply_timeout": 0}}, "server.dma_reply_timeout"),
        ({"server": {"migration_pgsize": 3000}}, "server.migration_pgsize"),
        ({"server": {"typo": 1}}, "server.typo: unknown key"),
        ({"device": {"base": "full"}}, "device.base"),
        ({"device": {"vendor_id": 0x10000}}, "device.vendor_id"),
        ({"device": {"num_regions": 8}}, "device.num_regions"),
        ({"device": {"dma_ram_region": 3}}, "device.dma_ram_region"),
        ({"device": {"reset": 1}}, "device.reset: must be bool"),
        ({"regions": [{"kind": "ram", "size": 4096}]}, "regions[0].index: missing"),
        (
            {"regions": [{"index": 7, "kind": "ram", "size": 4096}]},
            "regions[0].index: 7 is the PCI",
        ),
        ({"regions": [{"index": 10, "kind": "ram", "size": 4096}]}, "regions[0].index"),
        ({"regions": [{"index": 9, "kind": "ram", "size": 4096}]}, "regions[0].kind: region 9"),
        ({"regions": [{"index": 1, "kind": "rom", "size": 4096}]}, "regions[0].kind"),
        ({"regions": [{"index": 1, "kind": "ram"}]}, "regions[0].size: missing"),
        ({"regions": [{"index": 1, "kind": "ram", "size": 6000}]}, "regions[0].size"),
        ({"regions": [{"index": 1, "kind": "registers", "size": 4096}]}, "at most one"),
        ({"regions": [{"index": 1, "kind": "registers", "size": 2048}]}, "regions[0].size"),
        ({"regions": [{"index": 1, "kind": "absent", "size": 4096}]}, "regions[0].size"),
        (
            {"regions": [{"index": 1, "kind": "pattern", "size": 4096, "mmap": True}]},
            "regions[0].mmap: unknown key",
        ),
        (
            {"regions": [{"index": 1, "kind": "ram", "size": 8192, "sparse_mmap": [[0, 4096]]}]},
            "regions[0].sparse_mmap: needs mmap",
        ),
        (
            {
                "regions": [
                    {
                        "index": 1,
                        "kind": "ram",
                        "size": 8192,
                        "mmap": True,
                        "sparse_mmap": [[0, 4096], [0, 8192]],
                    }
                ]
            },
            "overlap",
        ),
        (
            {
                "regions": [
                    {
                        "index": 1,
                        "kind": "ram",
                        "size": 8192,
                        "mmap": True,
                        "sparse_mmap": [[100, 4096]],
                    }
                ]
            },
            "regions[0].sparse_mmap[0]",
        ),
        (
            {
                "regions": [
                    {
                        "index": 1,
                        "kind": "ram",
                        "size": 8192,
                        "mmap": True,
                        "sparse_mmap": [[4096, 8192]],
                    }
                ]
            },
            "regions[0].sparse_mmap[0]",
        ),
        ({"regions": {"index": 1}}, "regions: must be list"),
        ({"irqs": [{"index": 5, "count": 1}]}, "irqs[0].index"),
        ({"irqs": [{"count": 1}]}, "irqs[0].index: missing"),
        ({"irqs": [{"index": 0, "count": 1, "flags": ["edge"]}]}, "irqs[0].flags: unknown flag"),
        (
            {"irqs": [{"index": 0, "count": 1, "flags": ["eventfd", "automasked"]}]},
            "automasked needs maskable",
        ),
        ({"irqs": [{"index": 0, "count": 0, "flags": ["eventfd"]}]}, "count 0"),
        ({"irqs": [{"index": 0, "count": 4096}]}, "irqs[0].count"),
    ],
)
def test_config_errors_name_the_key(doc, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse(doc)


def test_config_overlays_and_empty_base(tmp_path):
    f = tmp_path / "d.toml"
    f.write_text(
        '[device]\nbase = "empty"\n[[regions]]\nindex = 0\nkind = "registers"\n'
        "size = 8192\nioeventfd = false\n"
    )
    cfg = load(str(f))
    assert cfg.dma_ram_region == -1 and set(cfg.regions) == {0} and not cfg.irqs
    d = Device(cfg)
    try:
        assert d.regions[0].size == 8192 and d.io_fds(0) == []
        with pytest.raises(VfioError) as e:
            d.run_dma(0, 0, 1, 0)
        assert e.value.errno == errno.ENODEV
    finally:
        d.close()


def test_save_and_load_state(device):
    device.regions[R.RAM_REGION].write(0x10, b"ram one")
    device.regions[R.DMA_RAM_REGION].write(0xFFF0, b"dma ram")
    device.registers.write(R.scratch(2), b"\x44\x33\x22\x11")
    device.regions[R.CONFIG_REGION].write(0x3C, b"\x0b")
    device.irqs.indexes[2].mask(3)
    blob = device.save_state()
    other = Device()
    try:
        assert other.save_state() != blob
        other.load_state(blob)
        assert other.save_state() == blob
        assert other.regions[R.RAM_REGION].read(0x10, 7) == b"ram one"
        assert other.registers.read(R.scratch(2), 4) == b"\x44\x33\x22\x11"
        assert other.irqs.indexes[2].masked[3]
    finally:
        other.close()


@pytest.mark.parametrize(
    "damage",
    [
        lambda b: b[:-1],
        lambda b: b"XXXXXXXX" + b[8:],
        lambda b: b + b"\0",
        lambda b: b[:30],
        lambda b: b"",
    ],
)
def test_load_state_refuses_damage_and_changes_nothing(device, damage):
    good = device.save_state()
    other = Device()
    try:
        other.registers.write(R.scratch(0), b"\1\1\1\1")
        before = other.save_state()
        with pytest.raises(ValueError):
            other.load_state(damage(good))
        assert other.save_state() == before
    finally:
        other.close()


def test_load_state_wrong_sized_part_is_rolled_back(device):
    blob = bytearray(device.save_state())
    other = Device()
    try:
        other.registers.write(R.scratch(0), b"\2\2\2\2")
        before = other.save_state()
        # Make the last part (irq4, 1 byte) claim an invalid value.
        blob[-1] = 0xFF
        with pytest.raises(ValueError):
            other.load_state(bytes(blob))
        assert other.save_state() == before
    finally:
        other.close()


def test_dispatch_table_is_per_revision():
    table = dispatch_table("0.9.1")
    assert set(table) == set(int(c) for c in COMMANDS_BY_REVISION["0.9.1"])
    assert Command.REGION_WRITE_MULTI not in table and table[Command.DIRTY_PAGES]
    assert set(HANDLERS) >= set(table)


class FakeMigrationRegion(Region):
    kind = "migration"
    size = 0x1000
    flags = int(RegionFlags.READ | RegionFlags.WRITE | RegionFlags.CAPS)
    caps = (RegionTypeCap(3, 1),)

    def read(self, offset, count):
        return bytes(count)


def test_pluggable_region_and_migration_support(device):
    device.set_region(R.MIGRATION_REGION, Region())  # the default device has one: remove it
    assert not device.supports_migration
    device.set_region(R.MIGRATION_REGION, FakeMigrationRegion())
    assert device.supports_migration
    assert device.regions[R.MIGRATION_REGION].read(0, 4) == b"\0" * 4


def test_dma_map_table_unit():
    t = DmaMapTable(8)
    t.add(0x1000, 0x1000, 3, 0, None)
    t.add(0x2000, 0x1000, 1, 0, None)
    segs = t.segments(0x1800, 0x1000, 1)
    assert [(m.address, pos, n) for m, pos, n in segs] == [
        (0x1000, 0x800, 0x800),
        (0x2000, 0, 0x800),
    ]
    with pytest.raises(VfioError) as e:
        t.segments(0x1800, 0x1000, 2)
    assert e.value.errno == errno.EPERM
    with pytest.raises(VfioError) as e:
        t.segments(0x2800, 0x1000, 1)
    assert e.value.errno == errno.EFAULT
    t.clear()
    assert len(t) == 0


def test_set_irqs_unit_argsz(device):
    with pytest.raises(VfioError):
        device.irqs.set_irqs(SetIrqs(21, 0x21, 2, 0, 1), 20, [])
