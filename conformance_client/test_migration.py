"""The 0.9.1 migration region, as the client drives it: the iteration's order, where
it reads and writes the data, the resuming stream's chunks, the state after an error.

The migration region is the one whose DEVICE_GET_REGION_INFO reply carries the type
capability VFIO_REGION_TYPE_MIGRATION / SUBTYPE_MIGRATION; the client's REGION_READ and
REGION_WRITE of it, with the server's replies, are its migration.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from pytest_vfiouser import MUST, case
from pytest_vfiouser.protocol import (
    VFIO_REGION_SUBTYPE_MIGRATION,
    VFIO_REGION_TYPE_MIGRATION,
    CodecError,
    Command,
    MigrationInfo,
    MigrationStateBits,
    RegionInfo,
    RegionTypeCap,
)

from ._support import listed, need

_FIELDS = {
    MigrationInfo.DEVICE_STATE: "device_state",
    MigrationInfo.PENDING_BYTES: "pending_bytes",
    MigrationInfo.DATA_OFFSET: "data_offset",
    MigrationInfo.DATA_SIZE: "data_size",
}
_WIDTH = {MigrationInfo.DEVICE_STATE: 4}  # the others are u64


@dataclass(frozen=True)
class Access:
    """A REGION_READ or REGION_WRITE of the migration region, as it went."""

    message: object  # the client's command
    write: bool
    offset: int
    count: int
    value: int | None  # a whole field's value: written, or read back (None otherwise)
    ok: bool  # answered without the Error bit
    state: int  # device_state as the client last set it (successfully) before this

    @property
    def field(self) -> str | None:
        """The field it is exactly (e.g. "pending_bytes"), None for the data area etc."""
        name = _FIELDS.get(self.offset)
        return name if name and self.count == _WIDTH.get(self.offset, 8) else None

    @property
    def data(self) -> bool:
        return self.offset >= MigrationInfo.SIZE

    @property
    def saving(self) -> bool:
        return bool(self.state & MigrationStateBits.SAVING)

    @property
    def resuming(self) -> bool:
        return self.state == MigrationStateBits.RESUMING


def _accesses(session) -> list[Access]:
    """The session's accesses of its migration region, in order ([] without one)."""
    region = _migration_region(session)
    out, state = [], int(MigrationStateBits.RUNNING)  # "starts RUNNING"
    if region is None:
        return out
    for m in session.sent():
        if m.command not in (Command.REGION_READ, Command.REGION_WRITE) or len(m.payload) < 16:
            continue
        offset, index, count = struct.unpack_from("<QII", m.payload)
        if index != region:
            continue
        reply = session.reply_to(m)
        ok = reply is not None and not reply.is_error
        write = m.command == Command.REGION_WRITE
        data = m.payload[16:] if write else reply.payload[16:] if ok else b""
        value = int.from_bytes(data, "little") if len(data) == count <= 8 else None
        a = Access(m, write, offset, count, value, ok, state)
        if write and ok and a.field == "device_state":
            state = value
        out.append(a)
    return out


def _migration_region(session) -> int | None:
    for m in session.sent(Command.DEVICE_GET_REGION_INFO):
        reply = session.reply_to(m)
        if reply is None or reply.is_error:
            continue
        try:
            cap = RegionInfo.unpack(reply.payload).cap(RegionTypeCap)
        except CodecError:
            continue
        if cap and (cap.type, cap.subtype) == (
            VFIO_REGION_TYPE_MIGRATION,
            VFIO_REGION_SUBTYPE_MIGRATION,
        ):
            return struct.unpack_from("<I", m.payload, 8)[0]
    return None


def _migrations(sessions) -> list[list[Access]]:
    found = [a for a in (_accesses(s) for s in sessions) if a]
    return need(found, "REGION_READ/REGION_WRITE of a migration region (it did not migrate)")


@case("client/migration/iteration-order", MUST, revisions=("0.9.1",))
def test_iteration_order(vfu_sessions):
    """While saving (pre-copy, stop-and-copy), each iteration reads pending_bytes, then
    data_offset, then data_size, then the data.

    Spec (Migration): "The client processes device state data during the pre-copy and the
    stop-and-copy state in the following iterative manner: 1. The client reads
    pending_bytes to mark a new iteration. ... 2. The client reads data_offset ... 3. The
    client reads data_size to determine the amount of migration data available. 4. The
    client reads and processes the migration data. 5. Go to step 1."
    """
    bad = []
    for accesses in _migrations(vfu_sessions):
        step = 0  # done: 1 pending_bytes, 2 data_offset, 3 data_size, 4 the data
        for a in accesses:
            if a.write or not a.saving:
                step = 0
                continue
            if a.field == "pending_bytes":
                step = 1
                continue
            if a.field == "data_offset":
                allowed, missing = step in (1, 2, 3), "pending_bytes"
            elif a.field == "data_size":
                allowed, missing = step in (2, 3), "data_offset"
            elif a.data:
                allowed, missing = step in (3, 4), "data_size"
            else:
                continue
            if not allowed:
                what = a.field or f"the data at {a.offset:#x}"
                bad.append(f"{a.message.describe()} reads {what} without reading {missing} first")
            step = {"data_offset": 2, "data_size": 3}.get(a.field, 4)
    assert not bad, listed(bad)


@case("client/migration/data-at-data-offset", MUST, revisions=("0.9.1",))
def test_data_at_data_offset(vfu_sessions):
    """The client reads the data (saving) within [data_offset, data_offset + data_size)
    as the server last answered them, and writes it (resuming) from the data_offset it
    last read on (in pieces, each where the last one ended).

    Spec (Migration): "data_offset Offset in the migration region where the client must:
    read from, during the pre-copy or stop-and-copy state, or write to, during the
    resuming state."
    """
    bad, judged = [], 0
    for accesses in _migrations(vfu_sessions):
        offset = size = None
        for a in accesses:
            if a.field == "data_offset" and not a.write and a.ok:
                offset = a.value
            elif a.field == "data_size" and not a.write and a.ok:
                size = a.value
            elif a.data and a.saving and not a.write:
                judged += 1
                if offset is None or size is None:
                    bad.append(
                        f"{a.message.describe()} reads data before data_offset and data_size"
                    )
                elif not (offset <= a.offset and a.offset + a.count <= offset + size):
                    bad.append(
                        f"{a.message.describe()} reads [{a.offset:#x}, +{a.count:#x}) outside "
                        f"data_offset {offset:#x} + data_size {size:#x}"
                    )
            elif a.data and a.resuming and a.write:
                judged += 1  # at data_offset, or where the chunk's last piece ended
                if a.offset != offset:
                    where = "before reading data_offset" if offset is None else f"not {offset:#x}"
                    bad.append(f"{a.message.describe()} writes data at {a.offset:#x}, {where}")
                offset = a.offset + a.count
    if not judged:
        need([], "read or write of the migration data")
    assert not bad, listed(bad)


@case("client/migration/resume-same-order-and-size", MUST, revisions=("0.9.1",))
def test_resume_same_order_and_size(vfu_sessions):
    """A client that resumes, on the device it saved from, the data it read writes it in
    the chunks it read, in the same order: the data_size values it writes while
    resuming are those it read while saving.

    Spec (Migration): "The client must write data on the same order and transaction size
    as read."
    """
    bad, judged = [], 0
    for accesses in _migrations(vfu_sessions):
        read = [a.value for a in accesses if a.saving and not a.write and _chunk(a, accesses)]
        written = [a.value for a in accesses if a.resuming and a.write and a.field == "data_size"]
        if not read or not written:
            continue
        judged += 1
        if written != read:
            bad.append(f"read chunks of {read} while saving, wrote data_size {written} resuming")
    if not judged:
        pytest.skip(
            "cannot judge: no session both saved migration data and resumed it (a client "
            "that resumes on another server shows its writes only there)"
        )
    assert not bad, listed(bad)


def _chunk(access: Access, accesses: list[Access]) -> bool:
    """``access`` is a data_size read (nonzero) whose data the client then read."""
    if access.field != "data_size" or not access.ok or not access.value:
        return False
    after = accesses[accesses.index(access) + 1 :]
    return bool(after) and after[0].data and not after[0].write


@case("client/migration/state-re-read-after-error", MUST, revisions=("0.9.1",))
def test_state_re_read_after_error(vfu_sessions):
    """After the server refuses a device_state write, the client's next access of the
    migration region reads device_state.

    Spec (Migration): "If an error occurs then the server must respond to the
    VFIO_USER_REGION_WRITE operation with the Error field set accordingly and must
    remain at the previous state, or in case of internal error it must transition to the
    error state ... The client must re-read the device state in order to determine it
    afresh."
    """
    bad, judged = [], 0
    for accesses in _migrations(vfu_sessions):
        for n, a in enumerate(accesses):
            if not (a.write and a.field == "device_state" and not a.ok):
                continue
            judged += 1
            after = accesses[n + 1] if n + 1 < len(accesses) else None
            if after is not None and not (not after.write and after.offset == 0):
                bad.append(
                    f"{a.message.describe()} was refused; the client went on with "
                    f"{after.message.describe()} ({after.field or hex(after.offset)})"
                )
    if not judged:
        need([], "device_state write the server refused")
    assert not bad, listed(bad)
