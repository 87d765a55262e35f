"""Stateful fuzzing of 0.9.2's DEVICE_FEATURE: the v2 migration state graph, DMA logging.

Machines in the style of test_fuzz_stateful.py (FuzzMachine, step, bound come from
there): each run is a sequence of steps on the fuzzer's connection, each reply checked
against a model, a failing sequence shrunk by Hypothesis.

* Migration v2: device_state (SET any value 0-8 through MIG_DEVICE_STATE, GET it,
  MIG_DATA_READ in any state, MIG_DATA_WRITE of garbage in RESUMING, DEVICE_RESET)
  against the spec's direct arcs and their combinations (protocol.v2_path).
* DMA logging: START (page sizes that are hints, ranges or none), STOP and REPORT over
  fd-backed client memory, with the device's DMA writes and reads (the dma_engine hook)
  in between; each report's bitmap against the bytes written since START.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import initialize, precondition, rule

from pytest_vfiouser import MUST, case
from pytest_vfiouser.fuzz import run_machine
from pytest_vfiouser.protocol import (
    V2_STATES,
    Command,
    DeviceFeature,
    DeviceFeatureFlags,
    DmaLoggingControl,
    DmaLoggingReport,
    DmaMap,
    DmaUnmap,
    Feature,
    FeatureMigDeviceState,
    MigrationFlags,
    MigState,
    bitmap_bytes,
    v2_path,
)

from ._fuzz import end_of_run, fuzz_for
from .test_fuzz_stateful import RW, FuzzMachine, _fail, _outcome, bound, step

GET, SET = int(DeviceFeatureFlags.GET), int(DeviceFeatureFlags.SET)
_HEAD = struct.Struct("<II")  # argsz, flags (DEVICE_FEATURE) or argsz, size (MIG_DATA_*)
_U32 = struct.Struct("<I")


def _feature(flags: int, data: bytes = b"", room: int = 0) -> bytes:
    """A DEVICE_FEATURE payload whose argsz leaves ``room`` bytes for a GET's data."""
    return DeviceFeature(DeviceFeature.FIXED_SIZE + len(data) + room, flags, data).pack()


# ------------------------------------------------------------------ migration (0.9.2)

ERROR, STOP, RUNNING = MigState.ERROR, MigState.STOP, MigState.RUNNING
STOP_COPY, RESUMING, PRE_COPY = MigState.STOP_COPY, MigState.RESUMING, MigState.PRE_COPY
P2P_STATES = (int(MigState.RUNNING_P2P), int(MigState.PRE_COPY_P2P))
SAVING = (PRE_COPY, STOP_COPY)
DRAIN_READS = 64  # reads of read_to_end at most
STATE = int(Feature.MIG_DEVICE_STATE)
# Two draws in three a state of the graph, else ERROR, a P2P state or past the enum.
_TARGETS = st.one_of(
    st.sampled_from([int(s) for s in V2_STATES]),
    st.sampled_from([int(s) for s in V2_STATES]),
    st.sampled_from([int(ERROR), *P2P_STATES, 8]),
)


def name(state: int) -> str:
    return MigState(state).name if state in iter(MigState) else str(state)


class MigrationV2Machine(FuzzMachine):
    """Model: device_state (RUNNING at the start of each run)."""

    # bound by the case (see bound())
    pre_copy: bool  # the MIGRATION flags have VFIO_MIGRATION_PRE_COPY
    p2p: bool  # ... and VFIO_MIGRATION_P2P (the P2P states are then not judged)
    chunk: int  # the most one MIG_DATA_READ of read_data asks for
    xfer: int  # the server's max_data_xfer_size

    def __init__(self):
        super().__init__()
        self.garbage = 0  # bytes written since RESUMING was entered
        self.ended = False  # a short read in STOP_COPY: the stream is over
        self.state = self.home("at the start of the run")

    # -- requests

    def get(self, what: str = "device_state") -> int:
        what = f"DEVICE_FEATURE GET of {what}"
        # room for more than the data: the reply's argsz is 8 + its data, not the request's
        reply = self.request(Command.DEVICE_FEATURE, _feature(GET | STATE, room=64), (), what)
        if reply is None or not reply.ok or len(reply.payload) < 12:
            got = _outcome(reply) if reply is None or not reply.ok else reply.payload.hex()
            _fail(f"{what} got {got}: device_state is the current state of the device (for GET)")
        argsz, flags = _HEAD.unpack_from(reply.payload)
        if (argsz, flags) != (len(reply.payload), GET | STATE):
            _fail(
                f"the reply to {what} has argsz {argsz}, flags {flags:#x} and "
                f"{len(reply.payload)} bytes: for getting a feature's data, the data is added "
                "in the data section and its length is added to argsz"
            )
        return _U32.unpack_from(reply.payload, 8)[0]

    def set(self, target: int, what: str):
        payload = _feature(SET | STATE, FeatureMigDeviceState(target, -1).pack())
        reply = self.request(Command.DEVICE_FEATURE, payload, (), what)
        if reply is not None and reply.ok and reply.payload != payload:
            _fail(
                f"the reply to {what} is {reply.payload.hex()}, the request {payload.hex()}: "
                "the reply payload must be the same as the request payload for setting "
                "or probing a feature"
            )
        return reply

    @step
    def home(self, when: str) -> int:
        """RUNNING: DEVICE_RESET, else the spec's arcs (a few rounds: leaving RESUMING
        may fail, into ERROR, which a reset then ends)."""
        state = self.get(f"device_state {when}")
        for _ in range(3):
            if state == RUNNING:
                return state
            reply = self.request(Command.DEVICE_RESET, b"", (), f"DEVICE_RESET {when}")
            after = self.get(f"device_state after DEVICE_RESET {when}")
            self.note_step(
                f"DEVICE_RESET in {name(state)} {when}: {_outcome(reply)}, device_state now "
                f"{name(after)}"
            )
            if state == ERROR and after != RUNNING:
                _fail(
                    f"in ERROR {when}, DEVICE_RESET got {_outcome(reply)} and device_state "
                    f"reads {name(after)}: to recover from ERROR, VFIO_USER_DEVICE_RESET "
                    "must be used to return back to RUNNING"
                )
            state = after
            if state in V2_STATES:
                for to in v2_path(MigState(state), RUNNING, self.pre_copy) or ():
                    self.note_step(f"SET device_state {name(to)} {when}")  # shown if it crashes
                    reply = self.set(to, f"SET device_state {name(to)} {when}")
                    self.steps[-1] += f": {_outcome(reply)}"
                    if reply is None or not reply.ok:
                        break
                state = self.get(f"device_state {when}")
        if state != RUNNING:
            _fail(
                f"device_state is {name(state)} {when}, and neither DEVICE_RESET nor the "
                "spec's arcs bring it back to RUNNING: to recover from ERROR, "
                "VFIO_USER_DEVICE_RESET must be used to return back to RUNNING"
            )
        return state

    def _stays(self, now: int, frm: int, what: str, level: str | None) -> None:
        if now != frm:
            _fail(
                f"after {what} was refused, device_state reads {name(now)}, not "
                f"{name(frm)}: a refused request leaves the state as it was",
                level,
            )

    # -- rules

    @rule(to=_TARGETS)
    @step
    def set_any(self, to):
        self.set_state(to)

    @rule(to=st.sampled_from([int(s) for s in V2_STATES]))
    @step
    def set_valid(self, to):
        """A state of the graph (so that walks go deep)."""
        self.set_state(to)

    def set_state(self, to):
        frm = self.state
        what = f"SET device_state {name(to)} in {name(frm)}"
        if to in P2P_STATES and self.p2p:
            self.note_step(f"{what}: not sent (the MIGRATION flags set VFIO_MIGRATION_P2P)")
            return
        extra = f" after {self.garbage} bytes of garbage" if frm == RESUMING else ""
        self.note_step(f"{what}{extra}")  # shown as it is if the server dies on it
        reply = self.set(to, what)
        ok = reply is not None and reply.ok
        now = self.get(f"device_state after {what}")
        self.steps[-1] += f": {_outcome(reply)}, device_state now {name(now)}"
        if frm == ERROR:
            if ok:
                _fail(
                    f"{what} was accepted (device_state now {name(now)}): to recover from "
                    "ERROR, VFIO_USER_DEVICE_RESET must be used to return back to RUNNING",
                    "should",
                )
            self._stays(now, frm, what, "should")
            return
        if to == ERROR:
            if ok:
                _fail(
                    f"{what} was accepted (device_state now {name(now)}): ERROR cannot be "
                    "specified as a device state"
                )
            self._stays(now, frm, what, "should")
            return
        path = v2_path(MigState(frm), MigState(to), self.pre_copy) if to in V2_STATES else None
        if path is None:
            if to > max(MigState):
                why = "device_state is defined by the vfio_device_mig_state enum (0-7)"
            elif to in P2P_STATES:
                why = f"{name(to)} is not used in vfio-user"
            elif (frm, to) == (STOP_COPY, PRE_COPY):
                why = (
                    "the STOP_COPY -> PRE_COPY transition is explicitly not allowed and "
                    "should return an error if requested"
                )
            else:
                why = (
                    "the MIGRATION flags lack VFIO_MIGRATION_PRE_COPY: if PRE_COPY is not "
                    "supported, arcs touching it are removed"
                )
            if ok:
                _fail(f"{what} was accepted (device_state now {name(now)}): {why}", "should")
            self._stays(now, frm, what, "should")
            return
        if not path:  # the current state: no arc to run, either answer will do
            if now != frm:
                _fail(
                    f"after {what} ({_outcome(reply)}), device_state reads {name(now)}: a SET "
                    "of the current state is no transition",
                    "should",
                )
            return
        if not ok and frm == RESUMING and now in (RESUMING, ERROR):
            # "If the delivered data is found to be incomplete, inconsistent, or otherwise
            # invalid, fail the SET command and optionally transition to the ERROR state."
            self.state = now
            return
        arcs = " -> ".join(name(s) for s in [frm, *path])
        if not ok:
            _fail(
                f"{what} (the arcs {arcs}) got {_outcome(reply)}: the following transitions "
                "need to be supported by the server; the remaining possible transitions are "
                "to be implemented as combinations of the above FSM arcs"
            )
        if now != to:
            _fail(
                f"{what} succeeded, but GET of device_state reads {name(now)}: the state "
                "transition must fully complete before the reply is sent"
            )
        if to == RESUMING:
            self.garbage = 0
        if now != frm:
            self.ended = False
        self.state = now

    @rule(size=st.sampled_from([1, 64, 4096]))
    @step
    def read_data(self, size):
        self._read(min(size, self.chunk))

    @precondition(lambda self: self.state in SAVING)
    @rule()
    @step
    def read_to_end(self):
        """Reads of 64 KiB until a short one (at most DRAIN_READS)."""
        size = min(1 << 16, self.xfer)
        for _ in range(DRAIN_READS):
            if self._read(size) < size:
                return

    def _read(self, size: int) -> int:
        """A MIG_DATA_READ of ``size`` bytes, checked; the size the reply says."""
        frm = self.state
        what = f"MIG_DATA_READ of {size} bytes in {name(frm)}"
        reply = self.request(Command.MIG_DATA_READ, _HEAD.pack(_HEAD.size + size, size), (), what)
        ok = reply is not None and reply.ok
        got = ""
        if ok and len(reply.payload) >= _HEAD.size:
            argsz, n = _HEAD.unpack_from(reply.payload)
            got = f" (size {n}, argsz {argsz}, {len(reply.payload) - 8} data bytes)"
        now = self.get(f"device_state after {what}")
        self.note_step(f"{what}: {_outcome(reply)}{got}, device_state now {name(now)}")
        if frm in SAVING:
            if not ok:
                _fail(
                    f"{what} got {_outcome(reply)}: this command is used to read data from "
                    "the source migration server while it is in a saving group state"
                )
            if len(reply.payload) < _HEAD.size:
                _fail(f"the reply to {what} is {reply.payload.hex()}: argsz, size and data")
            argsz, n = _HEAD.unpack_from(reply.payload)
            if n > size or argsz != _HEAD.size + n or len(reply.payload) != argsz:
                _fail(
                    f"the reply to {what} says size {n}, argsz {argsz} and carries "
                    f"{len(reply.payload) - _HEAD.size} data bytes: argsz is the size of the "
                    "above structure, including the size of the data; size indicates the "
                    "size of returned migration data"
                )
            if now != frm:
                _fail(f"{what} changed device_state to {name(now)}: reads do not move the state")
            if frm == STOP_COPY and self.ended and n:
                _fail(
                    f"{what} returned {n} bytes after a short read in STOP_COPY: if this is "
                    "less than the requested size, there is no more migration data to read"
                )
            self.ended = self.ended or (frm == STOP_COPY and n < size)
            return n
        if ok:
            _fail(
                f"{what} was accepted{got}: this command is used to read data from the "
                "source migration server while it is in a saving group state (PRE_COPY or "
                "STOP_COPY)",
                "should",
            )
        self._stays(now, frm, what, "should")
        return 0

    @precondition(lambda self: self.state == RESUMING)
    @rule(data=st.binary(min_size=1, max_size=64))
    @step
    def write_garbage(self, data):
        what = f"MIG_DATA_WRITE of {len(data)} bytes of garbage in RESUMING"
        reply = self.request(
            Command.MIG_DATA_WRITE, _HEAD.pack(_HEAD.size + len(data), len(data)) + data, (), what
        )
        now = self.get(f"device_state after {what}")
        self.note_step(f"{what}: {_outcome(reply)}, device_state now {name(now)}")
        if reply is not None and reply.ok:
            if reply.payload:
                _fail(
                    f"the reply to {what} carries {len(reply.payload)} bytes: there is no "
                    "reply payload for this message"
                )
            self.garbage += len(data)
            if now != RESUMING:
                _fail(f"{what} succeeded, but device_state reads {name(now)}")
            return
        # The device may judge data as it comes: refused, RESUMING or (optionally) ERROR.
        if now not in (RESUMING, ERROR):
            _fail(
                f"after {what} was refused, device_state reads {name(now)}: the device "
                "stays RESUMING, or optionally goes to ERROR, when it finds data invalid",
                "should",
            )
        self.state = now

    @precondition(lambda self: self.state != RUNNING)
    @rule()
    @step
    def reset(self):
        frm = self.state
        reply = self.request(Command.DEVICE_RESET, b"", (), f"DEVICE_RESET in {name(frm)}")
        now = self.get(f"device_state after DEVICE_RESET in {name(frm)}")
        self.note_step(
            f"DEVICE_RESET in {name(frm)}: {_outcome(reply)}, device_state now {name(now)}"
        )
        ok = reply is not None and reply.ok
        if frm == ERROR:
            if not ok or now != RUNNING:
                _fail(
                    f"DEVICE_RESET in ERROR got {_outcome(reply)} and device_state reads "
                    f"{name(now)}: to recover from ERROR, VFIO_USER_DEVICE_RESET must be "
                    "used to return back to RUNNING"
                )
        elif not ok:  # the spec says what a reset does in ERROR only: a refusal is allowed
            self._stays(now, frm, f"DEVICE_RESET in {name(frm)}", "should")
        if now == RESUMING and frm != RESUMING:
            self.garbage = 0
        if now != frm:
            self.ended = False
        self.state = now  # a reset outside ERROR: what it does is the device's (MAY)

    def teardown(self):
        if self.fuzzer.fatal is None and self.fuzzer.client is not None:
            try:
                self.home("after the run")
            except Exception:
                pass


def _migration_flags(fz) -> int:
    reply = fz.request(
        Command.DEVICE_FEATURE,
        _feature(GET | int(Feature.MIGRATION), room=8),
        (),
        "DEVICE_FEATURE GET of VFIO_DEVICE_FEATURE_MIGRATION",
    )
    if reply is None or not reply.ok or len(reply.payload) < 16:
        pytest.skip(f"cannot judge: GET of VFIO_DEVICE_FEATURE_MIGRATION got {_outcome(reply)}")
    return struct.unpack_from("<Q", reply.payload, 8)[0]


def _restore_running(fz, target, pre_copy: bool) -> None:
    """Leave the device RUNNING: DEVICE_RESET or the arcs, else a new server process."""
    try:
        client = fz.connection()
        for _ in range(2):
            reply = client.device_feature(GET | STATE, argsz=16)
            state = _U32.unpack_from(reply.payload, 8)[0] if reply.ok else None
            if state == RUNNING:
                return
            client.reset()
            reply = client.device_feature(GET | STATE, argsz=16)
            state = _U32.unpack_from(reply.payload, 8)[0] if reply.ok else None
            path = v2_path(MigState(state), RUNNING, pre_copy) if state in V2_STATES else None
            for to in path or ():
                client.device_feature(SET | STATE, FeatureMigDeviceState(to, -1).pack())
    except Exception:
        pass
    fz.drop()
    if target.managed and target.alive:
        target.fresh()


@case("fuzz/migration-v2-model", MUST, requires=("migration_v2",), revisions=("0.9.2",))
def test_migration_v2_model(request, fuzzer, vfu_target, vfu_device, vfu_observe):
    """Random SETs of device_state (every value 0-8, mostly the five states of the graph),
    GETs, MIG_DATA_READ in any state, MIG_DATA_WRITE of garbage in RESUMING and
    DEVICE_RESET agree with a model of the v2 state graph: a SET the direct arcs (or a
    combination of them without saving-group states inside) reach succeeds, echoes its
    request and GET then reads the state; a SET to ERROR is refused (MUST), one to a P2P
    state, past the enum, STOP_COPY -> PRE_COPY or (without VFIO_MIGRATION_PRE_COPY) to
    PRE_COPY is refused (SHOULD), and a refusal leaves the state; leaving RESUMING may
    fail, the device then RESUMING or ERROR; in ERROR SETs are refused (SHOULD) and
    DEVICE_RESET brings RUNNING (MUST); MIG_DATA_READ succeeds with a well-formed reply
    in PRE_COPY and STOP_COPY and is refused elsewhere (SHOULD). A DEVICE_RESET outside
    ERROR may be refused, or go anywhere: the spec does not say. Error replies are
    header-only. The device is brought back to RUNNING before and after each run.

    Spec (Direct State Transitions): "The following transitions need to be supported by
    the server"; "RESUMING -> STOP: ... If the delivered data is found to be incomplete,
    inconsistent, or otherwise invalid, fail the SET command and optionally transition to
    the ERROR state."; "The STOP_COPY -> PRE_COPY transition is explicitly not allowed and
    should return an error if requested."; "ERROR cannot be specified as a device state";
    "To recover from ERROR, VFIO_USER_DEVICE_RESET must be used to return back to
    RUNNING."; "If PRE_COPY is not supported, arcs touching it are removed." (Complex State
    Transitions): "The remaining possible transitions are to be implemented as
    combinations of the above FSM arcs." (VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE): "The
    state transition must fully complete before the reply is sent." (VFIO_USER_DEVICE_FEATURE
    Reply): "The reply payload must be the same as the request payload for setting or
    probing a feature." (VFIO_USER_MIG_DATA_READ): "This command is used to read data from
    the source migration server while it is in a saving group state (PRE_COPY or
    STOP_COPY)."
    """
    client = fuzzer.connection()
    flags = _migration_flags(fuzzer)
    caps = client.server_caps
    xfer = caps.max_data_xfer_size if caps else 4096
    pre_copy = bool(flags & MigrationFlags.PRE_COPY)
    machine = bound(
        MigrationV2Machine,
        fuzzer=fuzzer,
        pre_copy=pre_copy,
        p2p=bool(flags & MigrationFlags.P2P),
        chunk=min(4096, xfer),
        xfer=xfer,
    )
    try:
        run_machine(fuzzer, machine, fuzz_for(request, 0.075))
    finally:
        _restore_running(fuzzer, vfu_target, pre_copy)
    end_of_run(fuzzer, vfu_device, vfu_observe)


# ------------------------------------------------------------------ DMA logging

LOG_START = SET | int(Feature.DMA_LOGGING_START)
LOG_STOP = SET | int(Feature.DMA_LOGGING_STOP)
LOG_REPORT = GET | int(Feature.DMA_LOGGING_REPORT)
PAGE = 4096
SPAN = 64 * PAGE  # the client memory each run maps, fd-backed
DMA_MAX = 2 * PAGE  # bytes one DMA of the device moves at most
_log_windows = itertools.count()
# START's page size is a hint: powers of two and others (the reply says what was chosen).
_START_PAGES = st.sampled_from([PAGE, 512, 2 * PAGE, 16 * PAGE, 3000, 6000, 12345])
_PICKS = st.lists(st.tuples(st.integers(0, 63), st.integers(1, 16)), max_size=3)  # ranges
_REPORT_PAGES = st.sampled_from([PAGE, 512, 2 * PAGE, 16 * PAGE, 1024])


def _ranges(picks) -> tuple[tuple[int, int], ...]:
    """(first page, pages) picks as sorted, disjoint ranges of whole pages of the span."""
    out, end = [], 0
    for first, pages in sorted(picks):
        pages = min(pages, SPAN // PAGE - first)
        if first * PAGE >= end and pages > 0:
            out.append((first * PAGE, pages * PAGE))
            end = (first + pages) * PAGE
    return tuple(out)


class DmaLoggingMachine(FuzzMachine):
    """Model, per byte of the span (offsets from ``base``): written by the device since
    START (``written``), written since START inside its ranges and not reported since
    (``fresh``), read by the device since START (``read``); logging on or off, its page
    size and ranges."""

    # bound by the case (see bound())
    hooks: object  # the vfu_hooks
    dma: bool  # the dma_engine hook is there

    def __init__(self):
        super().__init__()
        self.logging = False
        self.page = PAGE  # the page size START's reply chose
        self.ranges: tuple[tuple[int, int], ...] = ()  # offsets in the span; () all
        self.written = bytearray(SPAN)
        self.fresh = bytearray(SPAN)
        self.read = bytearray(SPAN)
        self.base = 0
        self.map_span()

    @step
    def map_span(self) -> None:
        """A span of client memory of this run's own, mapped with a memfd."""
        client = self.fuzzer.connection()
        self.client = client
        self.base = 0x50_0000_0000 + next(_log_windows) * 0x100_0000
        fd = client.memory.create_memfd_region(self.base, SPAN)
        what = f"DMA_MAP [{self.base:#x}, +{SPAN:#x}) with a memfd"
        reply = self.request(
            Command.DMA_MAP, DmaMap(DmaMap.SIZE, RW, 0, self.base, SPAN).pack(), [fd], what
        )
        self.note_step(f"{what}: {_outcome(reply)}")
        if reply is None or not reply.ok:
            _fail(f"the server refused {what} ({_outcome(reply)}), a map of free addresses")

    def lost(self) -> None:
        """The server closed the connection: the new one has no mapping, no logging."""
        self.logging = False
        self.map_span()

    def _grow(self, lo: int, hi: int) -> tuple[int, int]:
        """[lo, hi) widened to whole logging pages (the device tracks at that grain)."""
        p = self.page
        if p & (p - 1) == 0:
            a, b = (self.base + lo) // p * p - self.base, -(-(self.base + hi) // p) * p - self.base
        else:
            a, b = lo - (p - 1), hi + (p - 1)
        return max(0, a), min(SPAN, b)

    def _inside_ranges(self, lo: int, hi: int) -> bool:
        return not self.ranges or any(a <= lo and hi <= a + n for a, n in self.ranges)

    def _ranges_text(self) -> str:
        if not self.ranges:
            return "no ranges (all writes)"
        return ", ".join(f"[{self.base + a:#x}, +{n:#x})" for a, n in self.ranges)

    # -- rules

    @initialize(later=st.booleans(), page=_START_PAGES, picks=_PICKS)
    @step
    def begin(self, later, page, picks):
        """Most runs start logging at once (the others later, if at all)."""
        if not later:
            self._start(page, picks)

    @precondition(lambda self: not self.logging)
    @rule(page=_START_PAGES, picks=_PICKS)
    @step
    def start(self, page, picks):
        self._start(page, picks)

    def _start(self, page, picks):
        ranges = _ranges(picks)
        sent = DmaLoggingControl.of(page, tuple((self.base + a, n) for a, n in ranges)).pack()
        payload = _feature(LOG_START, sent)
        shown = ", ".join(f"[{self.base + a:#x}, +{n:#x})" for a, n in ranges) or "none (all)"
        what = f"DMA_LOGGING_START page_size {page} ranges {shown}"
        reply = self.request(Command.DEVICE_FEATURE, payload, (), what)
        got = ""
        if reply is not None and reply.ok and len(reply.payload) >= 16:
            got = f" (page_size {struct.unpack_from('<Q', reply.payload, 8)[0]})"
        self.note_step(f"{what}: {_outcome(reply)}{got}")
        if reply is None or not reply.ok:
            _fail(
                f"the server refused {what} ({_outcome(reply)}) with logging off: upon "
                "VFIO_DEVICE_FEATURE_SET, start/stop DMA logging; if the device cannot do "
                "the hinted page size then it's the driver's choice which page size to pick",
                None if page == PAGE else "should",
            )
        body = reply.payload
        if len(body) != len(payload) or body[:8] != payload[:8] or body[16:] != payload[16:]:
            _fail(
                f"the reply to {what} is {body.hex()}, the request {payload.hex()}: upon "
                "success, the response data field will be the same as the request, unless "
                "the page size was changed"
            )
        chosen = struct.unpack_from("<Q", body, 8)[0]
        if not chosen:
            _fail(
                f"the reply to {what} gives page size 0: on output the device will "
                "return the page size it selected"
            )
        self.logging, self.page, self.ranges = True, chosen, ranges
        for model in (self.written, self.fresh, self.read):
            model[:] = bytes(SPAN)

    @precondition(lambda self: self.logging)
    @rule()
    @step
    def stop(self):
        what = f"DMA_LOGGING_STOP with logging {'on' if self.logging else 'off'}"
        payload = _feature(LOG_STOP)
        reply = self.request(Command.DEVICE_FEATURE, payload, (), what)
        self.note_step(f"{what}: {_outcome(reply)}")
        if reply is None:
            self.lost()
            return
        if self.logging:
            if not reply.ok:
                _fail(
                    f"the server refused {what} (errno {reply.error}): upon "
                    "VFIO_DEVICE_FEATURE_SET, start/stop DMA logging"
                )
            if reply.payload != payload:
                _fail(
                    f"the reply to {what} is {reply.payload.hex()}, the request {payload.hex()}: "
                    "the reply payload must be the same as the request payload for setting "
                    "or probing a feature"
                )
        self.logging = False  # off already: either answer will do (the spec says nothing)

    @rule(page=_REPORT_PAGES)
    @step
    def report_span(self, page):
        """A report of the whole span."""
        self._report(page, 0, SPAN // page)

    @rule(data=st.data(), page=_REPORT_PAGES)
    @step
    def report(self, data, page):
        units = SPAN // page
        first = data.draw(st.integers(0, units - 1), label="first page")
        count = data.draw(st.integers(1, units - first), label="pages")
        self._report(page, first, count)

    def _report(self, page, first, count):
        lo, hi = first * page, (first + count) * page
        nbytes = bitmap_bytes(hi - lo, page)
        sent = DmaLoggingReport(self.base + lo, hi - lo, page).pack()
        payload = _feature(LOG_REPORT, sent, room=nbytes)
        what = f"DMA_LOGGING_REPORT [{self.base + lo:#x}, +{hi - lo:#x}) page_size {page}"
        reply = self.request(Command.DEVICE_FEATURE, payload, (), what)
        ok = reply is not None and reply.ok
        if not self.logging:
            self.note_step(f"{what} with logging off: {_outcome(reply)}")
            if ok:
                _fail(
                    f"{what} with logging off was accepted: this operation is only valid if "
                    "logging of dirty pages has been previously started by setting "
                    "VFIO_DEVICE_FEATURE_DMA_LOGGING_START",
                    "should",
                )
            if reply is None:
                self.lost()
            return
        if not ok:
            self.note_step(f"{what}: {_outcome(reply)}")
            if self._inside_ranges(lo, hi):
                _fail(
                    f"the server refused {what} ({_outcome(reply)}), logging being on with "
                    f"{self._ranges_text()}: upon VFIO_DEVICE_FEATURE_GET, returns the dirty "
                    "bitmap for a specific IOVA range; page_size doesn't have to match the "
                    "value given to VFIO_DEVICE_FEATURE_DMA_LOGGING_START"
                )
            if reply is None:
                self.lost()
            return  # outside the ranges logged: the device may refuse
        body = reply.payload[DeviceFeature.FIXED_SIZE :]
        bits = int.from_bytes(body[24:], "little")
        self.note_step(f"{what}: bits {sorted(i for i in range(count) if bits >> i & 1)}")
        if body[:24] != sent or len(body) != 24 + nbytes:
            _fail(
                f"the reply data to {what} is {body[:24].hex()} and {len(body) - 24} bitmap "
                f"bytes (expected the request's {sent.hex()} and {nbytes}): the data field of "
                "the response is identical, except with the bitmap added on the end at offset 24"
            )
        if bits >> count:
            past = [i for i in range(count, nbytes * 8) if bits >> i & 1]
            _fail(
                f"the report of {count} pages sets bits {past}: "
                "the bits outside of the requested range must be zero"
            )
        for i in range(count):
            a, b = lo + i * page, lo + (i + 1) * page
            where = f"bit {i} ([{self.base + a:#x}, +{page:#x}))"
            if not bits >> i & 1:
                if 1 in self.fresh[a:b]:
                    _fail(
                        f"{where} is clear, but the device wrote there since START and since "
                        f"the last report of it (logging {self._ranges_text()}, page size "
                        f"{self.page}): returns the dirty bitmap for a specific IOVA range"
                    )
                continue
            ga, gb = self._grow(a, b)
            if 1 in self.written[ga:gb]:
                continue
            if 1 in self.read[ga:gb]:
                _fail(
                    f"{where} is set, and the device only read there since START: only "
                    "DMA writes are logged",
                    "should",
                )
            _fail(
                f"{where} is set, but the device wrote nothing there since START (page size "
                f"{self.page}): returns the dirty bitmap for a specific IOVA range"
            )
        # What was reported may be cleared (the spec does not say whether it is): at the
        # device's grain, what shared a logging page with the range may go too.
        ga, gb = self._grow(lo, hi)
        self.fresh[ga:gb] = bytes(gb - ga)

    @precondition(lambda self: self.dma)
    @rule(data=st.data(), length=st.integers(1, DMA_MAX))
    @step
    def device_write(self, data, length):
        self._dma(data, "write", length)

    @precondition(lambda self: self.dma)
    @rule(
        data=st.data(), direction=st.sampled_from(["write", "read"]), length=st.integers(1, DMA_MAX)
    )
    @step
    def device_dma(self, data, direction, length):
        self._dma(data, direction, length)

    def _dma(self, data, direction, length):
        lo, n = (0, SPAN)
        if self.logging and self.ranges and data.draw(st.booleans(), label="in a range"):
            lo, n = data.draw(st.sampled_from(self.ranges), label="range")
        at = lo + data.draw(st.integers(0, n - 1), label="offset")
        length = min(length, SPAN - at)
        what = (
            f"the device's DMA {direction} of [{self.base + at:#x}, +{length:#x}) "
            "(vfu_trigger_dma hook)"
        )
        result = self.hooks.trigger_dma(
            self.fuzzer.connection(), direction, self.base + at, length, 0
        )
        self.note_step(what)
        if not getattr(result, "ok", True):
            _fail(f"{what} failed ({result!r}), into mapped, writable memory")
        if not self.logging:
            return
        one = b"\x01" * length
        if direction == "read":
            self.read[at : at + length] = one
            return
        self.written[at : at + length] = one
        for a, n in self.ranges or ((0, SPAN),):
            lo, hi = max(a, at), min(a + n, at + length)
            if lo < hi:
                self.fresh[lo:hi] = bytes(b"\x01" * (hi - lo))

    def teardown(self):
        if self.fuzzer.fatal is not None or self.fuzzer.client is None:
            return
        try:
            if self.fuzzer.client is self.client:
                self.request(Command.DEVICE_FEATURE, _feature(LOG_STOP))
                reply = self.request(
                    Command.DMA_UNMAP, DmaUnmap(DmaUnmap.ENTRY_SIZE, 0, self.base, SPAN).pack()
                )
                if reply is not None and self.client.memory.find(self.base, SPAN) is not None:
                    self.client.memory.remove(self.base, SPAN)
        except Exception:
            pass


@case("fuzz/dma-logging-model", MUST, requires=("dma_logging",), revisions=("0.9.2",))
def test_dma_logging_model(request, fuzzer, vfu_device, vfu_hooks, vfu_observe):
    """Random DMA_LOGGING_START (page sizes that are hints, powers of two or not; ranges of
    the mapped memory, or none), STOP and REPORT (sub-ranges, page sizes powers of two)
    over fd-backed client memory, with the device's DMA writes and reads at random
    addresses in between (when the dma_engine hook is there), agree with a model of what
    the device wrote: START with logging off succeeds with its request as the reply but
    for the page size chosen; a REPORT inside what is logged succeeds with the request's
    24 bytes and one bit per page; a bit is set where the device wrote since START and
    since the last report of it (writes outside the START ranges need not be), clear
    where it wrote nothing since START (at the grain of the chosen page size; a page the
    device only read: SHOULD), and zero past the requested range; a page reported before
    may read either way (the spec does not say whether reports clear). REPORT with
    logging off is refused (SHOULD).

    Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_START / STOP): "Upon VFIO_DEVICE_FEATURE_SET,
    start/stop DMA logging."; "Only DMA writes are logged."; "page_size hints what tracking
    granularity the device should try to achieve. If the device cannot do the hinted page
    size then it's the driver's choice which page size to pick based on its support. On
    output the device will return the page size it selected."; "A value of zero indicates
    that all writes should be logged."; "Upon success, the response data field will be the
    same as the request, unless the page size was changed". (DMA_LOGGING_REPORT): "returns
    the dirty bitmap for a specific IOVA range. This operation is only valid if logging of
    dirty pages has been previously started"; "It doesn't have to match the value given to
    VFIO_DEVICE_FEATURE_DMA_LOGGING_START"; "The data field of the response is identical,
    except with the bitmap added on the end at offset 24."; "The bits outside of the
    requested range must be zero."
    """
    machine = bound(
        DmaLoggingMachine,
        fuzzer=fuzzer,
        hooks=vfu_hooks,
        dma=bool(vfu_device.has("dma_engine")),
    )
    run_machine(fuzzer, machine, fuzz_for(request, 0.125))
    end_of_run(fuzzer, vfu_device, vfu_observe)
