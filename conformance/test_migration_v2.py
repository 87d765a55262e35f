"""Migration (0.9.2): the VFIO "v2" state machine through VFIO_USER_DEVICE_FEATURE, and the
data stream of VFIO_USER_MIG_DATA_READ / VFIO_USER_MIG_DATA_WRITE.

Every case needs ``migration_v2`` (DEVICE_FEATURE GET of VFIO_DEVICE_FEATURE_MIGRATION
works). The device keeps its state across connections, so each case starts from RUNNING
and the device is brought back to RUNNING afterwards: by DEVICE_RESET, else by a brand-new
server process (by the spec's arcs only where the suite cannot start one: the arcs are
judged by their own cases, a fixture does not lean on them).

States are reached from RUNNING by the spec's direct arcs (protocol.v2_path). Where a case
leaves RESUMING, the device was first given its own saved stream (RUNNING -> STOP ->
STOP_COPY, read to the end, -> STOP), so that RESUMING -> STOP is a complete resume: with
no data at all a server may call the data "incomplete" and fail the SET.

Whole migrations need a second server process as the destination, started from the
target's command (``--vfu-server`` or the embedded reference server); with
``--vfu-socket`` those cases are UNIMPLEMENTED. Data is written to the destination in the
order and sizes it was read.
"""

from __future__ import annotations

import contextlib
import itertools
import struct

import pytest

from pytest_vfiouser import MAY, MUST, SHOULD, case
from pytest_vfiouser.client import ClientError, ConnectionClosed
from pytest_vfiouser.protocol import (
    V2_ARCS,
    V2_STATES,
    Command,
    DeviceFeature,
    DeviceFeatureFlags,
    Feature,
    FeatureMigDeviceState,
    MigrationFlags,
    MigState,
    v2_path,
)

from ._support import accepted, pattern, second_server

REVS = ("0.9.2",)
NEEDS = ("migration_v2",)
GET, SET, PROBE = DeviceFeatureFlags.GET, DeviceFeatureFlags.SET, DeviceFeatureFlags.PROBE
MIGRATION, STATE = Feature.MIGRATION, Feature.MIG_DEVICE_STATE
RUNNING, STOP, STOP_COPY = MigState.RUNNING, MigState.STOP, MigState.STOP_COPY
RESUMING, PRE_COPY, ERROR = MigState.RESUMING, MigState.PRE_COPY, MigState.ERROR
CHUNK = 4096  # bytes one MIG_DATA_READ asks for
MAX_BYTES = 512 << 20  # of migration data one stream may have before the case gives up
_HEAD = struct.Struct("<II")  # argsz, flags (DEVICE_FEATURE) or argsz, size (MIG_DATA_*)
_U32 = struct.Struct("<I")
_seeds = itertools.count(1)


def name(state: int) -> str:
    return MigState(state).name if state in iter(MigState) else f"{state:#x}"


def _id(state: int) -> str:
    return name(state).lower().replace("_", "-")


def _state_data(state: int) -> bytes:
    return FeatureMigDeviceState(state, -1).pack()


def _data_read(client, size: int):
    """MIG_DATA_READ of ``size`` bytes (argsz 8 + size): the reply."""
    return client.request(Command.MIG_DATA_READ, _HEAD.pack(_HEAD.size + size, size))


def _data_write(client, data: bytes):
    """MIG_DATA_WRITE of ``data`` (argsz 8 + its length): the reply."""
    return client.request(
        Command.MIG_DATA_WRITE, _HEAD.pack(_HEAD.size + len(data), len(data)) + data
    )


def _set_payload(state: int) -> bytes:
    """The DEVICE_FEATURE payload of SET device_state ``state``, as the client sends it."""
    data = _state_data(state)
    return DeviceFeature(DeviceFeature.FIXED_SIZE + len(data), SET | STATE, data).pack()


class Mig:
    """The migration of one connection (DEVICE_FEATURE and MIG_DATA_*)."""

    def __init__(self, client):
        self.c = client
        server = client.server_caps.max_data_xfer_size if client.server_caps else 1 << 20
        self.chunk = max(1, min(CHUNK, client.max_data_xfer_size, server))
        data = self.get(MIGRATION, "VFIO_DEVICE_FEATURE_MIGRATION")
        self.flags = struct.unpack_from("<Q", data.ljust(8, b"\0"))[0]
        self.pre_copy = bool(self.flags & MigrationFlags.PRE_COPY)
        self.written = 0

    def get(self, feature: int, what: str) -> bytes:
        """The data of a GET that must succeed."""
        reply = accepted(self.c.device_feature(GET | feature), f"DEVICE_FEATURE GET of {what}")
        return reply.payload[DeviceFeature.FIXED_SIZE :]

    def state(self) -> int:
        data = self.get(STATE, "VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE")
        assert len(data) >= 4, f"GET of MIG_DEVICE_STATE returned {len(data)} bytes of data"
        return _U32.unpack_from(data)[0]

    def set_state(self, state: int):
        return self.c.device_feature(SET | STATE, _state_data(state))

    def go(self, state: int) -> None:
        """A SET that must succeed and read back."""
        before = self.state()
        what = f"the transition {name(before)} -> {name(state)}"
        accepted(self.set_state(state), what)
        now = self.state()
        assert now == state, f"{what} succeeded, but GET of device_state reads {name(now)}"

    def walk(self, target: int) -> None:
        """From the current state to ``target`` by the spec's direct arcs."""
        path = v2_path(MigState(self.state()), MigState(target), self.pre_copy)
        assert path is not None, f"no path of direct arcs to {name(target)}"
        for state in path:
            self.go(state)

    def read(self, size: int) -> bytes:
        """MIG_DATA_READ of up to ``size`` bytes, which must succeed."""
        reply = accepted(_data_read(self.c, size), f"MIG_DATA_READ of {size} bytes")
        assert len(reply.payload) >= _HEAD.size, "the MIG_DATA_READ reply has no argsz and size"
        _, n = _HEAD.unpack_from(reply.payload)
        return reply.payload[_HEAD.size : _HEAD.size + n]

    def read_stream(self, size: int | None = None) -> list[bytes]:
        """Reads of ``size`` (self.chunk) bytes until a short one (those with data)."""
        size = size or self.chunk
        chunks, total = [], 0
        while True:
            data = self.read(size)
            if data:
                chunks.append(data)
            total += len(data)
            assert total <= MAX_BYTES, f"more than {MAX_BYTES} bytes of migration data"
            if len(data) < size:
                return chunks

    def write(self, chunks: list[bytes]) -> None:
        """MIG_DATA_WRITEs of ``chunks`` that must succeed (self.written counts the bytes)."""
        for data in chunks:
            what = f"MIG_DATA_WRITE of {len(data)} bytes at stream offset {self.written:#x}"
            accepted(_data_write(self.c, data), what)
            self.written += len(data)


def _own_stream(m: Mig) -> list[bytes]:
    """The device's saved state, from RUNNING: -> STOP -> STOP_COPY, read to the end,
    -> STOP. The device is left in STOP."""
    m.walk(STOP_COPY)
    chunks = m.read_stream()
    m.go(STOP)
    return chunks


def _reach(m: Mig, state: int, feed: bool = True) -> None:
    """From RUNNING to ``state`` by direct arcs; RESUMING (if ``feed``) with the device's
    own stream written, so that leaving it is a complete resume."""
    if state == RESUMING and feed:
        stream = _own_stream(m)
        m.go(RESUMING)
        m.write(stream)
    elif state != RUNNING:
        m.walk(state)


def _need_pre_copy(m: Mig, *states: int) -> None:
    if PRE_COPY in states and not m.pre_copy:
        pytest.skip(
            f"the MIGRATION flags {m.flags:#x} lack VFIO_MIGRATION_PRE_COPY: "
            '"If PRE_COPY is not supported, arcs touching it are removed."'
        )


def _to_resuming(m: Mig) -> None:
    """From the current state to RESUMING by direct arcs; a saving session is first read to
    its end (PRE_COPY -> STOP_COPY, the reads), its normal end."""
    if m.state() == PRE_COPY:
        m.go(STOP_COPY)
    if m.state() == STOP_COPY:
        m.read_stream()
    m.walk(RESUMING)


def _home(m: Mig, arcs: bool = True) -> bool:
    """RUNNING again: DEVICE_RESET, else (if ``arcs``) the spec's arcs; False if that did
    not work."""
    try:
        if m.state() == RUNNING:
            return True
        m.c.reset()
        state = m.state()
        if state != RUNNING and arcs:
            for step in v2_path(MigState(state), RUNNING, m.pre_copy) or (None,):
                if step is None or not m.set_state(step).ok:
                    return False
        return m.state() == RUNNING
    except (ClientError, OSError, AssertionError, ValueError):
        return False


@pytest.fixture
def mig(vfu_connect, vfu_target):
    """The target's migration, in RUNNING; back to RUNNING afterwards: by DEVICE_RESET, else
    by a brand-new server process (by the spec's arcs if the suite cannot start one: the
    arcs are judged by their own cases, not by a fixture)."""

    def connect() -> Mig:
        client = vfu_connect()
        client.negotiate()
        return Mig(client)

    m = connect()
    if not _home(m, arcs=not vfu_target.managed):
        m.c.close()
        vfu_target.fresh()
        m = connect()
        assert m.state() == RUNNING, (
            f"a brand-new server process reads device_state {name(m.state())}, not RUNNING"
        )
    yield m
    with contextlib.suppress(ClientError, OSError, AssertionError):
        if _home(m if not m.c.closed else connect(), arcs=not vfu_target.managed):
            return
    m.c.close()
    if vfu_target.managed:
        vfu_target.fresh()


def _refused(m: Mig, command: int, payload: bytes, what: str, observe, header_only=False):
    """``payload`` sent as ``command`` must be refused: the error reply, or None when the
    server closed the connection cleanly instead (noted). An error reply with a payload is
    a failure if ``header_only`` (a MUST case), else noted (the MUST cases judge it)."""
    try:
        reply = m.c.request(command, payload)
    except ConnectionClosed as e:
        assert not e.partial_bytes, f"on {what}, the server closed the connection mid-message"
        observe(f"the server closed the connection instead of replying with an error to {what}")
        return None
    assert not reply.ok, (
        f"the server accepted {what} ({len(reply.payload)} reply payload bytes, device_state "
        f"now {name(m.state())})"
    )
    assert not (header_only and reply.payload), (
        f"the error reply to {what} carries {len(reply.payload)} payload bytes; an error "
        "reply must only include the reply header"
    )
    if reply.payload:
        observe(
            f"the error reply to {what} carries {len(reply.payload)} payload bytes: "
            '"If an error occurs, the reply message must only include the reply header."'
        )
    return reply


def _refused_set(m: Mig, state: int, what: str, observe, header_only=False):
    payload = _set_payload(state)
    return _refused(m, Command.DEVICE_FEATURE, payload, what, observe, header_only)


# ---- the second server process (the destination)


def _pattern(seed: int, region: int, offset: int, n: int) -> bytes:
    return pattern(n, offset * 7 + region * 29 + seed * 13 + 0xA5, 7)


def _scratch_io(m: Mig, ranges, seed: int | None) -> list[bytes]:
    """Write the pattern of ``seed`` to every range (None: write nothing); what they hold."""
    out = []
    for region, offset, n in ranges:
        got = b""
        for pos in range(0, n, m.chunk):
            k, at = min(m.chunk, n - pos), offset + pos
            if seed is not None:
                data = _pattern(seed, region, at, k)
                accepted(m.c.region_write(region, at, data), f"REGION_WRITE of {region}:{at:#x}")
            got += accepted(
                m.c.region_read(region, at, k), f"REGION_READ of {region}:{at:#x}"
            ).body.data
        out.append(got)
    return out


# ---- VFIO_DEVICE_FEATURE_MIGRATION and MIG_DEVICE_STATE: the replies


@case("migration_v2/migration-get", MUST, requires=NEEDS, revisions=REVS)
def test_migration_get(mig):
    """GET of VFIO_DEVICE_FEATURE_MIGRATION succeeds with 8 bytes of flags that include
    VFIO_MIGRATION_STOP_COPY; the reply echoes flags and its argsz is 8 + 8.

    Spec (VFIO_DEVICE_FEATURE_MIGRATION): "If GET succeeds, the RUNNING and ERROR states
    are always supported. Support for additional states is indicated via the flags
    field; at least VFIO_MIGRATION_STOP_COPY must be set." Spec (VFIO_USER_DEVICE_FEATURE
    Reply): "For getting a feature's data, the data is added in the data section and its
    length is added to argsz." (argsz is then the reply payload's size.)
    """
    reply = accepted(mig.c.device_feature(GET | MIGRATION), "GET of MIGRATION")
    assert len(reply.payload) == 16, (
        f"the GET reply payload is {len(reply.payload)} bytes: argsz, flags and the 8-byte "
        "flags field of the MIGRATION data"
    )
    argsz, flags = _HEAD.unpack_from(reply.payload)
    assert flags == GET | MIGRATION, f"the reply's flags {flags:#x} are not the request's"
    assert argsz == 16, f"the reply's argsz is {argsz}, not 8 + the 8 bytes of data"
    assert mig.flags & MigrationFlags.STOP_COPY, (
        f"the MIGRATION flags {mig.flags:#x} lack VFIO_MIGRATION_STOP_COPY (bit 0)"
    )


@case("migration_v2/state-get", MUST, requires=NEEDS, revisions=REVS)
def test_state_get(mig):
    """GET of VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE returns the current state (RUNNING, then
    STOP after a SET to STOP) as 8 bytes of device_state and data_fd; argsz 8 + 8.

    Spec (VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE): "device_state is the current state of the
    device (for GET) or the state to transition to (for SET)."; "The data field of the
    reply message, as well as the SET request message, is structured as follows:
    device_state 0 4, data_fd 4 4".
    """
    for expected in (RUNNING, STOP):
        if expected != RUNNING:
            accepted(mig.set_state(expected), f"SET of device_state {name(expected)}")
        reply = accepted(mig.c.device_feature(GET | STATE), "GET of MIG_DEVICE_STATE")
        assert len(reply.payload) == 16, (
            f"the GET reply payload is {len(reply.payload)} bytes, not argsz, flags and the "
            "8 bytes of device_state and data_fd"
        )
        argsz, flags = _HEAD.unpack_from(reply.payload)
        assert (argsz, flags) == (16, GET | STATE), (
            f"the reply's argsz, flags are {argsz}, {flags:#x}; expected 16, {GET | STATE:#x}"
        )
        state = _U32.unpack_from(reply.payload, 8)[0]
        assert state == expected, f"GET of device_state reads {name(state)}, not {name(expected)}"


@case("migration_v2/set-reply-echoes", MUST, requires=NEEDS, revisions=REVS)
def test_set_reply_echoes(mig):
    """The reply to a SET of MIG_DEVICE_STATE (RUNNING -> STOP) is the request payload.

    Spec (VFIO_USER_DEVICE_FEATURE Reply): "The reply payload must be the same as the
    request payload for setting or probing a feature."
    """
    payload = _set_payload(STOP)
    reply = accepted(mig.c.request(Command.DEVICE_FEATURE, payload), "SET of device_state STOP")
    assert reply.payload == payload, (
        f"the SET reply payload is {reply.payload.hex()}, the request's {payload.hex()}"
    )


@case("migration_v2/probe-reply-echoes", MUST, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize(
    "flags",
    [PROBE | GET | MIGRATION, PROBE | GET | SET | STATE],
    ids=["migration-get", "device-state-get-set"],
)
def test_probe_reply_echoes(mig, flags):
    """A PROBE for the operations the migration features have succeeds, and its reply is
    the request payload.

    Spec (VFIO_USER_DEVICE_FEATURE Reply): "The reply payload must be the same as the
    request payload for setting or probing a feature." Spec (VFIO_DEVICE_FEATURE_MIGRATION):
    "This feature indicates that the device can support the migration API through
    VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE."
    """
    payload = DeviceFeature(DeviceFeature.FIXED_SIZE, flags).pack()
    reply = accepted(mig.c.request(Command.DEVICE_FEATURE, payload), f"PROBE flags {flags:#x}")
    assert reply.payload == payload, (
        f"the PROBE reply payload is {reply.payload.hex()}, the request's {payload.hex()}"
    )
    assert mig.state() == RUNNING, "a PROBE changed device_state"


# ---- transitions


def _arc_id(arc) -> str:
    return f"{_id(arc[0])}-{_id(arc[1])}"


@case("migration_v2/direct-arc", MUST, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("arc", sorted(V2_ARCS), ids=_arc_id)
def test_direct_arc(mig, arc):
    """Each direct arc of the spec's list succeeds, and GET then reads the new state.

    Spec (Direct State Transitions): "The following transitions need to be supported by
    the server, a subset of those defined in <linux/vfio.h> (enum vfio_device_mig_state)."
    Spec (VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE): "The state transition must fully complete
    before the reply is sent."
    """
    frm, to = arc
    _need_pre_copy(mig, frm, to)
    _reach(mig, frm)
    mig.go(to)


def _complex_pairs():
    pairs = []
    for frm, to in itertools.permutations(V2_STATES, 2):
        path = v2_path(frm, to)
        if path is not None and len(path) > 1:
            pairs.append((frm, to))
    return pairs


@case("migration_v2/complex-transition", MUST, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("pair", _complex_pairs(), ids=_arc_id)
def test_complex_transition(mig, pair):
    """A SET to a state that no direct arc reaches succeeds in one request and GET then
    reads that state.

    Spec (Complex State Transitions): "The remaining possible transitions are to be
    implemented as combinations of the above FSM arcs." Spec
    (VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE): "The state transition must fully complete
    before the reply is sent."
    """
    frm, to = pair
    _need_pre_copy(mig, frm, to)
    if v2_path(frm, to, mig.pre_copy) is None:
        pytest.skip(f"without PRE_COPY there is no path {name(frm)} -> {name(to)}")
    _reach(mig, frm)
    mig.go(to)


@case("migration_v2/stop-copy-to-pre-copy-refused", SHOULD, requires=NEEDS, revisions=REVS)
def test_stop_copy_to_pre_copy_refused(mig, vfu_observe):
    """SET PRE_COPY in STOP_COPY is refused and the state stays STOP_COPY (the control:
    SET PRE_COPY from RUNNING succeeds, when the device has PRE_COPY).

    Spec (Direct State Transitions): "The STOP_COPY -> PRE_COPY transition is explicitly
    not allowed and should return an error if requested."
    """
    if mig.pre_copy:
        mig.go(PRE_COPY)
        assert _home(mig), "the device did not go back to RUNNING"
    _reach(mig, STOP_COPY)
    what = "SET of device_state PRE_COPY in STOP_COPY"
    if _refused_set(mig, PRE_COPY, what, vfu_observe) is not None:
        now = mig.state()
        assert now == STOP_COPY, f"after refusing {what}, device_state reads {name(now)}"


@case("migration_v2/set-error-refused", MUST, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("frm", [RUNNING, STOP], ids=_id)
def test_set_error_refused(mig, vfu_observe, frm):
    """SET of device_state ERROR is refused with a header-only error reply and the state
    stays (the control: the same SET to the state of an arc from there succeeds).

    Spec (Direct State Transitions): "ERROR cannot be specified as a device state, but any
    transition request can be failed and then move the state into ERROR if the server was
    unable to execute the requested arc AND was unable to restore the device into any
    valid state." Spec (Header): "If an error occurs, the reply message must only include
    the reply header."
    """
    _reach(mig, frm)
    what = f"SET of device_state ERROR in {name(frm)}"
    if _refused_set(mig, ERROR, what, vfu_observe, header_only=True) is not None:
        now = mig.state()
        assert now == frm, f"after refusing {what}, device_state reads {name(now)}"
        mig.go(STOP if frm == RUNNING else RESUMING)


@case("migration_v2/set-undefined-state-refused", SHOULD, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize(
    "state",
    [MigState.RUNNING_P2P, MigState.PRE_COPY_P2P, 8, 0xFFFFFFFF],
    ids=["running-p2p", "pre-copy-p2p", "8", "0xffffffff"],
)
def test_set_undefined_state_refused(mig, vfu_observe, state):
    """SET of a device_state vfio-user does not use (the P2P states 5 and 7) or the enum
    does not define (8 and above) is refused and the state stays RUNNING (the control: SET
    STOP succeeds).

    Spec (VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE): "VFIO_DEVICE_STATE_RUNNING_P2P 5 (not used
    in vfio-user)"; "VFIO_DEVICE_STATE_PRE_COPY_P2P 7 (not used in vfio-user)"; "It is
    defined by the vfio_device_mig_state enum as detailed below." Spec (Security
    Considerations): "Standard tools and mechanisms should be used on both sides to
    validate input". (A device whose MIGRATION flags set VFIO_MIGRATION_P2P is not
    judged on the P2P states.)
    """
    if state in (MigState.RUNNING_P2P, MigState.PRE_COPY_P2P) and mig.flags & MigrationFlags.P2P:
        pytest.skip(f"cannot judge: the MIGRATION flags {mig.flags:#x} set VFIO_MIGRATION_P2P")
    what = f"SET of device_state {name(state)}"
    if _refused_set(mig, state, what, vfu_observe) is not None:
        now = mig.state()
        assert now == RUNNING, f"after refusing {what}, device_state reads {name(now)}"
        mig.go(STOP)


@case("migration_v2/reset-to-running", MAY, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("frm", [STOP, STOP_COPY, RESUMING, PRE_COPY], ids=_id)
def test_reset_to_running(mig, frm):
    """DEVICE_RESET in a state other than RUNNING brings the device back to RUNNING.

    Spec (Direct State Transitions): "To recover from ERROR, VFIO_USER_DEVICE_RESET must be
    used to return back to RUNNING." Spec (VFIO_USER_DEVICE_RESET): "This command message
    is sent from the client to the server to reset the device." The spec says it of ERROR
    only; what a reset does in the other states it leaves to the device, hence MAY (a
    device that stays stopped or saving is noted, not failed).
    """
    _need_pre_copy(mig, frm)
    _reach(mig, frm, feed=False)
    accepted(mig.c.reset(), f"DEVICE_RESET in {name(frm)}")
    now = mig.state()
    assert now == RUNNING, f"after DEVICE_RESET in {name(frm)}, device_state reads {name(now)}"


# ---- MIG_DATA_READ and MIG_DATA_WRITE


@case("migration_v2/data-read-reply", MUST, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("state", [PRE_COPY, STOP_COPY], ids=_id)
def test_data_read_reply(mig, vfu_observe, state):
    """In a saving state, each MIG_DATA_READ up to the first short one succeeds with size at
    most the size asked, argsz 8 + size and exactly size bytes of data.

    Spec (VFIO_USER_MIG_DATA_READ): "This command is used to read data from the source
    migration server while it is in a saving group state (PRE_COPY or STOP_COPY)."; "argsz
    is the size of the above structure, including the size of the data."; "size indicates
    the size of returned migration data."
    """
    _need_pre_copy(mig, state)
    _reach(mig, state)
    total = 0
    while total <= MAX_BYTES:
        reply = accepted(_data_read(mig.c, mig.chunk), f"MIG_DATA_READ in {name(state)}")
        assert len(reply.payload) >= 8, f"the reply payload is {len(reply.payload)} bytes"
        argsz, size = _HEAD.unpack_from(reply.payload)
        assert size <= mig.chunk, f"the reply's size {size} is above the {mig.chunk} asked"
        assert argsz == 8 + size, f"the reply's argsz is {argsz}, not 8 + size {size}"
        assert len(reply.payload) == argsz, (
            f"the reply with size {size} carries {len(reply.payload) - 8} bytes of data"
        )
        total += size
        if size < mig.chunk:
            break
    if not total:
        vfu_observe(f"the device had no migration data in {name(state)}")


@case("migration_v2/data-read-stream-ends", MUST, requires=NEEDS, revisions=REVS)
def test_data_read_stream_ends(mig):
    """In STOP_COPY, reads of the data end with a short read, and a read after it gets no
    data.

    Spec (VFIO_USER_MIG_DATA_READ): "the migration data is treated like a stream, so the
    client must continue reading until no more migration data remains."; "size indicates
    the size of returned migration data. If this is less than the requested size, there
    is no more migration data to read."
    """
    _reach(mig, STOP_COPY)
    mig.read_stream()  # raises past MAX_BYTES
    more = mig.read(mig.chunk)
    assert not more, f"after a short read, another MIG_DATA_READ returned {len(more)} bytes"


@case("migration_v2/data-read-outside-saving-refused", SHOULD, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("state", [RUNNING, STOP, RESUMING], ids=_id)
def test_data_read_outside_saving_refused(mig, vfu_observe, state):
    """MIG_DATA_READ outside the saving group is refused and the state stays (the control:
    the same read in STOP_COPY succeeds).

    Spec (VFIO_USER_MIG_DATA_READ): "This command is used to read data from the source
    migration server while it is in a saving group state (PRE_COPY or STOP_COPY)."
    """
    _reach(mig, state)
    what = f"MIG_DATA_READ of {mig.chunk} bytes in {name(state)}"
    payload = _HEAD.pack(8 + mig.chunk, mig.chunk)
    if _refused(mig, Command.MIG_DATA_READ, payload, what, vfu_observe) is None:
        return
    assert mig.state() == state, f"after refusing {what}, device_state reads {name(mig.state())}"
    mig.walk(STOP_COPY)
    accepted(mig.c.request(Command.MIG_DATA_READ, payload), "the same read in STOP_COPY")


@case("migration_v2/data-write-outside-resuming-refused", SHOULD, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("state", [RUNNING, STOP, STOP_COPY, PRE_COPY], ids=_id)
def test_data_write_outside_resuming_refused(mig, vfu_observe, state):
    """MIG_DATA_WRITE outside RESUMING is refused and the state stays (the control: the same
    write succeeds in RESUMING; if it does not, the case cannot judge).

    Spec (VFIO_USER_MIG_DATA_WRITE): "This command is used to write data to the
    destination migration server while it is in the RESUMING state."
    """
    _need_pre_copy(mig, state)
    _reach(mig, state)
    data = _pattern(next(_seeds), 0, 0, mig.chunk)
    what = f"MIG_DATA_WRITE of {len(data)} bytes in {name(state)}"
    payload = _HEAD.pack(8 + len(data), len(data)) + data
    if _refused(mig, Command.MIG_DATA_WRITE, payload, what, vfu_observe) is None:
        return
    assert mig.state() == state, f"after refusing {what}, device_state reads {name(mig.state())}"
    _to_resuming(mig)
    control = mig.c.request(Command.MIG_DATA_WRITE, payload)
    if not control.ok:
        pytest.skip(
            f"cannot judge: the same {len(data)} bytes were refused in RESUMING too (errno "
            f"{control.error}): the device may check migration data as it comes"
        )


@case("migration_v2/data-write-reply-empty", MUST, requires=NEEDS, revisions=REVS)
def test_data_write_reply_empty(mig):
    """In RESUMING, MIG_DATA_WRITE of the device's own stream succeeds with replies that
    have no payload.

    Spec (VFIO_USER_MIG_DATA_WRITE): "This command is used to write data to the destination
    migration server while it is in the RESUMING state."; "There is no reply payload for
    this message."
    """
    stream = _own_stream(mig)
    mig.go(RESUMING)
    pos = 0
    for data in stream:
        what = f"MIG_DATA_WRITE of {len(data)} bytes at stream offset {pos:#x}"
        reply = accepted(_data_write(mig.c, data), what)
        assert not reply.payload, f"the reply to {what} carries {len(reply.payload)} bytes"
        pos += len(data)


# ---- whole migrations


@case("migration_v2/full-migration", MUST, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("precopy", [True, False], ids=["with-pre-copy", "stop-copy-only"])
def test_full_migration(request, mig, vfu_device, precopy):
    """Migrated to a second server process (source RUNNING [-> PRE_COPY] -> STOP_COPY, read
    to the end; destination STOP -> RESUMING, the same writes, -> STOP -> RUNNING), the
    device holds what the source held in every scratch range.

    Spec (Direct State Transitions): "STOP -> RESUMING: Start the process of restoring the
    device state."; "RESUMING -> STOP: Terminate the data transfer session. Complete
    processing of the migration data." Spec (VFIO_USER_MIG_DATA_WRITE): "This command is
    used to write data to the destination migration server while it is in the RESUMING
    state."
    """
    if precopy:
        _need_pre_copy(mig, PRE_COPY)
    ranges = vfu_device.scratch_ranges()
    if not ranges:
        pytest.skip("needs profile: scratch ranges (regions[].scratch) to put data in")
    seed = next(_seeds)
    expected = _scratch_io(mig, ranges, seed)
    with second_server(request) as connect:
        client = connect()
        client.negotiate()
        dst = Mig(client)
        if _scratch_io(dst, ranges, None) == expected:
            pytest.skip("cannot judge: the destination already holds the source's scratch data")
        dst.walk(RESUMING)
        if precopy:
            mig.go(PRE_COPY)
            dst.write(mig.read_stream())
        mig.go(STOP_COPY)
        dst.write(mig.read_stream())
        dst.go(STOP)
        dst.go(RUNNING)
        got = _scratch_io(dst, ranges, None)
        for (region, offset, n), want, have in zip(ranges, expected, got, strict=True):
            assert have == want, (
                f"after the migration, scratch range {region}:{offset:#x}+{n:#x} of the "
                "destination does not hold what the source held"
            )


# ---- resuming from bad data


def _bad_stream(m: Mig, kind: str) -> list[bytes]:
    """The device's own stream, one byte in its middle flipped (damaged) or its first half
    only (cut), in the sizes it was read in."""
    data = b"".join(_own_stream(m))
    assert data, "STOP_COPY gave no data at all"
    if kind == "cut":
        data = data[: len(data) // 2]
    else:
        mid = len(data) // 2
        data = data[:mid] + bytes([data[mid] ^ 0xFF]) + data[mid + 1 :]
    return [data[i : i + m.chunk] for i in range(0, len(data), m.chunk)]


def _resume(m: Mig, stream: list[bytes]) -> str | None:
    """RESUMING, the stream written, then SET STOP: what the device refused (a write, as
    it came, or the SET), None if nothing."""
    m.go(RESUMING)
    for data in stream:
        if not _data_write(m.c, data).ok:
            return "a MIG_DATA_WRITE"
    return None if m.set_state(STOP).ok else "RESUMING -> STOP"


@case("migration_v2/resume-bad-data-refused", SHOULD, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("kind", ["damaged", "cut"])
def test_resume_bad_data_refused(mig, kind):
    """RESUMING -> STOP after the device's own stream, damaged or cut short, is refused (or
    a MIG_DATA_WRITE of it is, as the data comes); the device is then still RESUMING or in
    ERROR.

    Spec (Direct State Transitions): "RESUMING -> STOP: Terminate the data transfer
    session. Complete processing of the migration data. Stop the operation of the device.
    If the delivered data is found to be incomplete, inconsistent, or otherwise invalid,
    fail the SET command and optionally transition to the ERROR state." Whether the device
    finds the data bad is the device's to say, hence SHOULD.
    """
    refused = _resume(mig, _bad_stream(mig, kind))
    now = mig.state()
    assert refused, f"the device took its own stream {kind} as a whole and went to {name(now)}"
    assert now in (RESUMING, ERROR), (
        f"{refused} failed, but device_state reads {name(now)}; the SET failed, so the "
        "state is RESUMING (or, optionally, ERROR)"
    )


def _into_error(m: Mig) -> None:
    """The device in ERROR, by bad data; skips when it does not go there."""
    for kind in ("damaged", "cut"):
        _resume(m, _bad_stream(m, kind))
        if m.state() == ERROR:
            return
        if not _home(m, arcs=False):
            break
    pytest.skip(
        "cannot judge: the device did not go to ERROR after damaged or cut migration data "
        '("optionally transition to the ERROR state")'
    )


@case("migration_v2/error-reset-to-running", MUST, requires=NEEDS, revisions=REVS)
def test_error_reset_to_running(mig):
    """In ERROR (after bad migration data), DEVICE_RESET succeeds and brings RUNNING.

    Spec (Direct State Transitions): "To recover from ERROR, VFIO_USER_DEVICE_RESET must
    be used to return back to RUNNING."
    """
    _into_error(mig)
    accepted(mig.c.reset(), "DEVICE_RESET in ERROR")
    now = mig.state()
    assert now == RUNNING, f"after DEVICE_RESET in ERROR, device_state reads {name(now)}"


@case("migration_v2/error-needs-reset", SHOULD, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("to", [RUNNING, STOP], ids=_id)
def test_error_needs_reset(mig, vfu_observe, to):
    """In ERROR, a SET of device_state is refused and the device stays in ERROR (the
    control: after DEVICE_RESET, SET STOP succeeds).

    Spec (Direct State Transitions): "To recover from ERROR, VFIO_USER_DEVICE_RESET must
    be used to return back to RUNNING."
    """
    _into_error(mig)
    what = f"SET of device_state {name(to)} in ERROR"
    if _refused_set(mig, to, what, vfu_observe) is not None:
        now = mig.state()
        assert now == ERROR, f"after refusing {what}, device_state reads {name(now)}"
        accepted(mig.c.reset(), "DEVICE_RESET in ERROR")
        mig.go(STOP)


# ---- resumes on the same device

PIECE = 100  # bytes of the small reads and writes


def _pieces(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


def _scratch(m: Mig, vfu_device):
    """The scratch ranges, written with a new pattern: (ranges, what they hold). Without
    scratch ranges in the profile, none: a resume is then judged by its SET alone."""
    ranges = vfu_device.scratch_ranges() or []
    return ranges, _scratch_io(m, ranges, next(_seeds))


def _saved(m: Mig, size: int | None = None, precopy: bool = False) -> bytes:
    """From RUNNING: [-> PRE_COPY, read to the end,] -> STOP_COPY, read to the end, -> STOP;
    reads of ``size`` (m.chunk) bytes. The stream."""
    if precopy:
        m.go(PRE_COPY)
        head = b"".join(m.read_stream(size))
        m.go(STOP_COPY)
    else:
        head = b""
        m.walk(STOP_COPY)
    data = head + b"".join(m.read_stream(size))
    m.go(STOP)
    return data


def _restores(m: Mig, ranges, expected, pieces: list[bytes], what: str) -> None:
    """From STOP: [-> RUNNING, another pattern in the scratch ranges,] -> RESUMING,
    ``pieces`` written, -> STOP [-> RUNNING]; the scratch ranges must hold ``expected``
    (with none, the device stays stopped, and the SETs and writes must succeed: a complete
    resume)."""
    if ranges:
        m.go(RUNNING)
        if _scratch_io(m, ranges, next(_seeds)) == expected:
            pytest.skip("cannot judge: the scratch ranges hold the saved data whatever is written")
    m.walk(RESUMING)
    _restores_from_resuming(m, ranges, expected, pieces, what)


def _restores_from_resuming(m: Mig, ranges, expected, pieces, what: str) -> None:
    """In RESUMING: ``pieces`` written, -> STOP [-> RUNNING]; the scratch ranges must hold
    ``expected``."""
    m.write(pieces)
    m.go(STOP)
    if not ranges:
        return
    m.go(RUNNING)
    got = _scratch_io(m, ranges, None)
    for (region, offset, n), want, have in zip(ranges, expected, got, strict=True):
        assert have == want, (
            f"after {what}, scratch range {region}:{offset:#x}+{n:#x} does not hold what "
            "it held when the device was saved"
        )


@case("migration_v2/data-read-small-pieces", MUST, requires=NEEDS, revisions=REVS)
def test_data_read_small_pieces(mig, vfu_device):
    """The device's stream read in MIG_DATA_READs of 100 bytes, written back in RESUMING,
    restores the device: the scratch ranges hold what they held when it was saved.

    Spec (VFIO_USER_MIG_DATA_READ): "Hence, the migration data is treated like a stream,
    so the client must continue reading until no more migration data remains."; "size is
    the size of the migration data to read."
    """
    ranges, expected = _scratch(mig, vfu_device)
    data = _saved(mig, PIECE)
    _restores(mig, ranges, expected, _pieces(data, mig.chunk), "a resume of 100-byte reads")


@case("migration_v2/data-write-small-pieces", MUST, requires=NEEDS, revisions=REVS)
def test_data_write_small_pieces(mig, vfu_device):
    """The device's stream written in RESUMING in MIG_DATA_WRITEs of 100 bytes (not in the
    sizes it was read in) restores the device.

    Spec (VFIO_USER_MIG_DATA_WRITE): "As above, this replaces the data_fd file descriptor
    for transport of migration data, and as such, the migration data is treated like a
    stream."
    """
    ranges, expected = _scratch(mig, vfu_device)
    data = _saved(mig)
    _restores(mig, ranges, expected, _pieces(data, PIECE), "a resume in 100-byte writes")


@case("migration_v2/resume-pre-copy-stream", MUST, requires=NEEDS, revisions=REVS)
def test_resume_pre_copy_stream(mig, vfu_device):
    """The stream read in PRE_COPY and then in STOP_COPY (one stream), written back in
    RESUMING, restores the device.

    Spec (Direct State Transitions): "PRE_COPY -> STOP_COPY: Continue to transfer migration
    data, but stop device operation."; "RESUMING -> STOP: Terminate the data transfer
    session. Complete processing of the migration data."
    """
    _need_pre_copy(mig, PRE_COPY)
    ranges, expected = _scratch(mig, vfu_device)
    data = _saved(mig, precopy=True)
    _restores(mig, ranges, expected, _pieces(data, mig.chunk), "a resume of a pre-copy stream")


@case("migration_v2/data-read-size-zero", MUST, requires=NEEDS, revisions=REVS)
def test_data_read_size_zero(mig, vfu_device):
    """In STOP_COPY, a MIG_DATA_READ of size 0 (argsz 8) gets a reply payload of at most 8
    bytes (or is refused); the stream read after it restores the device.

    Spec (VFIO_USER_MIG_DATA_READ): "argsz is the maximum size of the reply payload.";
    "size is the size of the migration data to read." Spec (Message sizes): "This may be
    larger than the requested maximum size: in that case, the full payload is not included
    in the reply".
    """
    ranges, expected = _scratch(mig, vfu_device)
    mig.walk(STOP_COPY)
    reply = _data_read(mig.c, 0)
    assert len(reply.payload) <= _HEAD.size, (
        f"the reply to MIG_DATA_READ of size 0 with argsz 8 carries {len(reply.payload)} "
        "payload bytes"
    )
    data = b"".join(mig.read_stream())
    mig.go(STOP)
    _restores(mig, ranges, expected, _pieces(data, mig.chunk), "a read of size 0 and a resume")


@case("migration_v2/set-current-state", MAY, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("state", [STOP, STOP_COPY, PRE_COPY], ids=_id)
def test_set_current_state(mig, vfu_device, state):
    """A SET to the state the device is in succeeds and changes nothing: the state stays,
    and in a saving state the stream goes on where it was (a read before the SET and the
    reads after it restore the device).

    Spec (VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE): "device_state is the current state of the
    device (for GET) or the state to transition to (for SET)." The spec lists no arc from a
    state to itself, hence MAY.
    """
    _need_pre_copy(mig, state)
    ranges, expected = _scratch(mig, vfu_device)
    mig.walk(state)
    head = mig.read(mig.chunk) if state != STOP else b""
    mig.go(state)
    if state == STOP:
        return
    if state == PRE_COPY:
        head += b"".join(mig.read_stream())
        mig.go(STOP_COPY)
    data = head + b"".join(mig.read_stream())
    mig.go(STOP)
    _restores(mig, ranges, expected, _pieces(data, mig.chunk), f"a SET to {name(state)} in it")


@case("migration_v2/resume-no-data", MAY, requires=NEEDS, revisions=REVS)
def test_resume_no_data(mig):
    """STOP -> RESUMING -> STOP with no MIG_DATA_WRITE at all succeeds (a resume the client
    abandoned).

    Spec (Direct State Transitions): "RESUMING -> STOP: Terminate the data transfer
    session. Complete processing of the migration data. Stop the operation of the device.
    If the delivered data is found to be incomplete, inconsistent, or otherwise invalid,
    fail the SET command and optionally transition to the ERROR state." No data may be
    taken as incomplete, hence MAY.
    """
    mig.walk(RESUMING)
    mig.go(STOP)


@case("migration_v2/resume-twice", MUST, requires=NEEDS, revisions=REVS)
def test_resume_twice(mig, vfu_device):
    """After a complete resume (RESUMING -> STOP), a second STOP -> RESUMING with the stream
    written again restores the device: the new session does not see the old data.

    Spec (Direct State Transitions): "STOP -> RESUMING: Start the process of restoring the
    device state."; "RESUMING -> STOP: Terminate the data transfer session."
    """
    ranges, expected = _scratch(mig, vfu_device)
    pieces = _pieces(_saved(mig), mig.chunk)
    mig.go(RESUMING)
    mig.write(pieces)
    mig.go(STOP)
    _restores(mig, ranges, expected, pieces, "a second resume")


@case("migration_v2/saving-session-restarts", MUST, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("state", [PRE_COPY, STOP_COPY], ids=_id)
def test_saving_session_restarts(mig, vfu_device, state):
    """A saving session ended after a partial read (PRE_COPY -> RUNNING, STOP_COPY -> STOP):
    the next session's stream, read whole, restores the device (the old session's unread
    data is not in it).

    Spec (Direct State Transitions): "PRE_COPY -> RUNNING: Terminate the data transfer
    session."; "RUNNING -> STOP, STOP_COPY -> STOP: Stop the operation of the device. The
    STOP_COPY arc terminates the data transfer session."; "RUNNING -> PRE_COPY, STOP ->
    STOP_COPY: Begin the process of saving the device state."
    """
    _need_pre_copy(mig, state)
    ranges, expected = _scratch(mig, vfu_device)
    mig.walk(state)
    mig.read(16)
    mig.go(RUNNING if state == PRE_COPY else STOP)
    data = _saved(mig, precopy=state == PRE_COPY)
    _restores(mig, ranges, expected, _pieces(data, mig.chunk), "a restarted saving session")


@case("migration_v2/data-write-after-resume-refused", SHOULD, requires=NEEDS, revisions=REVS)
def test_data_write_after_resume_refused(mig, vfu_observe):
    """After a complete resume (RESUMING -> STOP), MIG_DATA_WRITE is refused and the state
    stays STOP (the control: the same write succeeded in RESUMING).

    Spec (VFIO_USER_MIG_DATA_WRITE): "This command is used to write data to the
    destination migration server while it is in the RESUMING state." Spec (Direct State
    Transitions): "RESUMING -> STOP: Terminate the data transfer session."
    """
    stream = _own_stream(mig)
    mig.go(RESUMING)
    mig.write(stream)
    mig.go(STOP)
    data = stream[-1] if stream else _pattern(next(_seeds), 0, 0, mig.chunk)
    what = f"MIG_DATA_WRITE of {len(data)} bytes after RESUMING -> STOP"
    payload = _HEAD.pack(8 + len(data), len(data)) + data
    if _refused(mig, Command.MIG_DATA_WRITE, payload, what, vfu_observe) is not None:
        assert mig.state() == STOP, f"after refusing {what}, device_state reads {name(mig.state())}"


@case("migration_v2/pre-copy-unread-kept", MUST, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("head", [0, 16], ids=["none-read", "16-bytes-read"])
def test_pre_copy_unread_kept(mig, vfu_device, head):
    """PRE_COPY -> STOP_COPY with the pre-copy data unread (or 16 bytes of it read): what
    was read in PRE_COPY and the STOP_COPY reads to the end restore the device.

    Spec (Direct State Transitions): "PRE_COPY -> STOP_COPY: Continue to transfer migration
    data, but stop device operation." Spec (VFIO_USER_MIG_DATA_READ): "Hence, the migration
    data is treated like a stream, so the client must continue reading until no more
    migration data remains."
    """
    _need_pre_copy(mig, PRE_COPY)
    ranges, expected = _scratch(mig, vfu_device)
    mig.go(PRE_COPY)
    data = mig.read(head) if head else b""
    mig.go(STOP_COPY)
    data += b"".join(mig.read_stream())
    mig.go(STOP)
    _restores(mig, ranges, expected, _pieces(data, mig.chunk), "PRE_COPY left with data unread")


@case("migration_v2/data-write-size-zero", MUST, requires=NEEDS, revisions=REVS)
def test_data_write_size_zero(mig, vfu_device, vfu_observe):
    """In RESUMING, a MIG_DATA_WRITE of size 0 in the middle of the stream (accepted or
    refused) adds nothing: the stream around it restores the device.

    Spec (VFIO_USER_MIG_DATA_WRITE): "size is the size of the migration data to be
    written."; "As above, this replaces the data_fd file descriptor for transport of
    migration data, and as such, the migration data is treated like a stream."
    """
    ranges, expected = _scratch(mig, vfu_device)
    data = _saved(mig)
    if ranges:
        mig.go(RUNNING)
        if _scratch_io(mig, ranges, next(_seeds)) == expected:
            pytest.skip("cannot judge: the scratch ranges hold the saved data whatever is written")
    mig.walk(RESUMING)
    half = len(data) // 2
    mig.write(_pieces(data[:half], mig.chunk))
    if not _data_write(mig.c, b"").ok:
        vfu_observe("MIG_DATA_WRITE of size 0 in RESUMING was refused")
    pieces = _pieces(data[half:], mig.chunk)
    _restores_from_resuming(mig, ranges, expected, pieces, "a write of size 0")


@case("migration_v2/reset-in-resuming", MAY, requires=NEEDS, revisions=REVS)
def test_reset_in_resuming(mig, vfu_device):
    """DEVICE_RESET in RESUMING after half the stream brings RUNNING, and a new resume of
    the whole stream then restores the device (nothing of the abandoned one is left).

    Spec (VFIO_USER_DEVICE_RESET): "This command message is sent from the client to the
    server to reset the device." Spec (Direct State Transitions): "STOP -> RESUMING: Start
    the process of restoring the device state." What a reset does outside ERROR the spec
    leaves to the device, hence MAY.
    """
    ranges, expected = _scratch(mig, vfu_device)
    data = _saved(mig)
    mig.go(RESUMING)
    mig.write(_pieces(data[: len(data) // 2], mig.chunk))
    accepted(mig.c.reset(), "DEVICE_RESET in RESUMING")
    now = mig.state()
    assert now == RUNNING, f"after DEVICE_RESET in RESUMING, device_state reads {name(now)}"
    if ranges and _scratch_io(mig, ranges, next(_seeds)) == expected:
        pytest.skip("cannot judge: the scratch ranges hold the saved data whatever is written")
    mig.walk(RESUMING)
    _restores_from_resuming(
        mig, ranges, expected, _pieces(data, mig.chunk), "a resume after a reset"
    )
