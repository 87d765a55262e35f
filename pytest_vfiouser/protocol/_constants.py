"""Numbers named as in the vfio-user spec (0.9.1 and 0.9.2) and <linux/vfio.h>."""

import enum

HEADER_SIZE = 16

# Defaults of the VERSION capabilities when a peer does not state them.
DEFAULT_MAX_MSG_FDS = 1
DEFAULT_MAX_DATA_XFER_SIZE = 1048576
DEFAULT_MAX_DMA_MAPS = 65535  # 0.9.2
DEFAULT_PGSIZES = 4096  # 0.9.2

REVISIONS = ("0.9.1", "0.9.2")
DEFAULT_REVISION = "0.9.1"

# The optional features a device may have, as profiles and cases name them
# (``dma_engine`` and ``irq_trigger``: the device can be made to start a DMA or
# raise an interrupt, through the implementer's hooks).
FEATURES = frozenset(
    {
        "mmap",
        "sparse_mmap",
        "io_fds",
        "reset",
        "dirty_pages",
        "migration_v1",
        "migration_v2",
        "dma_logging",
        "dma_engine",
        "irq_trigger",
        "write_multiple",
        "twin_socket",
    }
)
# Features that exist in only one revision (0.9.2 dropped the migration region and
# DIRTY_PAGES, and added DEVICE_FEATURE, REGION_WRITE_MULTI and twin sockets); the
# others exist in both.
FEATURE_REVISIONS = {
    "migration_v1": frozenset({"0.9.1"}),
    "migration_v2": frozenset({"0.9.2"}),
    "dma_logging": frozenset({"0.9.2"}),
    "write_multiple": frozenset({"0.9.2"}),
    "twin_socket": frozenset({"0.9.2"}),
}


class Command(enum.IntEnum):
    VERSION = 1
    DMA_MAP = 2
    DMA_UNMAP = 3
    DEVICE_GET_INFO = 4
    DEVICE_GET_REGION_INFO = 5
    DEVICE_GET_REGION_IO_FDS = 6
    DEVICE_GET_IRQ_INFO = 7
    DEVICE_SET_IRQS = 8
    REGION_READ = 9
    REGION_WRITE = 10
    DMA_READ = 11
    DMA_WRITE = 12
    DEVICE_RESET = 13
    DIRTY_PAGES = 14  # 0.9.1 only
    REGION_WRITE_MULTI = 15  # 0.9.2
    DEVICE_FEATURE = 16  # 0.9.2
    MIG_DATA_READ = 17  # 0.9.2
    MIG_DATA_WRITE = 18  # 0.9.2


_COMMON = frozenset(range(1, 14))
COMMANDS_BY_REVISION = {
    "0.9.1": _COMMON | {Command.DIRTY_PAGES},
    "0.9.2": _COMMON
    | {
        Command.REGION_WRITE_MULTI,
        Command.DEVICE_FEATURE,
        Command.MIG_DATA_READ,
        Command.MIG_DATA_WRITE,
    },
}
SERVER_TO_CLIENT = frozenset({Command.DMA_READ, Command.DMA_WRITE})


def command_name(value: int) -> str:
    """The spec's name of a command number, or ``COMMAND_<n>`` for unknown ones."""
    try:
        return Command(value).name
    except ValueError:
        return f"COMMAND_{value}"


class MsgType(enum.IntEnum):
    """Header flags bits 0-3."""

    COMMAND = 0x0
    REPLY = 0x1


TYPE_MASK = 0xF
FLAG_NO_REPLY = 0x10
FLAG_ERROR = 0x20
HEADER_FLAGS_DEFINED = TYPE_MASK | FLAG_NO_REPLY | FLAG_ERROR


class DmaMapFlags(enum.IntFlag):
    READ = 1 << 0
    WRITE = 1 << 1


class DmaUnmapFlags(enum.IntFlag):
    GET_DIRTY_BITMAP = 1 << 0  # 0.9.1; "unused in this version" in 0.9.2 (errata 7)


class DeviceFlags(enum.IntFlag):
    RESET = 1 << 0
    PCI = 1 << 1


class RegionFlags(enum.IntFlag):
    READ = 1 << 0
    WRITE = 1 << 1
    MMAP = 1 << 2
    CAPS = 1 << 3


class PciRegion(enum.IntEnum):
    BAR0 = 0
    BAR1 = 1
    BAR2 = 2
    BAR3 = 3
    BAR4 = 4
    BAR5 = 5
    ROM = 6
    CONFIG = 7
    VGA = 8


VFIO_PCI_NUM_REGIONS = 9


class PciIrq(enum.IntEnum):
    INTX = 0
    MSI = 1
    MSIX = 2
    ERR = 3
    REQ = 4


VFIO_PCI_NUM_IRQS = 5


class RegionCapId(enum.IntEnum):
    SPARSE_MMAP = 1
    TYPE = 2


VFIO_REGION_TYPE_MIGRATION = 3
VFIO_REGION_SUBTYPE_MIGRATION = 1
REGION_INFO_SIZE = 32  # struct vfio_region_info without capabilities
CAP_HEADER_SIZE = 8


class IoFdType(enum.IntEnum):
    IOEVENTFD = 0
    IOREGIONFD = 1


class IoEventFdFlags(enum.IntFlag):
    """KVM_IOEVENTFD_FLAG_* as in <linux/kvm.h>."""

    DATAMATCH = 1 << 0
    PIO = 1 << 1
    DEASSIGN = 1 << 2
    VIRTIO_CCW_NOTIFY = 1 << 3


class IoRegionFdFlags(enum.IntFlag):
    PIO = 1 << 0
    POSTED_WRITES = 1 << 1


class IrqInfoFlags(enum.IntFlag):
    EVENTFD = 1 << 0
    MASKABLE = 1 << 1
    AUTOMASKED = 1 << 2
    NORESIZE = 1 << 3


class IrqSetFlags(enum.IntFlag):
    DATA_NONE = 1 << 0
    DATA_BOOL = 1 << 1
    DATA_EVENTFD = 1 << 2
    ACTION_MASK = 1 << 3
    ACTION_UNMASK = 1 << 4
    ACTION_TRIGGER = 1 << 5


IRQ_SET_DATA_MASK = IrqSetFlags.DATA_NONE | IrqSetFlags.DATA_BOOL | IrqSetFlags.DATA_EVENTFD
IRQ_SET_ACTION_MASK = (
    IrqSetFlags.ACTION_MASK | IrqSetFlags.ACTION_UNMASK | IrqSetFlags.ACTION_TRIGGER
)


class DirtyPagesFlags(enum.IntFlag):
    START = 1 << 0
    STOP = 1 << 1
    GET_BITMAP = 1 << 2


class DeviceFeatureFlags(enum.IntFlag):
    GET = 1 << 16
    SET = 1 << 17
    PROBE = 1 << 18


DEVICE_FEATURE_MASK = 0xFFFF


class Feature(enum.IntEnum):
    """DEVICE_FEATURE indexes (0.9.2)."""

    MIGRATION = 1
    MIG_DEVICE_STATE = 2
    DMA_LOGGING_START = 6
    DMA_LOGGING_STOP = 7
    DMA_LOGGING_REPORT = 8


class MigrationFlags(enum.IntFlag):
    """Data of VFIO_DEVICE_FEATURE_MIGRATION (0.9.2)."""

    STOP_COPY = 1 << 0
    P2P = 1 << 1
    PRE_COPY = 1 << 2
