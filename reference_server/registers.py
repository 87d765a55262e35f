"""The reference device's numbers: ids, default layout, and BAR0's registers.

Everything here is a plain constant (or a tiny pure function) so that the
plugin's reference profile, the tests and the server agree on one source.
No imports beyond the standard library.

Identity (made up, for testing only; not allocated to anyone by PCI-SIG):
  vendor 0x5646 ("VF"), device 0x5531 ("U1"), subsystem 0x5646:0x0001,
  revision 0x01, class 0xFF0000 (unassigned / vendor specific).

Default regions (VFIO PCI indexes):
  0  BAR0  4 KiB   READ|WRITE            the register block below
  1  BAR1  64 KiB  READ|WRITE|MMAP       RAM, a memfd shared with the client
  2  BAR2  64 KiB  READ|WRITE|MMAP|CAPS  the DMA engine's RAM, sparse mmap
                                         areas [0, 16K) and [32K, 64K)
  3  BAR3  4 KiB   READ                  fixed pattern, see pattern_bytes()
  4  BAR4  4 KiB   WRITE                 write-only sink (data discarded)
  5, 6, 8          size 0, flags 0       absent (BAR5, ROM, VGA)
  7  config 256 B  READ|WRITE            PCI config space (type 0 header)
  9  MIGR  128 KiB READ|WRITE|CAPS       the 0.9.1 migration region (region type
                                         capability 3/1): migration.py documents it

BAR0 register block (little-endian; offsets in bytes; any access size and
alignment works, bytes of read-only registers ignore writes):

  0x000 ID               u32 RO  ID_VALUE
  0x004 LAYOUT_VERSION   u32 RO  LAYOUT_VERSION (this table's version)
  0x010 SCRATCH[0..7]    u32 RW  8 scratch registers, reset to 0
  0x040 IRQ_TRIGGER      u32 WO  write (irq_index << 16) | subindex: the
                                 device raises that interrupt; an index or
                                 subindex the device lacks makes the
                                 REGION_WRITE fail with EINVAL. Reads 0.
  0x080 DMA_DEV_OFFSET   u64 RW  offset in the DMA RAM region (BAR2)
  0x088 DMA_CLIENT_ADDR  u64 RW  client (DMA) address
  0x090 DMA_LENGTH       u32 RW  bytes to copy (0: nothing to do, success)
  0x094 DMA_DIRECTION    u32 RW  DMA_TO_CLIENT (0) or DMA_FROM_CLIENT (1)
  0x098 DMA_DOORBELL     u32 WO  write DMA_START (1) to run the copy; the
                                 REGION_WRITE reply comes after it finished,
                                 with the error of a failed copy (see
                                 DMA_STATUS). Other values do nothing. Reads 0.
  0x09C DMA_STATUS       u32 RO  0, or the errno of the last failed copy
  0x0A0 DMA_COUNT        u32 RO  copies completed successfully since reset
  0x100 NOTIFY           u32 WO  doorbell sub-range, also served as an
                                 ioeventfd by DEVICE_GET_REGION_IO_FDS: each
                                 write here, or each eventfd write by the
                                 client, counts one notification. Reads 0.
  0x108 NOTIFY_COUNT     u32 RO  notifications seen since reset

DMA copy errors (DMA_STATUS and the doorbell's REGION_WRITE error):
  EINVAL  device range outside the DMA RAM, or a bad DMA_DIRECTION
  EFAULT  client range not wholly inside DMA-mapped memory
  EPERM   a mapping lacks the READ (from client) or WRITE (to client) flag
  ENODEV  the device has no DMA RAM region
  other   the errno of the client's error reply to DMA_READ/DMA_WRITE;
          EIO for a malformed reply, ETIMEDOUT when it never came
"""

from __future__ import annotations

# ---- identity

VENDOR_ID = 0x5646
DEVICE_ID = 0x5531
SUBSYSTEM_VENDOR_ID = 0x5646
SUBSYSTEM_ID = 0x0001
REVISION_ID = 0x01
CLASS_CODE = 0xFF0000

# ---- default region layout

REGISTERS_REGION = 0
RAM_REGION = 1
DMA_RAM_REGION = 2
READONLY_REGION = 3
WRITEONLY_REGION = 4
CONFIG_REGION = 7
MIGRATION_REGION = 9
NUM_REGIONS = 10
NUM_IRQS = 5

REGISTERS_SIZE = 0x1000
RAM_SIZE = 0x10000
DMA_RAM_SIZE = 0x10000
DMA_RAM_SPARSE_AREAS = ((0x0000, 0x4000), (0x8000, 0x8000))
READONLY_SIZE = 0x1000
WRITEONLY_SIZE = 0x1000
CONFIG_SIZE = 256
MIGRATION_SIZE = 0x20000

# ---- default interrupts: index -> (count, flag names)

IRQ_INTX, IRQ_MSI, IRQ_MSIX, IRQ_ERR, IRQ_REQ = range(5)
DEFAULT_IRQS = {
    IRQ_INTX: (1, ("eventfd", "maskable", "automasked")),
    IRQ_MSI: (4, ("eventfd", "noresize")),
    IRQ_MSIX: (8, ("eventfd", "maskable")),
    IRQ_ERR: (1, ("eventfd",)),
    IRQ_REQ: (1, ("eventfd",)),
}

# ---- server limits (VERSION capabilities the server states)

DEFAULT_MAX_MSG_FDS = 16
DEFAULT_MAX_DATA_XFER_SIZE = 1 << 20
DEFAULT_MAX_DMA_MAPS = 65535
DEFAULT_MIGRATION_PGSIZE = 4096
DEFAULT_DMA_REPLY_TIMEOUT = 10.0  # seconds to wait for a DMA_READ/DMA_WRITE reply

# ---- BAR0 register block

REG_ID = 0x000
ID_VALUE = 0x56465553  # "SUFV" in memory: the bytes read 53 55 46 56
REG_LAYOUT_VERSION = 0x004
LAYOUT_VERSION = 1
REG_SCRATCH = 0x010
SCRATCH_COUNT = 8
REG_IRQ_TRIGGER = 0x040
REG_DMA_DEV_OFFSET = 0x080
REG_DMA_CLIENT_ADDR = 0x088
REG_DMA_LENGTH = 0x090
REG_DMA_DIRECTION = 0x094
REG_DMA_DOORBELL = 0x098
REG_DMA_STATUS = 0x09C
REG_DMA_COUNT = 0x0A0
REG_NOTIFY = 0x100
NOTIFY_SIZE = 4  # the ioeventfd sub-region is [REG_NOTIFY, REG_NOTIFY + NOTIFY_SIZE)
REG_NOTIFY_COUNT = 0x108
REGISTERS_MIN_SIZE = 0x1000

DMA_TO_CLIENT = 0  # device RAM -> client memory (DMA_WRITE)
DMA_FROM_CLIENT = 1  # client memory -> device RAM (DMA_READ)
DMA_START = 1


def scratch(n: int) -> int:
    """Offset of scratch register ``n``."""
    if not 0 <= n < SCRATCH_COUNT:
        raise ValueError(f"scratch register {n} does not exist")
    return REG_SCRATCH + 4 * n


def irq_trigger_value(index: int, subindex: int) -> int:
    """The IRQ_TRIGGER value that raises ``subindex`` of IRQ type ``index``."""
    return (index << 16) | subindex


def pattern_bytes(offset: int, count: int) -> bytes:
    """Contents of a "pattern" region (BAR3): byte i is (i * 7 + 0x5A) & 0xFF."""
    return bytes(((offset + i) * 7 + 0x5A) & 0xFF for i in range(count))
