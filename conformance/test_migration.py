"""VFIO Device Migration Info (0.9.1): the migration region, its states, and migrating.

Every case needs ``migration_v1`` (a region with the type capability
VFIO_REGION_TYPE_MIGRATION 3 / VFIO_REGION_SUBTYPE_MIGRATION 1). The client
negotiates the migration capability (pgsize 4096), as a migrating client
would. The device keeps its state across connections, so each case starts
from RUNNING and walks the device back to RUNNING afterwards (by valid
transitions; a brand-new server process when that fails).

Whole migrations need a second server process: the destination is started
from the same command as the target (``--vfu-server`` or the embedded
reference server); with ``--vfu-socket`` those cases are UNIMPLEMENTED. Data
is written to the destination in the order and sizes it was read, and after
each chunk the client writes ``data_size`` (as the kernel's v1 protocol and
QEMU do).
"""

from __future__ import annotations

import struct

import pytest

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.client import ClientError
from pytest_vfiouser.protocol import (
    V1_TABLE_STATES,
    VFIO_REGION_SUBTYPE_MIGRATION,
    VFIO_REGION_TYPE_MIGRATION,
    Command,
    MigrationInfo,
    RegionFlags,
    RegionTypeCap,
    Version,
    v1_transition_valid,
)
from pytest_vfiouser.protocol import MigrationStateV1 as S

from ._support import BACK, accepted, pattern, second_server, state_name

REVS = ("0.9.1",)
NEEDS = ("migration_v1",)
PGSIZE = 4096
STATE, RESERVED = MigrationInfo.DEVICE_STATE, MigrationInfo.RESERVED
PENDING, DATA_OFFSET, DATA_SIZE = (
    MigrationInfo.PENDING_BYTES,
    MigrationInfo.DATA_OFFSET,
    MigrationInfo.DATA_SIZE,
)
MAX_ITERATIONS = 20000  # of the saving loop, before giving up on pending_bytes reaching 0
MAX_BYTES = 512 << 20  # of migration data a case reads
PRECOPY_CHUNKS = 64  # pre-copy iterations a migration makes before stop-and-copy
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")


class Mig:
    """The migration region of one connection."""

    def __init__(self, client, index: int, size: int):
        self.c = client
        self.index = index
        self.size = size
        server = client.server_caps.max_data_xfer_size if client.server_caps else 1 << 20
        self.xfer = max(1, min(client.max_data_xfer_size, server))

    def state(self) -> int:
        reply = accepted(self.c.region_read(self.index, STATE, 4), "REGION_READ of device_state")
        return _U32.unpack(reply.body.data)[0]

    def set_state(self, value: int):
        return self.c.region_write(self.index, STATE, _U32.pack(value))

    def go(self, value: int) -> None:
        """A transition that must succeed."""
        before = self.state()
        accepted(
            self.set_state(value), f"the transition {state_name(before)} -> {state_name(value)}"
        )
        now = self.state()
        assert now == value, (
            f"after the transition {state_name(before)} -> {state_name(value)} "
            f"succeeded, device_state reads {state_name(now)}"
        )

    def read64(self, offset: int, name: str) -> int:
        reply = accepted(self.c.region_read(self.index, offset, 8), f"REGION_READ of {name}")
        return _U64.unpack(reply.body.data)[0]

    def write64(self, offset: int, value: int):
        return self.c.region_write(self.index, offset, _U64.pack(value))

    def read_data(self, offset: int, size: int) -> list[bytes]:
        """The data at ``offset``, as the REGION_READ transactions it was read in."""
        out = []
        for pos in range(0, size, self.xfer):
            n = min(self.xfer, size - pos)
            reply = accepted(
                self.c.region_read(self.index, offset + pos, n),
                f"REGION_READ of migration data at {offset + pos:#x}",
            )
            assert len(reply.body.data) == n, (
                f"REGION_READ of {n} bytes of migration data returned {len(reply.body.data)}"
            )
            out.append(reply.body.data)
        return out

    def chunk_bounds(self) -> tuple[int, int]:
        """Step 2 and 3 of the loop: data_offset, then data_size, checked against the region."""
        offset = self.read64(DATA_OFFSET, "data_offset")
        size = self.read64(DATA_SIZE, "data_size")
        assert MigrationInfo.SIZE <= offset, (
            f"data_offset {offset:#x} points into struct vfio_device_migration_info; "
            "device data must be stored after it"
        )
        assert offset + size <= self.size, (
            f"data_offset {offset:#x} + data_size {size:#x} runs past the end of the "
            f"{self.size:#x}-byte migration region"
        )
        return offset, size


def _migration_region(vfu_device) -> tuple[int, int]:
    for index, info in sorted(vfu_device.regions.items()):
        cap = info.cap(RegionTypeCap)
        if cap is not None and (cap.type, cap.subtype) == (
            VFIO_REGION_TYPE_MIGRATION,
            VFIO_REGION_SUBTYPE_MIGRATION,
        ):
            return index, info.size
    pytest.skip("device has no migration region")


def _negotiate(client) -> None:
    client.negotiate(capabilities=client.proposal(migration={"pgsize": PGSIZE}))


def _walk_back(m: Mig) -> bool:
    """Back to RUNNING by valid transitions; False if that did not work."""
    try:
        state = m.state()
        for target in BACK.get(state, (None,)):
            if target is None or not m.set_state(target).ok:
                return False
        return m.state() == S.RUNNING
    except (ClientError, OSError, AssertionError):
        return False


@pytest.fixture
def mig(vfu_connect, vfu_device, vfu_target):
    """The target's migration region, in RUNNING; walked back to RUNNING afterwards."""
    index, size = _migration_region(vfu_device)

    def connect() -> Mig:
        client = vfu_connect()
        _negotiate(client)
        return Mig(client, index, size)

    m = connect()
    if not _walk_back(m):
        m.c.close()
        vfu_target.fresh()
        m = connect()
        assert m.state() == S.RUNNING, (
            f"a brand-new server process reads device_state {state_name(m.state())}, not running"
        )
    yield m
    if not m.c.closed and _walk_back(m):
        return
    m.c.close()
    if vfu_target.managed:
        vfu_target.fresh()


# ---- the destination: a second server process


def _destination(connect, index: int) -> Mig:
    client = connect()
    _negotiate(client)
    info = accepted(client.region_info(index, argsz=4096), "DEVICE_GET_REGION_INFO").body
    cap = info.cap(RegionTypeCap)
    assert cap is not None and (cap.type, cap.subtype) == (3, 1), (
        f"region {index} of the second server process is not a migration region"
    )
    return Mig(client, index, info.size)


def _saving_chunks(src: Mig, limit: int | None = None):
    """The spec's loop on the source: each chunk (its read transactions) until
    pending_bytes is 0 (or ``limit`` chunks)."""
    total = 0
    for i in range(MAX_ITERATIONS):
        if limit is not None and i >= limit:
            return
        if src.read64(PENDING, "pending_bytes") == 0:
            return
        offset, size = src.chunk_bounds()
        total += size
        assert total <= MAX_BYTES, f"more than {MAX_BYTES} bytes of migration data"
        yield src.read_data(offset, size)
    if limit is None:
        raise AssertionError(
            f"pending_bytes did not reach 0 in {MAX_ITERATIONS} iterations of stop-and-copy"
        )


def _feed(dst: Mig, transactions: list[bytes]):
    """Resume one chunk: data at data_offset in the same transactions, then data_size.
    Returns the first failed reply, or None."""
    offset = dst.read64(DATA_OFFSET, "data_offset (destination)")
    n = sum(map(len, transactions))
    assert MigrationInfo.SIZE <= offset and offset + n <= dst.size, (
        f"the destination's data_offset {offset:#x} leaves no room for a {n:#x}-byte chunk in "
        f"its {dst.size:#x}-byte migration region"
    )
    pos = offset
    for t in transactions:
        reply = dst.c.region_write(dst.index, pos, t)
        if not reply.ok:
            return reply
        pos += len(t)
    reply = dst.write64(DATA_SIZE, n)
    return None if reply.ok else reply


def _migrate(src: Mig, dst: Mig, precopy: bool = True) -> None:
    dst.go(S.RESUMING)
    if precopy:
        src.go(S.PRE_COPY)
        for chunk in _saving_chunks(src, PRECOPY_CHUNKS):
            bad = _feed(dst, chunk)
            assert bad is None, f"the destination refused pre-copy data from the source: {bad!r}"
    src.go(S.STOP_AND_COPY)
    for chunk in _saving_chunks(src):
        bad = _feed(dst, chunk)
        assert bad is None, f"the destination refused migration data from the source: {bad!r}"
    dst.go(S.RUNNING)


def _pattern(region: int, offset: int, n: int) -> bytes:
    return pattern(n, offset * 7 + region * 29 + 0xA5, 7)


def _scratch(vfu_device, index: int) -> list[tuple[int, int, int]]:
    ranges = [r for r in vfu_device.scratch_ranges() if r[0] != index]
    if not ranges:
        pytest.skip("needs profile: scratch ranges (regions[].scratch) to put data in")
    return ranges


def _write_scratch(m: Mig, ranges) -> None:
    for region, offset, n in ranges:
        for pos in range(0, n, m.xfer):
            k = min(m.xfer, n - pos)
            accepted(
                m.c.region_write(region, offset + pos, _pattern(region, offset + pos, k)),
                f"REGION_WRITE to scratch range {region}:{offset + pos:#x}",
            )


def _read(m: Mig, region: int, offset: int, n: int) -> bytes:
    return b"".join(
        accepted(
            m.c.region_read(region, offset + pos, min(m.xfer, n - pos)),
            f"REGION_READ of region {region}",
        ).body.data
        for pos in range(0, n, m.xfer)
    )


# ---- the region and the capability


@case("migration/region-layout", MUST, requires=NEEDS, revisions=REVS)
def test_region_layout(vfu_client, vfu_device):
    """The migration region is readable and writable, carries the region type capability
    (version 1) and has room for struct vfio_device_migration_info.

    Spec (VFIO Device Migration Info): "The beginning of the region must
    contain struct vfio_device_migration_info, defined in <linux/vfio.h>. This
    subregion is accessed like any other part of a standard vfio-user region
    using VFIO_USER_REGION_READ/VFIO_USER_REGION_WRITE." Spec (VFIO region type
    cap header): id VFIO_REGION_INFO_CAP_TYPE, "version 0x1".
    """
    index, _ = _migration_region(vfu_device)
    info = accepted(vfu_client.region_info(index, argsz=4096), "DEVICE_GET_REGION_INFO").body
    need = RegionFlags.READ | RegionFlags.WRITE | RegionFlags.CAPS
    assert info.flags & need == need, (
        f"the migration region's flags {info.flags:#x} lack READ, WRITE or CAPS"
    )
    assert info.size >= MigrationInfo.SIZE, (
        f"the migration region is {info.size} bytes, too small for the 32-byte "
        "struct vfio_device_migration_info"
    )
    cap = info.cap(RegionTypeCap)
    assert cap is not None and cap.version == 1, (
        f"the region type capability has version {cap.version if cap else None}, not 1"
    )


@case("migration/capability-with-region", MUST, requires=NEEDS, revisions=REVS)
def test_capability_with_region(vfu_connect):
    """A server whose device has a migration region answers the migration capability when
    the client proposes it, with pgsize the smaller of the client's and its own.

    (version/migration-pgsize checks the reply's pgsize alone; here the answers
    to two proposals must agree on one server page size.)

    Spec (VFIO_USER_VERSION): "migration: Migration capability parameters. If
    missing then migration is not supported by the sender."; "pgsize: Page
    size of dirty pages bitmap. The smallest between the client and the server
    is used."
    """
    answered = {}
    for proposed in (1 << 30, PGSIZE):
        client = vfu_connect()
        reply = accepted(
            client.request(
                Command.VERSION, Version.with_capabilities(0, 0, migration={"pgsize": proposed})
            ),
            "VERSION proposing migration",
        ).body
        caps = reply.capabilities
        assert caps.migration is not None, (
            "the device has a migration region, but the VERSION reply has no migration "
            "capability: the server says it does not support migration"
        )
        pgsize = caps.migration_pgsize
        assert isinstance(pgsize, int) and 0 < pgsize <= proposed, (
            f"the migration capability's pgsize is {pgsize!r}; with {proposed} proposed it "
            "must be the smaller of the client's and the server's"
        )
        answered[proposed] = pgsize
        client.close()
    server = answered[1 << 30]  # the server's own page size
    assert answered[PGSIZE] == min(PGSIZE, server), (
        f"proposing {PGSIZE} got pgsize {answered[PGSIZE]}; the server's own is {server}, so "
        f"the smaller is {min(PGSIZE, server)}"
    )


@case("migration/starts-running", MUST, requires=NEEDS, revisions=REVS)
def test_starts_running(vfu_target, vfu_connect, vfu_device):
    """A brand-new device reads device_state RUNNING.

    Spec (VFIO Device Migration Info): "0 0 1 | Device is running, default
    state."
    """
    index, size = _migration_region(vfu_device)
    vfu_target.fresh()
    client = vfu_connect()
    _negotiate(client)
    state = Mig(client, index, size).state()
    assert state == S.RUNNING, f"a new device's device_state is {state_name(state)}, not running"


# ---- transitions


@case("migration/transition", MUST, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize(
    "to", [*V1_TABLE_STATES, S.INVALID_101, S.ERROR, S.INVALID_111], ids=lambda s: state_name(s)
)
@pytest.mark.parametrize("frm", V1_TABLE_STATES, ids=lambda s: state_name(s))
def test_transition(mig, vfu_observe, frm, to):
    """Transitions of the spec's table succeed and read back; all others (and the invalid
    states 101 and 111, and the error state 110) fail and leave the state as it was.

    Spec (VFIO Device Migration Info): "Valid state transitions are shown in
    the following table"; "The server must respond only after it has
    successfully transitioned to the new state. If an error occurs then the
    server must respond to the VFIO_USER_REGION_WRITE operation with the Error
    field set accordingly and must remain at the previous state". A
    transition to the same state ("-" in the table) is not defined: either
    answer is accepted, the state must stay.
    """
    if frm != S.RUNNING:
        mig.go(frm)
    reply = mig.set_state(to)
    now = mig.state()
    what = f"the transition {state_name(frm)} -> {state_name(to)}"
    if to == frm:
        assert now == frm, (
            f"after writing the current state {state_name(frm)}, it reads {state_name(now)}"
        )
        if not reply.ok:
            vfu_observe(f"the server refused to write the current state {state_name(frm)} again")
        return
    if v1_transition_valid(frm, to):
        if (frm, to) == (S.RESUMING, S.RUNNING) and not reply.ok and now == S.RESUMING:
            vfu_observe(
                "the server refused resuming -> running when no migration data was "
                "written (an error it may report; the state stayed resuming)"
            )
            return
        assert reply.ok, (
            f"{what} is valid in the spec's table, but the server refused it (errno {reply.error})"
        )
        assert not reply.payload[16:], "the REGION_WRITE reply carries data"
        assert now == to, f"{what} succeeded, but device_state reads {state_name(now)}"
    else:
        assert not reply.ok, (
            f"{what} is not in the spec's table of valid transitions, but "
            f"the server accepted it (device_state now {state_name(now)})"
        )
        assert not reply.payload, "the error reply carries a payload"
        assert now == frm, (
            f"after refusing {what}, device_state reads {state_name(now)}; the "
            f"server must remain at the previous state"
        )


# ---- the fields


@case("migration/pending-bytes-read-only", MUST, requires=NEEDS, revisions=REVS)
def test_pending_bytes_read_only(mig):
    """A write to pending_bytes does not change it (refused or ignored), and reading it again
    gives the same value.

    Spec (VFIO Device Migration Info): "pending_bytes Remaining bytes to be
    migrated by the server. This field is read only."; "Repeated reads of this
    field is an idempotent operation."
    """
    mig.go(S.STOP_AND_COPY)
    before = mig.read64(PENDING, "pending_bytes")
    again = mig.read64(PENDING, "pending_bytes")
    assert again == before, f"two reads of pending_bytes gave {before} then {again}"
    mig.write64(PENDING, before + 0x10000)
    after = mig.read64(PENDING, "pending_bytes")
    assert after == before, (
        f"after a write of {before + 0x10000} to the read-only pending_bytes it reads {after} "
        f"(was {before})"
    )
    assert mig.state() == S.STOP_AND_COPY


@case("migration/pending-bytes-idempotent", MUST, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("state", [S.PRE_COPY, S.STOP_AND_COPY], ids=lambda s: state_name(s))
def test_pending_bytes_idempotent(mig, state):
    """Reading pending_bytes repeatedly, within and after an iteration, gives one value.

    Spec (VFIO Device Migration Info): "The client reads pending_bytes to mark
    a new iteration. Repeated reads of this field is an idempotent operation."
    """
    mig.go(state)
    for _ in range(3):
        values = [mig.read64(PENDING, "pending_bytes") for _ in range(3)]
        assert len(set(values)) == 1, f"repeated reads of pending_bytes gave {values}"
        if not values[0]:
            break
        offset, size = mig.chunk_bounds()
        mig.read_data(offset, size)


@case("migration/data-offset-read-only", MUST, requires=NEEDS, revisions=REVS)
def test_data_offset_read_only(mig):
    """A write to data_offset does not change it (refused or ignored).

    Spec (VFIO Device Migration Info): "data_offset Offset in the migration
    region where the client must: read from, during the pre-copy or
    stop-and-copy state, or write to, during the resuming state. This field is
    read only."
    """
    mig.go(S.RESUMING)
    before = mig.read64(DATA_OFFSET, "data_offset")
    mig.write64(DATA_OFFSET, before + 8)
    after = mig.read64(DATA_OFFSET, "data_offset")
    assert after == before, (
        f"after a write of {before + 8:#x} to the read-only data_offset it reads {after:#x} "
        f"(was {before:#x})"
    )
    assert mig.state() == S.RESUMING


@case("migration/reserved-ignored", MUST, requires=NEEDS, revisions=REVS)
def test_reserved_ignored(mig):
    """Reads and writes of reserved succeed and change nothing.

    Spec (VFIO Device Migration Info): "reserved This field is reserved and any
    access to it must be ignored by the server."
    """
    accepted(mig.c.region_read(mig.index, RESERVED, 4), "REGION_READ of reserved")
    reply = mig.c.region_write(mig.index, RESERVED, b"\xff\xff\xff\xff")
    assert reply.ok, (
        f"the server refused a write to reserved (errno {reply.error}); any "
        "access to it must be ignored"
    )
    assert mig.state() == S.RUNNING, "a write to reserved changed device_state"


# ---- the saving loop


@case("migration/precopy-iteration", MUST, requires=NEEDS, revisions=REVS)
def test_precopy_iteration(mig, vfu_observe):
    """In pre-copy each iteration offers data inside the migration region, after the
    migration info, which the client can read.

    Spec (VFIO Device Migration Info): "The client reads data_offset; at this
    point the server must make available a portion of migration data at this
    offset to be read by the client"; "Device-specific data must be stored at
    any position after struct vfio_device_migration_info."
    """
    mig.go(S.PRE_COPY)
    chunks = list(_saving_chunks(mig, limit=8))
    if not chunks:
        vfu_observe("the device offered no pre-copy data (pending_bytes 0)")


@case("migration/stop-and-copy-ends", MUST, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("via", ["running", "pre-copy"])
def test_stop_and_copy_ends(mig, via):
    """The stop-and-copy loop ends: pending_bytes reaches 0, each chunk inside the region.

    Spec (VFIO Device Migration Info): "If there are no migration data to be
    consumed then the next step depends on the current device state: ...
    stop-and-copy: this procedure can end and the device can now start
    resuming on the destination."
    """
    if via == "pre-copy":
        mig.go(S.PRE_COPY)
        list(_saving_chunks(mig, limit=PRECOPY_CHUNKS))
    mig.go(S.STOP_AND_COPY)
    list(_saving_chunks(mig))  # raises if pending_bytes never reaches 0
    assert mig.read64(PENDING, "pending_bytes") == 0, "pending_bytes went back above 0"


@case("migration/precopy-to-stop-and-copy-any-time", MUST, requires=NEEDS, revisions=REVS)
def test_precopy_to_stop_and_copy_any_time(mig):
    """The client may go from pre-copy to stop-and-copy in the middle of an iteration.

    Spec (VFIO Device Migration Info): "Note that the client can transition the
    device from the pre-copy state to the stop-and-copy state at any time;
    pending_bytes does not need to become zero."
    """
    mig.go(S.PRE_COPY)
    if mig.read64(PENDING, "pending_bytes"):
        mig.chunk_bounds()  # a chunk offered, not read
    mig.go(S.STOP_AND_COPY)


# ---- whole migrations


@case("migration/full-migration-scratch", MUST, requires=NEEDS, revisions=REVS)
@pytest.mark.parametrize("precopy", [True, False], ids=["with-pre-copy", "stop-and-copy-only"])
def test_full_migration_scratch(request, mig, vfu_device, precopy):
    """Migrated to a second server process, the device holds what the source held in every
    scratch range.

    Spec (VFIO Device Migration Info): "The client initializes the device state
    on the destination by setting the device state in the resuming state and
    writing the migration data to the destination migration region at
    data_offset offset. ... The server must apply the source migration data on
    the device resume state. The client must write data on the same order and
    transaction size as read."
    """
    ranges = _scratch(vfu_device, mig.index)
    _write_scratch(mig, ranges)
    with second_server(request) as connect:
        dst = _destination(connect, mig.index)
        _migrate(mig, dst, precopy)
        for region, offset, n in ranges:
            got = _read(dst, region, offset, n)
            assert got == _pattern(region, offset, n), (
                f"after the migration, scratch range {region}:{offset:#x}+{n:#x} of the "
                "destination does not hold what the source held"
            )


@case(
    "migration/full-migration-device-state",
    MUST,
    requires=(*NEEDS, "vfu_device_state"),
    revisions=REVS,
)
def test_full_migration_device_state(request, mig, vfu_device, vfu_hooks):
    """Migrated to a second server process, the device is in the source's state (the
    profile's vfu_device_state hook).

    Spec (VFIO Device Migration Info): "The server must apply the source
    migration data on the device resume state."
    """
    ranges = [r for r in vfu_device.scratch_ranges() if r[0] != mig.index]
    _write_scratch(mig, ranges)
    expected = vfu_hooks.device_state(mig.c)
    with second_server(request) as connect:
        dst = _destination(connect, mig.index)
        assert vfu_hooks.device_state(dst.c) != expected or not ranges, (
            "the destination already held the source's state: the case could not tell"
        )
        _migrate(mig, dst)
        got = vfu_hooks.device_state(dst.c)
        assert got == expected, (
            "after the migration the destination's device state (vfu_device_state) differs "
            f"from the source's ({len(got)} bytes against {len(expected)})"
        )


# ---- resuming from bad data


def _feed_garbage(dst: Mig) -> list[str]:
    """RESUMING, then a chunk of bytes that are no device's migration data; the steps the
    server refused."""
    refused = []
    dst.go(S.RESUMING)
    offset = dst.read64(DATA_OFFSET, "data_offset")
    n = min(4096, dst.size - offset)
    garbage = bytes((i * 151 + 7) & 0xFF for i in range(n))
    if not dst.c.region_write(dst.index, offset, garbage).ok:
        refused.append("the data write")
    elif not dst.write64(DATA_SIZE, n).ok:
        refused.append("the data_size write")
    if not dst.set_state(S.RUNNING).ok:
        refused.append("resuming -> running")
    return refused


@case("migration/resume-garbage-refused", SHOULD, requires=NEEDS, revisions=REVS)
def test_resume_garbage_refused(request, vfu_device):
    """A destination given bytes that are not migration data refuses them: the write, the
    data_size write, or the transition to running fails.

    Spec (VFIO Device Migration Info): "If an error occurs then the server must
    fail the read or write operation." Whether some bytes are an error is the
    device's to say, hence SHOULD.
    """
    index, _ = _migration_region(vfu_device)
    with second_server(request) as connect:
        dst = _destination(connect, index)
        refused = _feed_garbage(dst)
        assert refused, (
            "the destination accepted 4096 bytes of garbage as migration data "
            "and went back to running"
        )


def _truncated(mig: Mig) -> tuple[list[list[bytes]], str]:
    """The source's stop-and-copy data without its last chunk (or half of the only one)."""
    mig.go(S.STOP_AND_COPY)
    chunks = list(_saving_chunks(mig))
    assert chunks, "stop-and-copy offered no data at all"
    if len(chunks) > 1:
        return chunks[:-1], f"{len(chunks) - 1} of the {len(chunks)} chunks"
    data = b"".join(chunks[0])
    return [[data[: len(data) // 2]]], "the first half of the only chunk"


def _resume_truncated(dst: Mig, chunks: list[list[bytes]]) -> tuple[str | None, object]:
    """Feed ``chunks``, then resuming -> running: (what was refused or None, the reply)."""
    dst.go(S.RESUMING)
    for chunk in chunks:
        bad = _feed(dst, chunk)
        if bad is not None:
            return "a chunk", bad
    reply = dst.set_state(S.RUNNING)
    return (None if reply.ok else "resuming -> running"), reply


@case("migration/resume-truncated-refused", SHOULD, requires=NEEDS, revisions=REVS)
def test_resume_truncated_refused(request, mig):
    """A destination that got only part of the source's data refuses to run with it.

    Spec (VFIO Device Migration Info): "If an error occurs then the server must
    fail the read or write operation."; "The client must write data on the
    same order and transaction size as read." Whether the device can tell its
    data is incomplete is the device's to say, hence SHOULD.
    """
    chunks, what = _truncated(mig)
    with second_server(request) as connect:
        dst = _destination(connect, mig.index)
        refused, _ = _resume_truncated(dst, chunks)
        assert refused, (
            f"the destination got {what} of the stop-and-copy data and went to "
            "running as if it had it all"
        )


@case("migration/failed-resume-keeps-state", MUST, requires=NEEDS, revisions=REVS)
def test_failed_resume_keeps_state(request, mig, vfu_observe):
    """When the transition from resuming to running fails, the device stays resuming (or,
    on an internal error, reads the error state).

    Spec (VFIO Device Migration Info): "If an error occurs then the server must
    respond to the VFIO_USER_REGION_WRITE operation with the Error field set
    accordingly and must remain at the previous state, or in case of internal
    error it must transition to the error state"
    """
    chunks, what = _truncated(mig)
    with second_server(request) as connect:
        dst = _destination(connect, mig.index)
        refused, _ = _resume_truncated(dst, chunks)
        state = dst.state()
        if refused != "resuming -> running":
            vfu_observe(
                f"after {what} of the data, the destination did not refuse resuming "
                f"-> running ({refused or 'nothing'} refused): nothing to check"
            )
            return
        assert state in (S.RESUMING, S.ERROR), (
            f"resuming -> running failed, but device_state reads {state_name(state)}; it must "
            "remain resuming (or be the error state)"
        )
