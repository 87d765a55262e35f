"""Device descriptions: the built-in default and ``--device FILE.toml``.

Every table and key is optional; what a file leaves out comes from the
built-in default device (registers.py documents it), unless
``device.base = "empty"``, which starts from a device with no regions (but
config space) and no interrupts. Numbers are TOML integers (0x1000 works).
Unknown tables and keys are errors; every error names its key, e.g.
``regions[1].size``: the second ``[[regions]]`` table's ``size``.

    [server]                      # what the server states in VERSION
    max_msg_fds = 16              # fds it accepts in one message, 1..253
    max_data_xfer_size = 1048576  # 4096..67108864
    max_dma_maps = 65535          # DMA_MAP table size, 1..1048576
    dma_reply_timeout = 10.0      # seconds to wait for a DMA_READ/WRITE reply
    migration_pgsize = 4096       # dirty page size, a power of two
    pgsizes = 4096                # 0.9.2: DMA map page sizes or'ed together (4 KiB..1 GiB);
                                  #   maps must be aligned to the smallest
    twin_socket = true            # 0.9.2: enable twin-socket mode for a client that supports it
    dma_between = false           # after each DMA_MAP, DMA_READ 64 bytes of the new mapping
                                  #   and DMA_WRITE them back before the next reply
    close_after = ""              # a command (DEVICE_SET_IRQS): close the first connection
                                  #   once that command's first reply is sent
    refuse = ""                   # a command (DEVICE_GET_IRQ_INFO): refuse every one of them
    refuse_errno = 22             #   with this errno (0: the Error bit alone)
    delay = ""                    # a command (DEVICE_GET_INFO): its first reply of each
    delay_seconds = 4.0           #   connection goes this much later
    raise_irqs = false            # raise each interrupt once as a SET_IRQS gives its eventfd

    [device]
    base = "default"              # or "empty"
    vendor_id = 0x5646            # u16; device_id, subsystem_vendor_id, subsystem_id too
    revision = 1                  # u8
    class_code = 0xFF0000         # u24
    reset = true                  # VFIO_DEVICE_FLAGS_RESET; false: DEVICE_RESET is ENOTSUP
    pre_copy = true               # 0.9.2 migration offers VFIO_MIGRATION_PRE_COPY; false: "arcs
                                  #   touching it are removed"
    num_regions = 10              # 9..64
    dma_ram_region = 2            # index of a "ram" region, or -1: no DMA engine RAM

    [[regions]]                   # replaces the base's region at that index
    index = 1                     # 0..num_regions-1, except 7 (config space, generated);
                                  # 9 and above: "migration" or "absent" only
    kind = "ram"                  # registers | ram | pattern | sink | migration | absent
    size = 65536                  # power of two, 4 KiB..1 GiB (absent: 0 or left out;
                                  #   migration: 8 KiB..1 GiB, default 128 KiB)
    read = true                   # ram only (registers: read+write, pattern: read,
    write = true                  #   sink: write)
    mmap = true                   # ram only: the client gets the memfd
    sparse_mmap = [[0, 16384], [32768, 32768]]  # ram with mmap: [offset, size] areas,
                                  #   4 KiB aligned, inside the region, not overlapping
    ioeventfd = true              # registers only: NOTIFY served as an ioeventfd

    [[irqs]]                      # replaces the base's IRQ type at that index
    index = 2                     # 0..4: INTx, MSI, MSI-X, ERR, REQ
    count = 8                     # 0..2048
    flags = ["eventfd", "maskable"]  # eventfd | maskable | automasked | noresize;
                                  #   automasked needs maskable

At most one region is "registers" (it needs at least 4 KiB), at most one
"migration" (the 0.9.1 migration region, reference_server/migration.py; the
default device has it at index 9). At 0.9.2 a "migration" region is not served:
the device migrates through DEVICE_FEATURE instead (migration_v2.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from pytest_vfiouser.protocol import DEFAULT_PGSIZES, Command, IrqInfoFlags

from . import registers as R


class ConfigError(ValueError):
    """A device description that cannot be used; the message names the key."""


KINDS = ("registers", "ram", "pattern", "sink", "migration", "absent")
IRQ_FLAG_NAMES = {
    "eventfd": IrqInfoFlags.EVENTFD,
    "maskable": IrqInfoFlags.MASKABLE,
    "automasked": IrqInfoFlags.AUTOMASKED,
    "noresize": IrqInfoFlags.NORESIZE,
}
_PAGE = 4096


@dataclass(frozen=True)
class RegionConfig:
    index: int
    kind: str = "absent"
    size: int = 0
    read: bool = False
    write: bool = False
    mmap: bool = False
    sparse_mmap: tuple[tuple[int, int], ...] = ()
    ioeventfd: bool = False


@dataclass(frozen=True)
class IrqConfig:
    index: int
    count: int = 0
    flags: int = 0


@dataclass(frozen=True)
class ServerConfig:
    max_msg_fds: int = R.DEFAULT_MAX_MSG_FDS
    max_data_xfer_size: int = R.DEFAULT_MAX_DATA_XFER_SIZE
    max_dma_maps: int = R.DEFAULT_MAX_DMA_MAPS
    dma_reply_timeout: float = R.DEFAULT_DMA_REPLY_TIMEOUT
    migration_pgsize: int = R.DEFAULT_MIGRATION_PGSIZE
    pgsizes: int = DEFAULT_PGSIZES
    twin_socket: bool = True
    dma_between: bool = False
    close_after: str = ""  # a Command's name, or "" (client-mode scenarios)
    refuse: str = ""  # a Command's name, or ""
    refuse_errno: int = 22
    delay: str = ""  # a Command's name, or ""
    delay_seconds: float = 4.0
    raise_irqs: bool = False

    @property
    def min_pgsize(self) -> int:
        """The smallest page size of ``pgsizes``: what a 0.9.2 DMA map is aligned to."""
        return self.pgsizes & -self.pgsizes


def check_command(name: str, key: str) -> None:
    """ConfigError unless ``name`` is "" or a command's name."""
    if name and name not in Command.__members__:
        raise ConfigError(f"{key}: {name!r} is not a command (e.g. DEVICE_SET_IRQS)")


@dataclass(frozen=True)
class DeviceConfig:
    vendor_id: int = R.VENDOR_ID
    device_id: int = R.DEVICE_ID
    subsystem_vendor_id: int = R.SUBSYSTEM_VENDOR_ID
    subsystem_id: int = R.SUBSYSTEM_ID
    revision: int = R.REVISION_ID
    class_code: int = R.CLASS_CODE
    reset: bool = True
    pre_copy: bool = True
    num_regions: int = R.NUM_REGIONS
    dma_ram_region: int = R.DMA_RAM_REGION
    regions: dict[int, RegionConfig] = field(default_factory=dict)
    irqs: dict[int, IrqConfig] = field(default_factory=dict)
    server: ServerConfig = field(default_factory=ServerConfig)

    def region(self, index: int) -> RegionConfig:
        return self.regions.get(index, RegionConfig(index))

    def irq(self, index: int) -> IrqConfig:
        return self.irqs.get(index, IrqConfig(index))


def _flags(names) -> int:
    out = 0
    for n in names:
        out |= IRQ_FLAG_NAMES[n]
    return out


def default_config() -> DeviceConfig:
    rw = {"read": True, "write": True}
    regions = {
        R.REGISTERS_REGION: RegionConfig(
            R.REGISTERS_REGION, "registers", R.REGISTERS_SIZE, ioeventfd=True, **rw
        ),
        R.RAM_REGION: RegionConfig(R.RAM_REGION, "ram", R.RAM_SIZE, mmap=True, **rw),
        R.DMA_RAM_REGION: RegionConfig(
            R.DMA_RAM_REGION,
            "ram",
            R.DMA_RAM_SIZE,
            mmap=True,
            sparse_mmap=R.DMA_RAM_SPARSE_AREAS,
            **rw,
        ),
        R.READONLY_REGION: RegionConfig(R.READONLY_REGION, "pattern", R.READONLY_SIZE, read=True),
        R.WRITEONLY_REGION: RegionConfig(R.WRITEONLY_REGION, "sink", R.WRITEONLY_SIZE, write=True),
        R.MIGRATION_REGION: RegionConfig(R.MIGRATION_REGION, "migration", R.MIGRATION_SIZE, **rw),
    }
    irqs = {i: IrqConfig(i, count, _flags(names)) for i, (count, names) in R.DEFAULT_IRQS.items()}
    return DeviceConfig(regions=regions, irqs=irqs)


# ---- parsing


class _Table:
    """A TOML table being read: typed getters, and a check that no key is left over."""

    def __init__(self, data, where: str):
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: must be a table")
        self.data, self.where, self.used = data, where, set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, kind: type | tuple, default):
        self.used.add(name)
        if name not in self.data:
            return default
        value = self.data[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            want = " or ".join(k.__name__ for k in kinds)
            raise ConfigError(f"{self.key(name)}: must be {want}, got {value!r}")
        return value

    def int(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.get(name, int, default)
        if not lo <= value <= hi:
            raise ConfigError(f"{self.key(name)}: must be in [{lo:#x}, {hi:#x}], got {value:#x}")
        return value

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise ConfigError(f"{self.key(extra[0])}: unknown key")


def _power_of_two(value: int, key: str, lo: int, hi: int) -> None:
    if value < lo or value > hi or value & (value - 1):
        raise ConfigError(f"{key}: must be a power of two in [{lo:#x}, {hi:#x}], got {value:#x}")


def parse(doc: dict) -> DeviceConfig:
    """A DeviceConfig from a parsed TOML document; ConfigError names the bad key."""
    top = _Table(doc, "")
    srv = _Table(top.get("server", dict, {}), "server")
    dev = _Table(top.get("device", dict, {}), "device")
    base = dev.get("base", str, "default")
    if base not in ("default", "empty"):
        raise ConfigError(f'device.base: must be "default" or "empty", got {base!r}')
    cfg = (
        default_config()
        if base == "default"
        else DeviceConfig(regions={}, irqs={}, dma_ram_region=-1)
    )
    server = ServerConfig(
        max_msg_fds=srv.int("max_msg_fds", R.DEFAULT_MAX_MSG_FDS, 1, 253),
        max_data_xfer_size=srv.int(
            "max_data_xfer_size", R.DEFAULT_MAX_DATA_XFER_SIZE, 4096, 64 << 20
        ),
        max_dma_maps=srv.int("max_dma_maps", R.DEFAULT_MAX_DMA_MAPS, 1, 1 << 20),
        dma_reply_timeout=float(
            srv.get("dma_reply_timeout", (int, float), R.DEFAULT_DMA_REPLY_TIMEOUT)
        ),
        migration_pgsize=srv.int("migration_pgsize", R.DEFAULT_MIGRATION_PGSIZE, 1, 1 << 30),
        pgsizes=srv.int("pgsizes", DEFAULT_PGSIZES, 1, (1 << 31) - 1),
        twin_socket=srv.get("twin_socket", bool, True),
        dma_between=srv.get("dma_between", bool, False),
        close_after=srv.get("close_after", str, ""),
        refuse=srv.get("refuse", str, ""),
        refuse_errno=srv.int("refuse_errno", 22, 0, 4095),
        delay=srv.get("delay", str, ""),
        delay_seconds=float(srv.get("delay_seconds", (int, float), 4.0)),
        raise_irqs=srv.get("raise_irqs", bool, False),
    )
    for key in ("close_after", "refuse", "delay"):
        check_command(getattr(server, key), f"server.{key}")
    if not 0 <= server.delay_seconds <= 3600:
        raise ConfigError("server.delay_seconds: must be in [0, 3600] seconds")
    if not 0 < server.dma_reply_timeout <= 3600:
        raise ConfigError("server.dma_reply_timeout: must be in (0, 3600] seconds")
    _power_of_two(server.migration_pgsize, "server.migration_pgsize", 1, 1 << 30)
    _power_of_two(server.min_pgsize, "server.pgsizes (its smallest page size)", 4096, 1 << 30)
    srv.done()
    num_regions = dev.int("num_regions", cfg.num_regions, 9, 64)
    regions = dict(cfg.regions)
    for i, raw in enumerate(top.get("regions", list, [])):
        rc = _parse_region(_Table(raw, f"regions[{i}]"), num_regions)
        regions[rc.index] = rc
    if sum(r.kind == "registers" for r in regions.values()) > 1:
        raise ConfigError('regions: at most one region can be "registers"')
    if sum(r.kind == "migration" for r in regions.values()) > 1:
        raise ConfigError('regions: at most one region can be "migration"')
    irqs = dict(cfg.irqs)
    for i, raw in enumerate(top.get("irqs", list, [])):
        ic = _parse_irq(_Table(raw, f"irqs[{i}]"))
        irqs[ic.index] = ic
    dma_ram = dev.int("dma_ram_region", cfg.dma_ram_region, -1, num_regions - 1)
    if dma_ram >= 0 and (dma_ram not in regions or regions[dma_ram].kind != "ram"):
        raise ConfigError(f'device.dma_ram_region: region {dma_ram} is not a "ram" region')
    cfg = replace(
        cfg,
        server=server,
        regions=regions,
        irqs=irqs,
        num_regions=num_regions,
        dma_ram_region=dma_ram,
        reset=dev.get("reset", bool, cfg.reset),
        pre_copy=dev.get("pre_copy", bool, cfg.pre_copy),
        vendor_id=dev.int("vendor_id", cfg.vendor_id, 0, 0xFFFF),
        device_id=dev.int("device_id", cfg.device_id, 0, 0xFFFF),
        subsystem_vendor_id=dev.int("subsystem_vendor_id", cfg.subsystem_vendor_id, 0, 0xFFFF),
        subsystem_id=dev.int("subsystem_id", cfg.subsystem_id, 0, 0xFFFF),
        revision=dev.int("revision", cfg.revision, 0, 0xFF),
        class_code=dev.int("class_code", cfg.class_code, 0, 0xFFFFFF),
    )
    dev.done()
    top.done()
    return cfg


def _parse_region(t: _Table, num_regions: int) -> RegionConfig:
    if "index" not in t.data:
        raise ConfigError(f"{t.key('index')}: missing")
    index = t.int("index", 0, 0, num_regions - 1)
    if index == R.CONFIG_REGION:
        raise ConfigError(f"{t.key('index')}: 7 is the PCI config space, generated from [device]")
    kind = t.get("kind", str, None)
    if kind not in KINDS:
        raise ConfigError(f"{t.key('kind')}: must be one of {', '.join(KINDS)}, got {kind!r}")
    if index >= 9 and kind not in ("absent", "migration"):
        raise ConfigError(
            f'{t.key("kind")}: region {index} is reserved; only "migration" or "absent" fit'
        )
    if index < 9 and kind == "migration":
        raise ConfigError(
            f"{t.key('kind')}: region {index} is a standard PCI region; a "
            "migration region goes at index 9 or above"
        )
    if kind == "absent":
        t.int("size", 0, 0, 0)
        t.done()
        return RegionConfig(index)
    if kind == "migration":
        size = t.get("size", int, R.MIGRATION_SIZE)
        _power_of_two(size, t.key("size"), 2 * _PAGE, 1 << 30)
        t.done()
        return RegionConfig(index, kind, size, True, True)
    lo = R.REGISTERS_MIN_SIZE if kind == "registers" else _PAGE
    size = t.get("size", int, None)
    if size is None:
        raise ConfigError(f"{t.key('size')}: missing")
    _power_of_two(size, t.key("size"), lo, 1 << 30)
    fixed = {"registers": (True, True), "pattern": (True, False), "sink": (False, True)}
    if kind == "ram":
        read, write = t.get("read", bool, True), t.get("write", bool, True)
        mmap = t.get("mmap", bool, False)
        sparse = t.get("sparse_mmap", list, [])
        if sparse and not mmap:
            raise ConfigError(f"{t.key('sparse_mmap')}: needs mmap = true")
        areas = _parse_areas(sparse, t.key("sparse_mmap"), size)
    else:
        read, write = fixed[kind]
        mmap, areas = False, ()
    ioeventfd = t.get("ioeventfd", bool, False) if kind == "registers" else False
    t.done()
    return RegionConfig(index, kind, size, read, write, mmap, areas, ioeventfd)


def _parse_areas(raw: list, key: str, size: int) -> tuple[tuple[int, int], ...]:
    areas = []
    for i, a in enumerate(raw):
        if (
            not isinstance(a, list)
            or len(a) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in a)
        ):
            raise ConfigError(f"{key}[{i}]: must be [offset, size] integers, got {a!r}")
        off, n = a
        if n <= 0 or off < 0 or off % _PAGE or n % _PAGE or off + n > size:
            raise ConfigError(
                f"{key}[{i}]: [{off:#x}, {n:#x}] must be 4 KiB aligned, non-empty "
                f"and inside the {size:#x}-byte region"
            )
        areas.append((off, n))
    areas.sort()
    for (o1, n1), (o2, _) in zip(areas, areas[1:], strict=False):
        if o1 + n1 > o2:
            raise ConfigError(f"{key}: areas at {o1:#x} and {o2:#x} overlap")
    return tuple(areas)


def _parse_irq(t: _Table) -> IrqConfig:
    if "index" not in t.data:
        raise ConfigError(f"{t.key('index')}: missing")
    index = t.int("index", 0, 0, R.NUM_IRQS - 1)
    count = t.int("count", 0, 0, 2048)
    names = t.get("flags", list, [])
    for n in names:
        if n not in IRQ_FLAG_NAMES:
            raise ConfigError(
                f"{t.key('flags')}: unknown flag {n!r}; known: {', '.join(IRQ_FLAG_NAMES)}"
            )
    flags = _flags(names)
    if flags & IrqInfoFlags.AUTOMASKED and not flags & IrqInfoFlags.MASKABLE:
        raise ConfigError(f"{t.key('flags')}: automasked needs maskable")
    if count == 0 and flags:
        raise ConfigError(f"{t.key('flags')}: an IRQ type with count 0 has no flags")
    t.done()
    return IrqConfig(index, count, flags)


def load(path: str) -> DeviceConfig:
    """Read and validate a device description; ConfigError says what is wrong."""
    # Imported here: a server without --device does not pay for it.
    try:
        import tomllib  # noqa: PLC0415
    except ImportError:  # Python 3.10
        import tomli as tomllib  # noqa: PLC0415
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"not valid TOML: {e}") from None
    return parse(doc)
