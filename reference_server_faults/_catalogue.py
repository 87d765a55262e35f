"""The fault catalogue: each fault's name, description, and where the suite must show it.

``detect``: the sections and verdicts expected to show the fault. Every fault
must be detected by some case, and every case must detect some fault
(tests/test_faults.py, tests/kill_matrix.py).

``scope``: the sections a run under the fault is limited to. Process-level
faults (daemonizing, signals, command-line options, exiting after a client)
change nothing a message exchange sees, but would cost a server restart per
case in a full run; their runs cover the sections that start servers
themselves. Without a scope, a run covers the sections of ``detect`` and
``also``: the sections where the fault must show, and those whose cases it is
there to kill although it need not show in every one of them. A whole-suite
run under every fault would cost the project's tests minutes for kills that
prove nothing more (every case still has to kill a fault in its runs).

``option``: the socket argument of the server's command line in the run
(``--fd={fd}`` for a server that does not take --socket-path).

``spec``: the revision the fault's run serves and tests (--spec of the server,
--vfu-spec of the suite): 0.9.2 for the faults of what only 0.9.2 has.

``by_judge``: the fault is caught by a check the suite makes of every case's
conversation (fds where no message allows them), not by a case of its own: it
proves that check, and its kills do not count as a case's (every case must
still kill some other fault).

``FAULTS`` holds the faults enabled at startup (``enable``); the overlay's
handlers look only there.
"""

from __future__ import annotations

import faulthandler
import os
import signal
from dataclasses import dataclass

FAIL, CRASH, HANG, NON_STRICT, INFORMATIONAL = (
    "FAIL",
    "CRASH",
    "HANG",
    "NON-STRICT",
    "INFORMATIONAL",
)

# The faults given with --fault (filled once at startup by enable(); a set object
# that never changes identity, so ``from ._catalogue import FAULTS`` sees it).
FAULTS: set[str] = set()


@dataclass(frozen=True)
class Fault:
    name: str
    description: str  # one line
    detect: tuple[tuple[str, tuple[str, ...]], ...]  # (section, verdicts) that must show it
    scope: tuple[str, ...] = ()  # sections a run is limited to; () = those below
    option: str = "--socket-path={socket}"
    by_judge: bool = False  # caught by the suite's check of every case, not a case's own
    also: tuple[str, ...] = ()  # sections a run covers beside those of ``detect``
    spec: str = "0.9.1"  # the revision its run serves and tests

    @property
    def runs(self) -> tuple[str, ...]:
        """The sections a run under the fault covers."""
        return self.scope or tuple(dict.fromkeys([*(s for s, _ in self.detect), *self.also]))

    def line(self) -> str:
        where = "; ".join(f"{s} {'/'.join(v)}" for s, v in self.detect)
        scope = f" [run at {self.spec}: {', '.join(self.runs)}]"
        judge = " [every case: the suite's own check]" if self.by_judge else ""
        return f"{self.name}: {self.description} (detected by: {where}){scope}{judge}"


def _f(
    name: str,
    description: str,
    *detect: tuple[str, str],
    scope: tuple[str, ...] = (),
    option: str = "--socket-path={socket}",
    by_judge: bool = False,
    also: tuple[str, ...] = (),
    spec: str = "0.9.1",
) -> Fault:
    groups: dict[str, list[str]] = {}
    for section, verdict in detect:
        groups.setdefault(section, []).append(verdict)
    detected = tuple((s, tuple(v)) for s, v in groups.items())
    return Fault(name, description, detected, scope, option, by_judge, also, spec)


_CATALOGUE = (
    # ---- header and framing (connection.py)
    _f(
        "error-reply-payload",
        "error replies carry the errno as a 4-byte payload (msg_size 20)",
        ("header", FAIL),
        also=("dirty_pages", "dma", "region_io_fds", "region_rw", "version"),
    ),
    _f(
        "error-reply-zeroed-header",
        "error replies are built from a zeroed header: only msg_id and the Error bit are set "
        "(Type 0 = command, command 0, error 0)",
        ("header", FAIL),
    ),
    _f(
        "unsolicited-fds",
        "every message the server sends without fds carries an eventfd all the same (replies, "
        "error replies, its DMA_READ/DMA_WRITE requests): one leaked into the client each time",
        ("header", FAIL),
        ("device_info", FAIL),
        ("dma", FAIL),
        by_judge=True,
    ),
    _f(
        "msg-id-8bit",
        "replies echo only the low byte of the msg_id (kept in a u8)",
        ("header", FAIL),
    ),
    _f(
        "error-field-negative",
        "the error field of error replies holds -errno (as a u32), kernel style",
        ("header", FAIL),
    ),
    _f(
        "header-flags-misread",
        "only the Error bit of the flags is looked at: No_reply and the Type bits are ignored, "
        "and a command with the Error bit or a nonzero error field is taken for an error reply "
        "and dropped",
        ("header", FAIL),
        ("header", NON_STRICT),
    ),
    _f(
        "split-message-single-recv",
        "the header and then the body are each read with a single recv(): a message split "
        "across writes is a short read and the connection is closed",
        ("header", NON_STRICT),
    ),
    _f(
        "dispatch-table-wrong",
        "commands index a table without a bounds check (a number past its end: SIGSEGV), "
        "DMA_READ/DMA_WRITE sent by the client are served, GET_REGION_IO_FDS is missing (ENOSYS)",
        ("header", CRASH),
        ("header", FAIL),
        ("region_io_fds", FAIL),
    ),
    _f(
        "framing-unchecked",
        "msg_size is trusted: below 16 the body length underflows (SIGSEGV), above the limit "
        "the allocation fails (abort); EOF in the middle of a message or of a DMA exchange "
        "trips an assertion (abort)",
        ("header", CRASH),
        ("disconnect", CRASH),
    ),
    # ---- VERSION (negotiation.py, commands.version)
    _f(
        "version-unchecked",
        "VERSION answers the server's own version 1.1 whatever is proposed, any major accepted",
        ("version", FAIL),
    ),
    _f(
        "caps-not-negotiated",
        "the reply's capabilities are the proposal overwritten with the server's own table: "
        "capabilities not proposed are stated, unknown ones echoed, migration pgsize is the "
        "server's own 64 KiB",
        ("version", FAIL),
        ("version", NON_STRICT),
    ),
    _f(
        "version-data-required",
        "VERSION without version data, or without capabilities, is refused (EINVAL)",
        ("version", FAIL),
    ),
    _f(
        "version-json-truncated",
        "the reply's version data is built in a 72-byte buffer: longer JSON is cut short "
        "(invalid, no NUL)",
        ("version", FAIL),
    ),
    _f(
        "version-handling-lax",
        "VERSION is optional: commands before it are served, a second VERSION renegotiates, "
        "version data that does not parse is taken as no capabilities",
        ("version", NON_STRICT),
    ),
    _f(
        "max-msg-fds-ignored",
        "max_msg_fds is ignored both ways: replies carry fds whatever the client's limit, and "
        "the server's own stated limit (4) is not enforced",
        ("version", FAIL),
        ("version", NON_STRICT),
    ),
    _f(
        "refused-fds-leaked",
        "the fds of a request refused for their number (above max_msg_fds, or not one per "
        "SET_IRQS sub-index) are never closed",
        ("version", FAIL),
        ("set_irqs", NON_STRICT),
    ),
    _f(
        "migration-cap-missing",
        "VERSION never answers the migration capability, although the device has a migration "
        "region",
        ("region_info", NON_STRICT),
        ("migration", FAIL),
    ),
    # ---- message sizes (commands.py, dirty.py)
    _f(
        "reply-argsz-wrong",
        "a reply's argsz counts the bytes sent after the argsz field (sent - 4), not the size "
        "of the full reply",
        ("argsz", FAIL),
        ("device_info", FAIL),
        ("irq_info", FAIL),
    ),
    _f(
        "argsz-ignored",
        "the request's argsz is not looked at: every reply is the full reply (capabilities "
        "not truncated), argsz below the fixed structure accepted",
        ("argsz", FAIL),
        ("argsz", NON_STRICT),
        also=("region_io_fds",),
    ),
    _f(
        "unmap-large-argsz-disconnect",
        "a DMA_UNMAP whose argsz is larger than the 24-byte entry is taken as a protocol "
        "error: the connection is closed",
        ("argsz", FAIL),
        ("dma", FAIL),
    ),
    _f(
        "empty-payload-reads-next",
        "a GET_IRQ_INFO without payload reads its 16 bytes from the stream: the next message "
        "is consumed",
        ("argsz", HANG),
    ),
    _f(
        "payload-size-unchecked",
        "payload sizes are not checked: short payloads are zero-padded, long ones cut, a "
        "REGION_WRITE's data taken as count bytes",
        ("argsz", NON_STRICT),
    ),
    # ---- DMA_MAP / DMA_UNMAP (commands.py, dma_map.py)
    _f("dma-map-reply-payload", "the DMA_MAP reply echoes the 32-byte request", ("dma", FAIL)),
    _f(
        "dma-table-keyed-by-address",
        "the DMA map table is keyed by start address: overlapping maps are accepted (an "
        "identical one replaces the old), DMA_UNMAP matches the address only",
        ("dma", FAIL),
    ),
    _f(
        "unmap-keeps-mapping",
        "DMA_UNMAP replies success but leaves the mapping in place",
        ("dma", FAIL),
        ("dma_rw", FAIL),
        also=("reset",),
    ),
    _f(
        "dma-map-pgsizes-unchecked",
        "at 0.9.2 a DMA_MAP not aligned to the smallest page size of the server's pgsizes "
        "is accepted",
        ("dma", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "unmap-flags-0-9-1-reply",
        "at 0.9.2 a DMA_UNMAP with flag bit 0 unmaps and answers in 0.9.1's form: the entry "
        "and an (empty) VFIO bitmap",
        ("dma", FAIL),
        spec="0.9.2",
    ),
    _f(
        "max-dma-maps-short",
        "the DMA map table holds one window less than the max_dma_maps the server states",
        ("dma", FAIL),
        spec="0.9.2",
    ),
    _f(
        "max-dma-maps-unenforced",
        "the DMA map table holds one window more than the max_dma_maps the server states",
        ("dma", NON_STRICT),
        spec="0.9.2",
    ),
    # ---- twin-socket mode, 0.9.2 (negotiation.py, twin.py, connection.py)
    _f(
        "twin-offered-unasked",
        "twin-socket mode is enabled for any client whose VERSION has a twin_socket object, "
        "supported or not",
        ("twin_socket", FAIL),
        spec="0.9.2",
    ),
    _f(
        "twin-never-enabled",
        "twin-socket mode is never enabled, though the server sends DMA_READ/DMA_WRITE",
        ("twin_socket", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "twin-ignores-max-msg-fds",
        "the twin socket's fd goes with the VERSION reply even to a client that takes no fds "
        "(max_msg_fds 0)",
        ("twin_socket", FAIL),
        spec="0.9.2",
    ),
    _f(
        "twin-fd-index-off",
        "twin_socket.fd_index counts from 1: it names no fd of the reply",
        ("twin_socket", FAIL),
        spec="0.9.2",
    ),
    _f(
        "twin-supported-string",
        'the reply\'s twin_socket.supported is the string "true", not a boolean',
        ("twin_socket", FAIL),
        spec="0.9.2",
    ),
    _f(
        "twin-not-a-socket",
        "the fd passed as the twin socket is an eventfd",
        ("twin_socket", FAIL),
        spec="0.9.2",
    ),
    _f(
        "twin-listening-socket",
        "the fd passed as the twin socket is a listening socket, not the client end of a "
        "fresh socket pair",
        ("twin_socket", FAIL),
        spec="0.9.2",
    ),
    _f(
        "twin-requests-on-main",
        "in twin-socket mode DMA_READ/DMA_WRITE and their replies still travel on the main socket",
        ("twin_socket", FAIL),
        spec="0.9.2",
    ),
    _f(
        "twin-requests-too-big",
        "in twin-socket mode DMA_READ/DMA_WRITE are split by the server's max_data_xfer_size, "
        "not the client's",
        ("twin_socket", FAIL),
        spec="0.9.2",
    ),
    _f(
        "twin-stalls-main",
        "while a DMA request waits for its reply on the twin socket, nothing on the main "
        "socket is read (until the server's DMA reply timeout)",
        ("twin_socket", HANG),
        spec="0.9.2",
    ),
    _f(
        "twin-replies-on-twin",
        "in twin-socket mode the replies to DEVICE_GET_IRQ_INFO go out on the twin socket",
        ("twin_socket", HANG),
        spec="0.9.2",
    ),
    # ---- device info, reset (commands.py, device.py)
    _f(
        "device-info-wrong",
        "DEVICE_GET_INFO reports flags 0 (no PCI, no RESET) and num_regions 6 (the BARs only)",
        ("device_info", FAIL),
        also=("region_info",),
    ),
    _f(
        "reset-noop",
        "DEVICE_RESET does nothing and replies with a 4-byte status payload",
        ("reset", FAIL),
        ("device_info", FAIL),
    ),
    # ---- region info and io fds (commands.py)
    _f(
        "reply-index-zero",
        "the index of GET_REGION_INFO, GET_REGION_IO_FDS, GET_IRQ_INFO replies and the region "
        "of REGION_READ/WRITE replies are left 0",
        ("region_info", FAIL),
        ("irq_info", FAIL),
        ("region_rw", FAIL),
    ),
    _f(
        "region-caps-wrong",
        "region capabilities are built wrong: CAPS set on every region, sparse mmap areas "
        "overlapping and past the end, the type capability at version 0",
        ("region_info", FAIL),
        ("migration", FAIL),
    ),
    _f(
        "small-argsz-keeps-caps",
        "a GET_REGION_INFO reply too small for the capabilities keeps CAPS with cap_offset 0 "
        "(as the kernel does; QEMU's vfio-user client refuses it)",
        ("region_info", INFORMATIONAL),
        scope=("region_info",),
    ),
    _f(
        "small-argsz-mmap-no-fd",
        "a GET_REGION_INFO reply too small for the capabilities of an MMAP region carries "
        "no fd (as libvfio-user's: its fd comes with the sparse mmap capability)",
        ("region_info", INFORMATIONAL),
        scope=("region_info",),
    ),
    _f(
        "mmap-offset-unaligned",
        "the mmap offset of MMAP regions is their byte offset in the device file (0x40), not "
        "page-aligned",
        ("region_info", FAIL),
    ),
    _f(
        "reply-fds-missing",
        "replies that carry fds are sent without them: an MMAP region without its fd, io fd "
        "sub-regions without theirs",
        ("region_info", FAIL),
        ("region_io_fds", FAIL),
    ),
    _f(
        "index-wraps",
        "region and IRQ indexes are taken modulo the device's count instead of being checked",
        ("region_info", FAIL),
        ("region_rw", FAIL),
        ("irq_info", FAIL),
        ("set_irqs", FAIL),
    ),
    _f(
        "flags-internal-bit",
        "an internal bit (1 << 31) leaks into the flags of GET_REGION_INFO, GET_IRQ_INFO and "
        "GET_REGION_IO_FDS replies",
        ("irq_info", FAIL),
        ("region_info", FAIL),
        ("region_io_fds", FAIL),
    ),
    _f(
        "io-fds-none",
        "the io fd sub-regions are never registered: GET_REGION_IO_FDS answers every region "
        "with no sub-region (the device's profile says it has io fds)",
        ("region_io_fds", FAIL),
    ),
    _f(
        "ioeventfd-not-eventfd",
        "the ioeventfd sub-region is served with a pipe instead of an eventfd",
        ("region_io_fds", FAIL),
    ),
    _f(
        "must-be-zero-unchecked",
        "request fields that must be zero (flags, count, ...) are not checked",
        ("region_io_fds", NON_STRICT),
    ),
    # ---- region access (commands.py)
    _f(
        "region-access-64bit",
        "the register block (BAR0) is accessed in 64-bit words: REGION_READ data is padded to "
        "whole 8-byte words, REGION_WRITE stores only its first 8 bytes",
        ("region_rw", FAIL),
        ("header", FAIL),
    ),
    _f(
        "region-access-unchecked",
        "REGION_READ/WRITE check only the region index: count above max_data_xfer_size, "
        "accesses past the region's end, READ/WRITE flags are not checked",
        ("region_rw", FAIL),
        ("region_rw", NON_STRICT),
    ),
    _f(
        "short-region-access-hang",
        "a REGION_READ/WRITE shorter than its 16-byte head makes the server wait forever for "
        "the rest",
        ("region_rw", HANG),
    ),
    _f(
        "xfer-limit-overstated",
        "the server states max_data_xfer_size 65536 but refuses counts above 4096 (its buffer)",
        ("region_rw", FAIL),
    ),
    # ---- interrupts (irqs.py, commands.py)
    _f(
        "set-irqs-minimal",
        "SET_IRQS only assigns: nothing is validated (flag combinations, argsz, DATA_BOOL "
        "length, MASKABLE), de-assign and disable are ignored, the reply echoes the request's "
        "head",
        ("set_irqs", FAIL),
        ("set_irqs", NON_STRICT),
    ),
    _f(
        "intx-not-signalled",
        "INTx (IRQ index 0) interrupts are counted but their eventfd is never written",
        ("set_irqs", FAIL),
    ),
    _f(
        "unexpected-fds-abort",
        "fds that come with a SET_IRQS without DATA_EVENTFD trip an assertion (abort)",
        ("set_irqs", CRASH),
    ),
    # ---- the server's DMA (dma_engine.py, dma_map.py)
    _f(
        "dma-access-wrong",
        "DMA_READ/DMA_WRITE carry the offset into the mapping instead of the client address, "
        "fd-backed mappings are mapped MAP_PRIVATE",
        ("dma_rw", FAIL),
        also=("reset",),
    ),
    _f(
        "dma-too-big",
        "DMA_READ/DMA_WRITE are split by the server's max_data_xfer_size, not the client's "
        "(with [server] dma_between, each new mapping is read once more, that big)",
        ("dma_rw", FAIL),
    ),
    # ---- disconnect (connection.py, device.py)
    _f(
        "disconnect-cleanup-wrong",
        "on disconnect the server resets the device instead of releasing the client: its DMA "
        "maps (and their fds) and IRQ eventfds stay",
        ("disconnect", NON_STRICT),
    ),
    # ---- migration (migration.py, device.py)
    _f(
        "migration-starts-stopped",
        "device_state starts at 0 (stopped), not running",
        ("migration", FAIL),
    ),
    _f(
        "failed-transition-changes-state",
        "device_state is stored before the transition is checked: a refused transition still "
        "changes the state",
        ("migration", FAIL),
    ),
    _f(
        "migration-info-fields-wrong",
        "the migration info's field table is wrong: pending_bytes and data_offset are "
        "writable, reserved refused, each read of pending_bytes starts a new chunk",
        ("migration", FAIL),
    ),
    _f(
        "data-offset-past-region",
        "data_offset points 2 KiB before the region's end: the data on offer runs past it",
        ("migration", FAIL),
    ),
    _f(
        "precopy-to-stopcopy-needs-drain",
        "pre-copy -> stop-and-copy is refused (EBUSY) while a chunk is on offer",
        ("migration", FAIL),
    ),
    _f(
        "resume-data-lost",
        "the destination keeps only the first 64 KiB of the device state (a fixed buffer), "
        "checks no chunk and resumes with what it has",
        ("migration", FAIL),
        ("migration", NON_STRICT),
    ),
    # ---- dirty page logging (dirty.py, dma_engine.py)
    _f(
        "dirty-logging-always-on",
        "dirty logging is always on: START/STOP do nothing (replying with the request), flags "
        "are not validated, bitmaps are served before START",
        ("dirty_pages", FAIL),
        ("dma", NON_STRICT),
    ),
    _f(
        "dirty-bitmap-wrong",
        "dirty bitmaps are sized in bytes, not u64s, and writes through fd-backed mappings "
        "are not logged",
        ("dirty_pages", FAIL),
        ("dma", FAIL),
    ),
    # ---- 0.9.2: DEVICE_FEATURE (device_feature.py)
    _f(
        "feature-get-argsz-echoed",
        "a GET's reply keeps the request's argsz instead of the size of the reply",
        ("device_feature", FAIL),
        ("migration_v2", FAIL),
        ("dma_logging", FAIL),
        spec="0.9.2",
    ),
    _f(
        "feature-probe-unchecked",
        "a PROBE succeeds whatever the feature and the operations it names",
        ("device_feature", FAIL),
        ("device_feature", NON_STRICT),
        also=("dma_logging",),
        spec="0.9.2",
    ),
    _f(
        "feature-get-set-as-set",
        "GET and SET together without PROBE are not refused: served as a SET",
        ("device_feature", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "feature-no-op-as-get",
        "a DEVICE_FEATURE with none of GET, SET and PROBE is served as a GET",
        ("device_feature", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "feature-get-small-argsz-full-data",
        "a GET's argsz is not looked at: the whole data is sent however little room it gives",
        ("device_feature", FAIL),
        spec="0.9.2",
    ),
    _f(
        "feature-probe-reply-data",
        "a PROBE of GET is answered like the GET: the feature's data follows the request",
        ("device_feature", FAIL),
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    # ---- 0.9.2: migration (migration_v2.py, device_feature.py)
    _f(
        "migration-flags-no-stop-copy",
        "VFIO_DEVICE_FEATURE_MIGRATION's flags say PRE_COPY only: STOP_COPY, which every "
        "device has, is left implied",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "state-get-always-running",
        "GET of MIG_DEVICE_STATE always reads RUNNING (filled from the device's run state, "
        "not its migration state)",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "set-reply-previous-state",
        "the reply to a SET of MIG_DEVICE_STATE carries the state the device left, not the "
        "request's",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "direct-arcs-only",
        "only the direct arcs are served: a SET to a state that needs several arcs is refused "
        "(EINVAL)",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "stop-copy-to-pre-copy-allowed",
        "STOP_COPY -> PRE_COPY is taken as a direct arc (a new pre-copy session begins)",
        ("migration_v2", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "set-error-accepted",
        "a SET of device_state ERROR is accepted: the device goes to ERROR",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "p2p-states-as-twins",
        "the P2P states are accepted as their twins (RUNNING_P2P as RUNNING, PRE_COPY_P2P as "
        "PRE_COPY)",
        ("migration_v2", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "reset-keeps-migration-state",
        "DEVICE_RESET resets the regions and interrupts but leaves the migration state, ERROR "
        "included",
        ("migration_v2", FAIL),
        ("migration_v2", INFORMATIONAL),
        spec="0.9.2",
    ),
    _f(
        "error-not-sticky",
        "a SET in ERROR is served as if the device were in STOP",
        ("migration_v2", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "data-read-argsz-echoed",
        "a MIG_DATA_READ reply keeps the request's argsz: a short read's says 8 + the size asked",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "data-read-any-state",
        "MIG_DATA_READ is served in any state: outside PRE_COPY and STOP_COPY it returns no data",
        ("migration_v2", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "stop-copy-stream-restarts",
        "in STOP_COPY the end of the stream is not remembered: a read after the short read "
        "saves the device again and returns that",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "stop-copy-new-stream",
        "PRE_COPY -> STOP_COPY starts a new stream: unread pre-copy data is dropped and the "
        "final record is numbered 0 again",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "data-write-any-state",
        "MIG_DATA_WRITE is taken in any state (buffered; entering RESUMING drops it)",
        ("migration_v2", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "data-write-reply-payload",
        "the MIG_DATA_WRITE reply echoes the request's argsz and size",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "resume-loads-nothing",
        "RESUMING -> STOP accepts whatever was written and loads nothing: the destination "
        "keeps its own state",
        ("migration_v2", FAIL),
        ("migration_v2", NON_STRICT),
        spec="0.9.2",
    ),
    # ---- 0.9.2: DMA logging (device_feature.py, dma_engine.py, dma_map.py)
    _f(
        "start-reply-page-size-zero",
        "DMA_LOGGING_START's reply has page_size 0 unless the device changed the page size",
        ("dma_logging", FAIL),
        spec="0.9.2",
    ),
    _f(
        "stop-reply-empty",
        "DMA_LOGGING_STOP replies with no payload",
        ("dma_logging", FAIL),
        spec="0.9.2",
    ),
    _f(
        "report-head-zeroed",
        "a report's data is its bitmap at offset 24 of a zeroed buffer: iova, length and "
        "page_size are not given back",
        ("dma_logging", FAIL),
        spec="0.9.2",
    ),
    _f(
        "report-bits-past-range",
        "a report's bitmap is filled for its whole u64s: pages written past the range asked "
        "for are set",
        ("dma_logging", FAIL),
        spec="0.9.2",
    ),
    _f(
        "dma-log-last-page-missed",
        "a DMA write marks length // page size pages from its first one: a write that crosses "
        "one more page boundary misses its last page",
        ("dma_logging", FAIL),
        spec="0.9.2",
    ),
    _f(
        "dma-log-reads",
        "DMA reads of client memory are logged as well as writes",
        ("dma_logging", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "report-before-start-zeros",
        "DMA_LOGGING_REPORT before DMA_LOGGING_START is served: an empty bitmap",
        ("dma_logging", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "report-page-size-unchecked",
        "a report's page_size is not checked to be a power of two: pages of any size are counted",
        ("dma_logging", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "probe-logging-stop-unsupported",
        "a PROBE of DMA_LOGGING_STOP fails (ENOTSUP): only START is said to be probed",
        ("dma_logging", FAIL),
        spec="0.9.2",
    ),
    _f(
        "start-no-ranges-logs-nothing",
        "DMA_LOGGING_START with num_ranges 0 logs no write (read as no range at all)",
        ("dma_logging", FAIL),
        spec="0.9.2",
    ),
    _f(
        "report-page-size-ignored",
        "a report's bits are the log's own pages whatever the report's page_size",
        ("dma_logging", FAIL),
        spec="0.9.2",
    ),
    _f(
        "stop-keeps-logging",
        "DMA_LOGGING_STOP is answered but logging goes on (REPORT served, START busy)",
        ("dma_logging", FAIL),
        ("dma_logging", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "report-empty-range-accepted",
        "a DMA_LOGGING_REPORT of length 0 is served with an empty bitmap",
        ("dma_logging", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "start-page-size-hint-echoed",
        "DMA_LOGGING_START's reply echoes the page size hint, not the page size the device "
        "selected (3000 when asked for 3000, logging at 4096)",
        ("dma_logging", INFORMATIONAL),
        spec="0.9.2",
    ),
    _f(
        "state-set-short-data-padded",
        "a SET of MIG_DEVICE_STATE with data under 8 bytes is taken, the missing bytes zeros",
        ("device_feature", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "feature-argsz-below-head-taken",
        "a DEVICE_FEATURE argsz below the 8-byte header is read as 8, not refused",
        ("device_feature", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "feature-undefined-flags-ignored",
        "undefined DEVICE_FEATURE flag bits (19-31) are ignored, not refused",
        ("device_feature", NON_STRICT),
        spec="0.9.2",
    ),
    # ---- 0.9.2: migration v2 streams and sessions (migration_v2.py)
    _f(
        "data-read-block-tail-lost",
        "a MIG_DATA_READ of fewer than 512 bytes in a saving state loses the rest of its "
        "512-byte block: small reads give a stream with holes",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "data-write-small-dropped",
        "a MIG_DATA_WRITE of fewer than 512 bytes in RESUMING is accepted and dropped",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "data-read-zero-reads-all",
        "a MIG_DATA_READ of size 0 returns all the data left (the reply goes past argsz)",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "data-write-zero-restarts",
        "a MIG_DATA_WRITE of size 0 in RESUMING drops what was written so far",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "set-same-state-restarts",
        "a SET to the current state runs the arc into it again: in PRE_COPY or STOP_COPY a "
        "new stream starts and unread data goes",
        ("migration_v2", INFORMATIONAL),
        spec="0.9.2",
    ),
    _f(
        "resume-empty-refused",
        "RESUMING -> STOP with no MIG_DATA_WRITE at all is refused (EINVAL: incomplete)",
        ("migration_v2", INFORMATIONAL),
        spec="0.9.2",
    ),
    _f(
        "resume-data-kept",
        "the data of a completed resume stays buffered and STOP -> RESUMING does not drop it: "
        "the next resume sees two streams",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "saving-session-continues",
        "PRE_COPY -> RUNNING and STOP_COPY -> STOP keep the unread data, and the next saving "
        "session appends to it",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    _f(
        "stop-copy-drops-unread",
        "PRE_COPY -> STOP_COPY drops the pre-copy data not read yet (the records go on being "
        "numbered: the stream has a hole)",
        ("migration_v2", FAIL),
        spec="0.9.2",
    ),
    # ---- 0.9.2: REGION_WRITE_MULTI (commands.py)
    _f(
        "write-multi-last-only",
        "REGION_WRITE_MULTI reads its writes into one slot: only the last is applied, and the "
        "reply says 1",
        ("region_write_multi", FAIL),
        spec="0.9.2",
    ),
    _f(
        "write-multi-count-unchecked",
        "a REGION_WRITE_MULTI write's count is not checked against 8: above it, the 8 data "
        "bytes there are are written",
        ("region_write_multi", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "write-multi-unnegotiated",
        "REGION_WRITE_MULTI is served on a connection whose VERSION did not say write_multiple",
        ("region_write_multi", NON_STRICT),
        spec="0.9.2",
    ),
    _f(
        "write-multi-partial-claims-all",
        "a REGION_WRITE_MULTI write that cannot be done is skipped, the others applied, and "
        "the reply counts them all",
        ("region_write_multi", FAIL),
        spec="0.9.2",
    ),
    _f(
        "write-multi-read-only-ignored",
        "a REGION_WRITE_MULTI write to a region without WRITE is skipped silently and "
        "counted as completed",
        ("region_write_multi", FAIL),
        spec="0.9.2",
    ),
    _f(
        "write-multi-cnt-from-payload",
        "REGION_WRITE_MULTI takes the number of writes from the payload's length, not wr_cnt",
        ("region_write_multi", NON_STRICT),
        spec="0.9.2",
    ),
    # ---- the program (server.py, __main__.py): runs limited to the sections they affect
    _f(
        "exit-after-client",
        "the server exits when its first client disconnects",
        ("disconnect", INFORMATIONAL),
        scope=("disconnect",),
    ),
    _f(
        "fd-ignored",
        "--fd is accepted but ignored: the server listens on a socket path of its own",
        ("backend", HANG),
        scope=("backend",),
    ),
    _f(
        "daemonize",
        "the server daemonizes (double fork; the process started exits once the copy listens)",
        ("backend", FAIL),
        scope=("backend",),
    ),
    _f(
        "sigterm-ignored-with-client",
        "SIGTERM is acted on only between clients: with a client connected it is ignored",
        ("backend", FAIL),
        scope=("backend",),
    ),
    _f(
        "socket-path-unsupported",
        "--socket-path is not accepted (only --fd)",
        ("backend", FAIL),
        scope=("backend",),
        option="--fd={fd}",
    ),
)

CATALOGUE: dict[str, Fault] = {f.name: f for f in _CATALOGUE}


def enable(names) -> None:
    """Turn faults on (at startup, before any client); ValueError for an unknown name."""
    unknown = sorted(set(names) - set(CATALOGUE))
    if unknown:
        raise ValueError(
            f"unknown fault{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(unknown)}; the faults are: {', '.join(CATALOGUE)}"
        )
    FAULTS.update(names)


def catalogue_text() -> str:
    """--list-faults: one line per fault."""
    return "\n".join(f.line() for f in _CATALOGUE)


def crash(how: str = "segv") -> None:
    """Die the way a C server does on a bad pointer (SIGSEGV) or a failed assert (abort)."""
    faulthandler.disable()  # a C server prints no Python traceback
    if how == "abort":
        os.abort()
    os.kill(os.getpid(), signal.SIGSEGV)
