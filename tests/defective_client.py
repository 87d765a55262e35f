"""A vfio-user client with named, switchable defects: it proves the client cases.

    python tests/defective_client.py SOCKET [--spec 0.9.2] [--defect NAME ...]

Without a defect it does what a VMM does with the reference server's default device,
by the spec: VERSION, the device's, regions' and IRQs' info, two DMA mappings (one
with a memfd, one served by DMA_READ/DMA_WRITE), register accesses, an interrupt's
eventfd, the device's DMA both ways (and one it refuses), at 0.9.2 a migration's
STOP_COPY read to the stream's end, the unmaps. Each defect breaks one obligation of
the client's (DEFECTS); tests/test_client_suite.py checks that every defect is caught
by a client case, and every client case catches a defect. The server's refusals are
not the client's concern here: it goes on whatever the replies.
"""

from __future__ import annotations

import argparse
import errno
import os
import struct
import sys

from pytest_vfiouser.client import Client
from pytest_vfiouser.protocol import (
    Command,
    DeviceFeatureFlags,
    DmaMap,
    DmaReadReply,
    DmaUnmap,
    Feature,
    FeatureMigDeviceState,
    IrqSetFlags,
    MigDataRead,
    MigState,
    RegionRead,
    Version,
    encode,
    encode_reply,
)
from reference_server import registers as R

# name -> the client case that must catch it
DEFECTS = {
    "no-version-first": "client/version/version-first",
    "version-bad-json": "client/version/proposal-well-formed",
    "reserved-flag": "client/header/flags-defined",
    "command-error-set": "client/header/command-error-zero",
    "dma-request-ignored": "client/header/server-requests-answered",
    "error-reply-payload": "client/header/error-reply-header-only",
    "fds-beyond-limit": "client/fds/within-max-msg-fds",
    "info-fields-set": "client/info/other-fields-zero",
    "info-argsz-small": "client/info/argsz-covers-reply",
    "dma-map-argsz": "client/dma_map/structure",
    "dma-map-offset-without-fd": "client/dma_map/fd-rules",
    "unmap-unmapped": "client/dma_unmap/matches-a-mapping",
    "unmap-argsz-small": "client/dma_unmap/structure",
    "region-read-too-big": "client/region_rw/within-max-data-xfer-size",
    "set-irqs-argsz": "client/set_irqs/argsz-is-payload",
    "set-irqs-beyond": "client/set_irqs/within-irq-info",
    "dma-reply-wrong-count": "client/dma_rw/replies-well-formed",
    "stop-copy-read-short": "client/migration_v2/stop-copy-read-to-end",
}
FD_MAP, PLAIN_MAP, REFUSED_MAP = 0x10_0000, 0x20_0000, 0x30_0000
MAP_SIZE = 0x4000


class DefectiveClient(Client):
    """The raw client, its answers to the server's DMA requests with the defects."""

    defects: frozenset[str] = frozenset()

    def _serve_dma(self, hdr, payload, fds) -> None:
        msg_id, command = hdr[0], hdr[1]
        if "dma-request-ignored" in self.defects and command == Command.DMA_READ:
            self.ignored = getattr(self, "ignored", 0) + 1
            if self.ignored == 1:
                return  # the first DMA_READ is never answered
        address, count = struct.unpack_from("<QQ", payload)
        refused = REFUSED_MAP <= address < REFUSED_MAP + MAP_SIZE  # not in self.memory
        if refused and "error-reply-payload" in self.defects:
            tail = struct.pack("<I", errno.EFAULT)  # the errno again, as a payload
            self.send_bytes(encode(msg_id, command, tail, flags=0x21, error=errno.EFAULT))
            return
        if "dma-reply-wrong-count" in self.defects and command == Command.DMA_READ:
            data = self.memory.read(address, count)
            self.send_bytes(
                encode_reply(msg_id, command, DmaReadReply(address, count + 1, data).pack())
            )
            return
        super()._serve_dma(hdr, payload, fds)


def session(c: DefectiveClient, spec: str) -> None:
    d = c.defects
    caps = {"max_data_xfer_size": 1 << 20}
    if "fds-beyond-limit" not in d:
        caps["max_msg_fds"] = 16  # else the server's limit stays the default, 1
    if "no-version-first" in d:
        c.request(Command.DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0))
    if "version-bad-json" in d:
        bad = struct.pack("<HH", 0, 0) + b'{"capabilities": {"max_msg_fds": "16"}}\0'
        c.request(Command.VERSION, bad)
    c.request(Command.VERSION, Version(0, 0, {"capabilities": caps}))
    error = 7 if "command-error-set" in d else 0
    flags = 1 << 6 if "reserved-flag" in d else 0
    info = struct.pack("<IIII", 16, 0, 9 if "info-fields-set" in d else 0, 0)
    c.send(Command.DEVICE_GET_INFO, info, flags=flags, error=error)
    c.recv_reply()
    for index in range(9):  # the default device's regions at either revision
        argsz = 16 if "info-argsz-small" in d and index == 0 else 32
        c.request(Command.DEVICE_GET_REGION_INFO, struct.pack("<IIIIQQ", argsz, 0, index, 0, 0, 0))
    for index in range(R.NUM_IRQS):
        c.request(Command.DEVICE_GET_IRQ_INFO, struct.pack("<IIII", 16, 0, index, 0))
    # DMA: a memfd the server maps, memory it reaches by DMA_READ/WRITE, and one the
    # client will refuse (mapped at the server, not modelled here).
    fd = c.memory.create_memfd_region(FD_MAP, MAP_SIZE)
    c.request(Command.DMA_MAP, DmaMap(DmaMap.SIZE, 3, 0, FD_MAP, MAP_SIZE), (fd,))
    argsz = 24 if "dma-map-argsz" in d else DmaMap.SIZE
    offset = 0x1000 if "dma-map-offset-without-fd" in d else 0
    c.memory.add(PLAIN_MAP, MAP_SIZE)
    c.request(Command.DMA_MAP, DmaMap(argsz, 3, offset, PLAIN_MAP, MAP_SIZE))
    c.request(Command.DMA_MAP, DmaMap(DmaMap.SIZE, 3, 0, REFUSED_MAP, MAP_SIZE))
    # Registers, and a read too big for the server when the defect says so.
    c.region_write(R.REGISTERS_REGION, R.scratch(0), struct.pack("<I", 0x1234))
    c.region_read(R.REGISTERS_REGION, R.scratch(0), 4)
    if "region-read-too-big" in d:
        c.request(Command.REGION_READ, RegionRead(0, R.RAM_REGION, 2 << 20))
    # An interrupt's eventfd (two, past the server's fd limit, with that defect).
    efds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(2)]
    set_flags = IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER
    count = 2 if "fds-beyond-limit" in d else 1
    start = 8 if "set-irqs-beyond" in d else 0  # MSI-X has 8
    argsz = 24 if "set-irqs-argsz" in d else 20  # the fds go as SCM_RIGHTS: no data
    c.set_irqs(R.IRQ_MSIX, set_flags, start, count, efds[:count], argsz=argsz)
    for efd in efds:
        os.close(efd)
    # The device's DMA: read the plain mapping, write it back, read the refused one.
    c.memory.write(PLAIN_MAP, b"client" * 64)
    for direction, address in ((1, PLAIN_MAP), (0, PLAIN_MAP + 0x1000), (1, REFUSED_MAP)):
        _device_dma(c, address, 256, direction)
    if spec == "0.9.2":
        _migrate(c, short="stop-copy-read-short" in d)
    # Unmaps: each mapping, exactly (one that never was, with that defect).
    for address in (FD_MAP, PLAIN_MAP, REFUSED_MAP):
        size = MAP_SIZE
        if "unmap-unmapped" in d and address == REFUSED_MAP:
            address += 0x100_0000
        argsz = 16 if "unmap-argsz-small" in d else DmaUnmap.ENTRY_SIZE
        c.request(Command.DMA_UNMAP, DmaUnmap(argsz, 0, address, size))


def _device_dma(c: Client, address: int, length: int, direction: int) -> None:
    """Program BAR0's DMA engine and ring its doorbell (the reference server's device)."""
    regs = R.REGISTERS_REGION
    for offset, data in (
        (R.REG_DMA_DEV_OFFSET, struct.pack("<Q", 0)),
        (R.REG_DMA_CLIENT_ADDR, struct.pack("<Q", address)),
        (R.REG_DMA_LENGTH, struct.pack("<I", length)),
        (R.REG_DMA_DIRECTION, struct.pack("<I", direction)),
        (R.REG_DMA_DOORBELL, struct.pack("<I", R.DMA_START)),
    ):
        c.region_write(regs, offset, data)


def _set_state(c: Client, state: int) -> None:
    flags = DeviceFeatureFlags.SET | Feature.MIG_DEVICE_STATE
    c.device_feature(flags, FeatureMigDeviceState(state).pack())


def _migrate(c: Client, short: bool) -> None:
    """STOP -> STOP_COPY, the stream read to its end (one read with the defect), STOP ->
    RUNNING."""
    _set_state(c, MigState.STOP)
    _set_state(c, MigState.STOP_COPY)
    for _ in range(1000):
        reply = c.request(Command.MIG_DATA_READ, MigDataRead(8 + 4096, 4096))
        if short or not reply.ok or len(reply.payload) - 8 < 4096:
            break
    _set_state(c, MigState.STOP)
    _set_state(c, MigState.RUNNING)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="defective_client", description=__doc__.splitlines()[0])
    p.add_argument("socket")
    p.add_argument("--spec", default="0.9.1")
    p.add_argument("--defect", action="append", default=[], choices=sorted(DEFECTS))
    args = p.parse_args(argv)
    DefectiveClient.defects = frozenset(args.defect)
    with DefectiveClient.connect(args.socket, timeout=5.0) as c:
        session(c, args.spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
