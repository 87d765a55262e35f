"""A vfio-user client with named, switchable defects: it proves the client cases.

    python tests/defective_client.py SOCKET [--spec 0.9.2] [--defect NAME ...]

Without a defect it does what a VMM does with the reference server's default device,
by the spec: VERSION, the device's, regions' and IRQs' info, two DMA mappings (one
with a memfd, one served by DMA_READ/DMA_WRITE), register accesses, an interrupt's
eventfd, the device's DMA both ways (and one it refuses), a migration saved and resumed
(at 0.9.1 through the migration region, at 0.9.2 the STOP_COPY stream read to its end),
the unmaps; reconnected, if the server closes, with its mappings and interrupts. Each
defect breaks one obligation of the client's (DEFECTS); tests/test_client_suite.py
checks that every defect is caught by a client case, and every client case catches a
defect. The server's refusals are
not the client's concern here: it goes on whatever the replies.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import struct
import sys
import time

from pytest_vfiouser.client import Client, ConnectionClosed, ErrorReply, MalformedReply, Timeout
from pytest_vfiouser.protocol import (
    BitmapRange,
    Command,
    DeviceFeatureFlags,
    DirtyPages,
    DirtyPagesFlags,
    DmaLoggingControl,
    DmaLoggingReport,
    DmaMap,
    DmaReadReply,
    DmaUnmap,
    Feature,
    FeatureMigDeviceState,
    IrqSetFlags,
    MigDataRead,
    MigDataWrite,
    MigState,
    RegionRead,
    RegionWrite,
    VfioBitmap,
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
    "set-irqs-two-actions": "client/set_irqs/one-data-one-action",
    "set-irqs-data-without-bool": "client/set_irqs/data-as-flags-say",
    "region-write-count-off": "client/region_rw/write-count-is-data",
    "region-read-with-data": "client/region_rw/read-carries-no-data",
    "dma-map-flag-bit-2": "client/dma_map/flags-defined",
    "unmap-flag-at-0.9.2": "client/dma_unmap/flags-unused",
    "unmap-bitmap-missing": "client/dma_unmap/bitmap-follows",
    "reply-unasked": "client/header/replies-answer-requests",
    "feature-get-and-set": "client/device_feature/get-set-exclusive",
    "probe-with-data": "client/device_feature/probe-no-data",
    "feature-argsz-small": "client/device_feature/argsz-covers-reply",
    "report-page-size-3000": "client/dma_logging/report-page-size",
    "logging-ranges-short": "client/dma_logging/start-ranges-follow",
    "write-multi-unasked": "client/region_write_multi/only-when-negotiated",
    "write-multi-wr-cnt-off": "client/region_write_multi/wr-cnt-is-entries",
    "write-multi-count-16": "client/region_write_multi/counts-at-most-8",
    "dirty-flags-two": "client/dirty_pages/flags-exclusive",
    "dirty-range-missing": "client/dirty_pages/bitmap-range-follows",
    "mig-read-in-running": "client/migration_v2/data-read-in-saving-state",
    "mig-write-outside-resuming": "client/migration_v2/data-write-in-resuming",
    "mig-write-argsz-off": "client/migration_v2/data-write-argsz",
    "mig-read-argsz-small": "client/migration_v2/data-read-argsz",
    "other-major-accepted": "client/version/closes-on-other-major",
    "twin-inconsistent-kept": "client/twin_socket/aborts-on-inconsistent",
    "dma-outside-served": "client/dma_rw/outside-mappings-refused",
    "fds-limit-ignored": "client/fds/within-max-msg-fds-1",
    "xfer-limit-ignored": "client/region_rw/within-max-data-xfer-size-4096",
    "fd-mapped-refused": "client/dma_rw/fd-mapped-served",
    "between-ignored": "client/header/requests-between-answered",
    "reconnect-without-maps": "client/disconnect/reconnect-re-establishes",
    "errno-zero-success": "client/header/errno-zero-is-an-error",
    "oversized-ignored": "client/dma_rw/oversized-request-answered",
    "v1-skips-pending": "client/migration/iteration-order",
    "v1-reads-beside-data": "client/migration/data-at-data-offset",
    "v1-resume-merged": "client/migration/resume-same-order-and-size",
    "v1-no-state-re-read": "client/migration/state-re-read-after-error",
    "twin-refused-main-ignored": "client/twin_socket/refused-goes-on-main",
    "gives-up-in-a-second": "client/timeout/delayed-reply-awaited",
    "set-irqs-pipe": "client/set_irqs/eventfds-are-eventfds",
    "irqs-never-read": "client/set_irqs/interrupts-taken",
}
FD_MAP, PLAIN_MAP, REFUSED_MAP = 0x10_0000, 0x20_0000, 0x30_0000
MAP_SIZE = 0x4000
XFER_LIMIT = 8192  # its max_data_xfer_size: below a mapping, for scenario dma-too-big


class DefectiveClient(Client):
    """The raw client, its answers to the server's DMA requests with the defects."""

    defects: frozenset[str] = frozenset()
    hang = False  # --hang
    asked_twin = False  # its VERSION asked for twin-socket mode
    awaiting: int | None = None  # the command whose reply request() waits for
    maps: list  # (DmaMap, fds) the server accepted, in order
    irqs: list  # (index, flags, start, count) of eventfds the server accepted

    def request(self, command, *args, **kwargs):
        self.awaiting = command
        try:
            return super().request(command, *args, **kwargs)
        finally:
            self.awaiting = None

    def _twin_peer(self, sock):  # the twin socket's requests get the defects too
        peer = DefectiveClient(sock, self.timeout, memory=self.memory, busy_poll_ns=0)
        peer.main = self
        return peer

    def _serve_dma(self, hdr, payload, fds) -> None:
        msg_id, command = hdr[0], hdr[1]
        if "twin-refused-main-ignored" in self.defects and self.asked_twin and self.twin is None:
            return  # it waits for requests on a twin socket it does not have
        if self.hang:
            time.sleep(3600)  # stops talking, connected, until it is stopped
        if "dma-request-ignored" in self.defects and command == Command.DMA_READ:
            self.ignored = getattr(self, "ignored", 0) + 1
            if self.ignored == 1:
                return  # the first DMA_READ is never answered
        awaiting = getattr(self, "main", self).awaiting
        if "between-ignored" in self.defects and awaiting not in (None, Command.REGION_WRITE):
            return  # only a doorbell's DMA is expected
        address, count = struct.unpack_from("<QQ", payload)
        if "oversized-ignored" in self.defects and count > XFER_LIMIT:
            return  # not what it asked for: not answered
        if "fd-mapped-refused" in self.defects and FD_MAP <= address < FD_MAP + MAP_SIZE:
            self.send_bytes(encode(msg_id, command, b"", flags=0x21, error=errno.EFAULT))
            return
        refused = REFUSED_MAP <= address < REFUSED_MAP + MAP_SIZE  # not in self.memory
        if refused and "error-reply-payload" in self.defects:
            tail = struct.pack("<I", errno.EFAULT)  # the errno again, as a payload
            self.send_bytes(encode(msg_id, command, tail, flags=0x21, error=errno.EFAULT))
            return
        if "dma-outside-served" in self.defects and not _inside(self.memory, address, count):
            out = DmaReadReply(address, count, bytes(count)).pack()
            if command == Command.DMA_WRITE:
                out = struct.pack("<QQ", address, count)
            self.send_bytes(encode_reply(msg_id, command, out))  # served from nothing
            return
        if "dma-reply-wrong-count" in self.defects and command == Command.DMA_READ:
            data = self.memory.read(address, count)
            self.send_bytes(
                encode_reply(msg_id, command, DmaReadReply(address, count + 1, data).pack())
            )
            return
        super()._serve_dma(hdr, payload, fds)


def capabilities(d: frozenset[str], spec: str) -> dict:
    caps: dict = {"max_data_xfer_size": XFER_LIMIT}
    if spec == "0.9.2" and "write-multi-unasked" not in d:
        caps["write_multiple"] = True
    if spec == "0.9.1":
        caps["migration"] = {"pgsize": 4096}  # dirty page logging
    if "fds-beyond-limit" not in d:
        caps["max_msg_fds"] = 16  # else the server's limit stays the default, 1
    if spec == "0.9.2":
        caps["twin_socket"] = {"supported": True}  # a client ready for twin-socket mode
    return caps


def _map(c: DefectiveClient, dma_map: DmaMap, fds=()) -> None:
    if c.request(Command.DMA_MAP, dma_map, fds).ok:
        c.maps.append((dma_map, fds))


def _unmapped(c: DefectiveClient, address: int) -> None:
    c.maps = [(m, fds) for m, fds in c.maps if m.address != address]


def session(c: DefectiveClient, spec: str) -> None:
    d = c.defects
    caps = capabilities(d, spec)
    if "no-version-first" in d:
        c.request(Command.DEVICE_GET_INFO, struct.pack("<IIII", 16, 0, 0, 0))
    if "version-bad-json" in d:
        bad = struct.pack("<HH", 0, 0) + b'{"capabilities": {"max_msg_fds": "16"}}\0'
        c.request(Command.VERSION, bad)
    c.asked_twin = "twin_socket" in caps
    try:
        c.negotiate(capabilities=caps)
    except (ErrorReply, MalformedReply):
        return
    if c.negotiated.major != 0 and "other-major-accepted" not in d:
        return  # "If the client does not support the proposed major, it closes"
    if c.twin_refused is not None and "twin-inconsistent-kept" not in d:
        return  # "The client must abort and close the connection"
    error = 7 if "command-error-set" in d else 0
    flags = 1 << 6 if "reserved-flag" in d else 0
    info = struct.pack("<IIII", 16, 0, 9 if "info-fields-set" in d else 0, 0)
    c.send(Command.DEVICE_GET_INFO, info, flags=flags, error=error)
    try:
        c.recv_reply(timeout=1.0 if "gives-up-in-a-second" in d else None)
    except Timeout:
        return  # and closes the connection
    regions = 10 if spec == "0.9.1" else 9  # the default device's (0.9.1: migration's)
    for index in range(regions):
        argsz = 16 if "info-argsz-small" in d and index == 0 else 32
        info = struct.pack("<IIIIQQ", argsz, 0, index, 0, 0, 0)
        reply = c.request(Command.DEVICE_GET_REGION_INFO, info)
        needed = struct.unpack_from("<I", reply.payload)[0] if len(reply.payload) >= 4 else 0
        if reply.ok and needed > argsz:  # asked again, room made for its capabilities
            info = struct.pack("<IIIIQQ", needed, 0, index, 0, 0, 0)
            c.request(Command.DEVICE_GET_REGION_INFO, info)
    irq_info = []  # whether each IRQ index's info came
    for index in range(R.NUM_IRQS):
        reply = c.request(Command.DEVICE_GET_IRQ_INFO, struct.pack("<IIII", 16, 0, index, 0))
        irq_info.append(reply.error == 0 if "errno-zero-success" in d else reply.ok)
    # DMA: a memfd the server maps, memory it reaches by DMA_READ/WRITE, and one the
    # client will refuse (mapped at the server, not modelled here).
    c.map_fd = fd = c.memory.create_memfd_region(FD_MAP, MAP_SIZE)
    _map(c, DmaMap(DmaMap.SIZE, 3, 0, FD_MAP, MAP_SIZE), (fd,))
    argsz = 24 if "dma-map-argsz" in d else DmaMap.SIZE
    offset = 0x1000 if "dma-map-offset-without-fd" in d else 0
    c.memory.add(PLAIN_MAP, MAP_SIZE)
    map_flags = 3 | (4 if "dma-map-flag-bit-2" in d else 0)
    _map(c, DmaMap(argsz, map_flags, offset, PLAIN_MAP, MAP_SIZE))
    _map(c, DmaMap(DmaMap.SIZE, 3, 0, REFUSED_MAP, MAP_SIZE))
    # Registers, and a read too big for the server when the defect says so.
    write = RegionWrite(R.scratch(0), R.REGISTERS_REGION, 4, struct.pack("<I", 0x1234))
    if "region-write-count-off" in d:
        write = RegionWrite(R.scratch(0), R.REGISTERS_REGION, 8, struct.pack("<I", 0x1234))
    c.request(Command.REGION_WRITE, write.pack() if write.count == 4 else _bad_write(write))
    read = RegionRead(R.scratch(0), R.REGISTERS_REGION, 4).pack()
    c.request(Command.REGION_READ, read + (b"\0" * 4 if "region-read-with-data" in d else b""))
    if "region-read-too-big" in d:
        c.request(Command.REGION_READ, RegionRead(0, R.RAM_REGION, 2 << 20))
    if "xfer-limit-ignored" in d or _limit(c) >= 8192:  # the RAM read in one piece if it may
        c.request(Command.REGION_READ, RegionRead(0, R.RAM_REGION, 8192))
    # An interrupt's eventfd (two, past the server's fd limit, with that defect).
    efds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(2)]
    if "set-irqs-pipe" in d:  # a pipe's ends, not eventfds
        efds = list(os.pipe())
    set_flags = IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER
    if "set-irqs-two-actions" in d:
        set_flags |= IrqSetFlags.ACTION_MASK
    # Two eventfds in one message when the server takes them (or whatever it takes, with
    # a defect); one a message otherwise.
    takes = c.server_caps.max_msg_fds if c.server_caps is not None else 1
    defect = "fds-beyond-limit" in d or "fds-limit-ignored" in d
    count = 2 if defect or takes >= 2 else 1
    start = 8 if "set-irqs-beyond" in d else 0  # MSI-X has 8
    data = b"\1" * count if "set-irqs-data-without-bool" in d else b""
    argsz = 24 if "set-irqs-argsz" in d else 20 + len(data)  # the fds go as SCM_RIGHTS
    if not irq_info[R.IRQ_MSIX]:
        pass  # no interrupt it knows of
    elif c.set_irqs(R.IRQ_MSIX, set_flags, start, count, efds[:count], data, argsz=argsz).ok:
        c.irqs.append((R.IRQ_MSIX, set_flags, start, count))
    for efd in efds:
        if "irqs-never-read" not in d:  # an interrupt the server raised at once is taken
            _take(efd)
        os.close(efd)
    # The device's DMA: read the plain mapping, write it back, read the refused one.
    c.memory.write(PLAIN_MAP, b"client" * 64)
    for direction, address in ((1, PLAIN_MAP), (0, PLAIN_MAP + 0x1000), (1, REFUSED_MAP)):
        _device_dma(c, address, 256, direction)
    if "reply-unasked" in d:  # a "reply" to a request the server never made
        c.send_bytes(encode_reply(0x777, Command.DMA_READ, DmaReadReply(0, 0, b"").pack()))
    if spec == "0.9.2":
        _features(c, d)
        _migrate(c, d)
        _write_multi(c, d)
    else:
        _dirty_pages(c, d)
        _migrate_v1(c, d)
    # Unmaps: each mapping, exactly (one that never was, with that defect).
    for address in (FD_MAP, PLAIN_MAP, REFUSED_MAP):
        size = MAP_SIZE
        if "unmap-unmapped" in d and address == REFUSED_MAP:
            address += 0x100_0000
        argsz = 16 if "unmap-argsz-small" in d else DmaUnmap.ENTRY_SIZE
        flags = 1 if "unmap-flag-at-0.9.2" in d and spec == "0.9.2" else 0
        if c.request(Command.DMA_UNMAP, DmaUnmap(argsz, flags, address, size)).ok:
            _unmapped(c, address)


def reconnect(old: DefectiveClient, path: str, spec: str) -> None:
    """Connected again after the server closed the connection: the same capabilities,
    the DMA mappings and the interrupts' eventfds the old connection held (the maps
    left out with a defect), then every mapping undone."""
    d = old.defects
    with DefectiveClient.connect(path, timeout=5.0, memory=old.memory) as c:
        c.maps, c.irqs = [], []
        c.negotiate(capabilities=capabilities(d, spec))
        if "reconnect-without-maps" not in d:
            for dma_map, fds in old.maps:
                _map(c, dma_map, fds)
        for index, flags, start, count in old.irqs:
            efds = [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(count)]
            c.set_irqs(index, flags, start, count, efds)
            for efd in efds:
                os.close(efd)
        for dma_map, _ in c.maps:
            c.request(
                Command.DMA_UNMAP, DmaUnmap(DmaUnmap.ENTRY_SIZE, 0, dma_map.address, dma_map.size)
            )


def _take(efd: int) -> None:
    """Read the eventfd if it was signalled (never blocking)."""
    if select.select([efd], [], [], 0)[0]:
        try:
            os.read(efd, 8)
        except OSError:
            pass  # a pipe's write end (defect set-irqs-pipe)


def _inside(memory, address: int, count: int) -> bool:
    """[address, +count) is client memory (a region modelled for a mapping)."""
    return any(r.address <= address and address + count <= r.end for r in memory.regions)


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


def _migrate(c: Client, d: frozenset[str]) -> None:
    """STOP -> STOP_COPY, the stream read to its end (one read with the defect), STOP ->
    RESUMING, the stream written back, STOP -> RUNNING."""
    if "mig-read-in-running" in d:
        c.request(Command.MIG_DATA_READ, MigDataRead(8 + 4096, 4096))
    _set_state(c, MigState.STOP)
    _set_state(c, MigState.STOP_COPY)
    stream = []
    argsz = 8 if "mig-read-argsz-small" in d else 8 + 4096
    for _ in range(1000):
        reply = c.request(Command.MIG_DATA_READ, MigDataRead(argsz, 4096))
        if not reply.ok:
            break
        stream.append(reply.payload[8:])
        if "stop-copy-read-short" in d or len(reply.payload) - 8 < 4096:
            break
    _set_state(c, MigState.STOP)
    if "mig-write-outside-resuming" in d:
        c.request(Command.MIG_DATA_WRITE, MigDataWrite(8 + 4, 4, b"data").pack())
    _set_state(c, MigState.RESUMING)
    for data in stream:
        body = MigDataWrite(8 + len(data), len(data), data).pack()
        if "mig-write-argsz-off" in d:
            body = struct.pack("<I", 8) + body[4:]
        c.request(Command.MIG_DATA_WRITE, body)
    _set_state(c, MigState.STOP)
    _set_state(c, MigState.RUNNING)


def _features(c: Client, d: frozenset[str]) -> None:
    """PROBE and GET of MIGRATION; DMA logging of the fd mapping: START, a REPORT, STOP."""
    probe = DeviceFeatureFlags.PROBE | DeviceFeatureFlags.GET | Feature.MIGRATION
    c.device_feature(probe, b"\0" * 8 if "probe-with-data" in d else b"")
    get = DeviceFeatureFlags.GET | Feature.MIGRATION
    if "feature-get-and-set" in d:
        get |= DeviceFeatureFlags.SET
    c.device_feature(get)
    start = DmaLoggingControl.of(4096, ((FD_MAP, MAP_SIZE),)).pack()
    if "logging-ranges-short" in d:
        start = start[:-8]
    flags = DeviceFeatureFlags.SET | Feature.DMA_LOGGING_START
    argsz = 8 if "feature-argsz-small" in d else None
    c.device_feature(flags, start, argsz=argsz)
    page = 3000 if "report-page-size-3000" in d else 4096
    report = DmaLoggingReport(FD_MAP, MAP_SIZE, page).pack()
    c.device_feature(DeviceFeatureFlags.GET | Feature.DMA_LOGGING_REPORT, report)
    c.device_feature(DeviceFeatureFlags.SET | Feature.DMA_LOGGING_STOP)


def _write_multi(c: Client, d: frozenset[str]) -> None:
    writes = [(R.scratch(1), 4), (R.scratch(2), 16 if "write-multi-count-16" in d else 4)]
    body = struct.pack("<Q", len(writes) + (1 if "write-multi-wr-cnt-off" in d else 0))
    for offset, count in writes:
        body += struct.pack("<QII8s", offset, R.REGISTERS_REGION, count, b"\x42" * 8)
    c.request(Command.REGION_WRITE_MULTI, body)


def _dirty_pages(c: Client, d: frozenset[str]) -> None:
    """0.9.1: START logging, a GET_BITMAP of the fd mapping, an unmap asking for its
    bitmap (then mapped again), STOP."""
    start = DirtyPagesFlags.START | (DirtyPagesFlags.STOP if "dirty-flags-two" in d else 0)
    c.request(Command.DIRTY_PAGES, DirtyPages(8, start))
    rng = BitmapRange(FD_MAP, MAP_SIZE, VfioBitmap(4096, 8))
    get = DirtyPages(8 + 32 + 8, DirtyPagesFlags.GET_BITMAP, rng).pack()
    c.request(Command.DIRTY_PAGES, get[:8] if "dirty-range-missing" in d else get)
    bitmap = None if "unmap-bitmap-missing" in d else VfioBitmap(4096, 8)
    unmap = DmaUnmap(24 + 16 + 8, 1, FD_MAP, MAP_SIZE, bitmap)
    if c.request(Command.DMA_UNMAP, unmap).ok:  # mapped again: the unmaps below expect it
        c.request(Command.DMA_MAP, DmaMap(DmaMap.SIZE, 3, 0, FD_MAP, MAP_SIZE), (c.map_fd,))
    c.request(Command.DIRTY_PAGES, DirtyPages(8, DirtyPagesFlags.STOP))


def _v1_state(c: Client, state: int) -> bool:
    return c.region_write(R.MIGRATION_REGION, 0, struct.pack("<I", state)).ok


def _v1_field(c: Client, offset: int) -> int:
    reply = c.region_read(R.MIGRATION_REGION, offset, 8)
    return struct.unpack("<Q", reply.payload[16:24])[0] if reply.ok else 0


def _v1_iterations(c: Client, d: frozenset[str], chunks: list[bytes]) -> None:
    """The spec's loop: pending_bytes, data_offset, data_size, the data; until nothing is
    pending (in pre-copy too: the client may move to stop-and-copy at any time)."""
    for n in range(64):
        if not ("v1-skips-pending" in d and n == 1) and not _v1_field(c, 8):
            return
        offset, size = _v1_field(c, 16), _v1_field(c, 24)
        if not size:
            return
        at = offset + 8 if "v1-reads-beside-data" in d else offset
        piece, data = _limit(c), b""
        for start in range(0, size, piece):  # in pieces the server's limit allows
            reply = c.region_read(R.MIGRATION_REGION, at + start, min(piece, size - start))
            data += reply.payload[16:] if reply.ok else b""
        chunks.append(data)


def _limit(c: Client) -> int:
    return c.server_caps.max_data_xfer_size if c.server_caps is not None else 1 << 20


def _migrate_v1(c: Client, d: frozenset[str]) -> None:
    """0.9.1: save (pre-copy, stop-and-copy), a transition the table does not have
    (refused, and the state read again), then resume the chunks read on the same device."""
    chunks: list[bytes] = []
    _v1_state(c, 0b011)  # PRE_COPY
    _v1_iterations(c, d, chunks)
    _v1_state(c, 0b010)  # STOP_AND_COPY
    _v1_iterations(c, d, chunks)
    if not _v1_state(c, 0b100) and "v1-no-state-re-read" not in d:  # -> RESUMING: refused
        c.region_read(R.MIGRATION_REGION, 0, 4)  # "The client must re-read the device state"
    for state in (0b000, 0b001, 0b100):  # STOPPED, RUNNING, RESUMING
        _v1_state(c, state)
    if "v1-resume-merged" in d:
        chunks = [b"".join(chunks)]
    for chunk in chunks:
        offset, piece = _v1_field(c, 16), _limit(c)
        for start in range(0, len(chunk), piece):
            c.region_write(R.MIGRATION_REGION, offset + start, chunk[start : start + piece])
        c.region_write(R.MIGRATION_REGION, 24, struct.pack("<Q", len(chunk)))
    _v1_state(c, 0b001)  # RUNNING


def _bad_write(write: RegionWrite) -> bytes:
    """A REGION_WRITE whose count says more than the data it carries."""
    return struct.pack("<QII", write.offset, write.region, write.count) + write.data


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="defective_client", description=__doc__.splitlines()[0])
    p.add_argument("socket")
    p.add_argument("--spec", default="0.9.1")
    p.add_argument("--defect", action="append", default=[], choices=sorted(DEFECTS))
    p.add_argument("--abort", action="store_true", help="die of SIGABRT after VERSION")
    p.add_argument("--hang", action="store_true", help="stop talking at the first DMA request")
    args = p.parse_args(argv)
    DefectiveClient.defects = frozenset(args.defect)
    DefectiveClient.hang = args.hang
    with DefectiveClient.connect(args.socket, timeout=5.0) as c:
        c.maps, c.irqs = [], []
        if args.abort:
            c.negotiate()
            os.abort()  # what a C client's failed assertion does
        try:
            session(c, args.spec)
        except ConnectionClosed:
            # "The expectation is that when a client reconnects, it will re-establish IRQ
            # and client memory mappings."
            reconnect(c, args.socket, args.spec)
    return 0


if __name__ == "__main__":
    sys.exit(main())
