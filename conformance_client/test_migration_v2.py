"""Migration at 0.9.2, the client's side: it reads the stream to its end."""

from __future__ import annotations

import struct

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import (
    Command,
    DeviceFeatureFlags,
    Feature,
    MigDataRead,
    MigDataReadReply,
    MigState,
)

from ._support import decode, listed, need, sent

_FEATURE = struct.Struct("<4xI")  # argsz, flags (the feature index in bits 0-15)
_STATE = struct.Struct("<8xI")  # ... then device_state


def _state_set(m) -> int | None:
    """The device_state a SET of MIG_DEVICE_STATE asks for (None for other messages)."""
    if m.command != Command.DEVICE_FEATURE or len(m.payload) < _STATE.size:
        return None
    (flags,) = _FEATURE.unpack_from(m.payload)
    if flags & 0xFFFF != Feature.MIG_DEVICE_STATE or not flags & DeviceFeatureFlags.SET:
        return None
    return _STATE.unpack_from(m.payload)[0]


@case("client/migration_v2/stop-copy-read-to-end", MUST, revisions=("0.9.2",))
def test_stop_copy_read_to_end(vfu_sessions):
    """In STOP_COPY the client reads with MIG_DATA_READ until a reply returns less than it
    asked (the stream's end) before it moves the device on.

    Spec (VFIO_USER_MIG_DATA_READ): "the migration data is treated like a stream, so the
    client must continue reading until no more migration data remains."; "size indicates
    the size of returned migration data. If this is less than the requested size, there
    is no more migration data to read."
    """
    need(sent(vfu_sessions, Command.MIG_DATA_READ), "MIG_DATA_READ")
    bad, judged = [], 0
    for s in vfu_sessions:
        copying, ended = False, False
        for m in s.sent():
            state = _state_set(m)
            reply = s.reply_to(m)
            if state is not None and reply is not None and not reply.is_error:
                if copying and not ended:
                    bad.append(f"session {s.number} left STOP_COPY before the stream's end")
                copying, ended = state == MigState.STOP_COPY, False
                judged += copying
            elif m.command == Command.MIG_DATA_READ and copying and reply and not reply.is_error:
                asked = decode(MigDataRead, m, "the MIG_DATA_READ").size
                got = decode(MigDataReadReply, reply, "the MIG_DATA_READ reply")
                ended = ended or len(got.data) < asked
        if copying and not ended and s.sent(Command.MIG_DATA_READ):
            bad.append(f"session {s.number} ended in STOP_COPY before the stream's end")
    if not judged:
        need([], "SET of MIG_DEVICE_STATE to STOP_COPY")
    assert not bad, listed(bad)


def _states(session):
    """(message, the device state when the client sent it), RUNNING at the start, as the
    server's successful replies to SETs of MIG_DEVICE_STATE moved it."""
    state = MigState.RUNNING
    for m in session.sent():
        yield m, state
        target = _state_set(m)
        reply = session.reply_to(m) if target is not None else None
        if reply is not None and not reply.is_error:
            state = target


@case("client/migration_v2/data-read-in-saving-state", MUST, revisions=("0.9.2",))
def test_data_read_in_saving_state(vfu_sessions):
    """The client sends MIG_DATA_READ only while the device is in PRE_COPY or STOP_COPY.

    Spec (VFIO_USER_MIG_DATA_READ): "This command is used to read data from the source
    migration server while it is in a saving group state (PRE_COPY or STOP_COPY)."
    """
    need(sent(vfu_sessions, Command.MIG_DATA_READ), "MIG_DATA_READ")
    saving = (MigState.PRE_COPY, MigState.STOP_COPY)
    bad = [
        f"{m.describe()} with the device in state {state}"
        for s in vfu_sessions
        for m, state in _states(s)
        if m.command == Command.MIG_DATA_READ and state not in saving
    ]
    assert not bad, listed(bad)


@case("client/migration_v2/data-write-in-resuming", MUST, revisions=("0.9.2",))
def test_data_write_in_resuming(vfu_sessions):
    """The client sends MIG_DATA_WRITE only while the device is RESUMING.

    Spec (VFIO_USER_MIG_DATA_WRITE): "This command is used to write data to the
    destination migration server while it is in the RESUMING state."
    """
    need(sent(vfu_sessions, Command.MIG_DATA_WRITE), "MIG_DATA_WRITE")
    bad = [
        f"{m.describe()} with the device in state {state}"
        for s in vfu_sessions
        for m, state in _states(s)
        if m.command == Command.MIG_DATA_WRITE and state != MigState.RESUMING
    ]
    assert not bad, listed(bad)


@case("client/migration_v2/data-write-argsz", MUST, revisions=("0.9.2",))
def test_data_write_argsz(vfu_sessions):
    """Each MIG_DATA_WRITE's argsz is 8 plus its data, and its size is its data.

    Spec (VFIO_USER_MIG_DATA_WRITE): "argsz is the size of the above structure, including
    the size of the data."; "size is the size of the migration data to be written."
    """
    bad = []
    for _, m in need(sent(vfu_sessions, Command.MIG_DATA_WRITE), "MIG_DATA_WRITE"):
        argsz, size = struct.unpack_from("<II", m.payload) if len(m.payload) >= 8 else (0, 0)
        if argsz != len(m.payload) or size != len(m.payload) - 8:
            bad.append(f"{m.describe()}: argsz {argsz}, size {size}, {len(m.payload)} bytes")
    assert not bad, listed(bad)


@case("client/migration_v2/data-read-argsz", SHOULD, revisions=("0.9.2",))
def test_data_read_argsz(vfu_sessions):
    """Each MIG_DATA_READ's argsz leaves room for the reply to the size it asks: 8 + size.

    Spec (VFIO_USER_MIG_DATA_READ): "argsz is the maximum size of the reply payload.";
    (Message sizes) "it defines the maximum expected reply payload size, which should be
    at least the size of the fixed reply payload headers defined here."; the reply is
    "argsz | size | data".
    """
    bad = []
    for _, m in need(sent(vfu_sessions, Command.MIG_DATA_READ), "MIG_DATA_READ"):
        body = decode(MigDataRead, m, "the MIG_DATA_READ")
        if body.argsz < 8 + body.size:
            bad.append(f"{m.describe()}: argsz {body.argsz} for size {body.size}")
    assert not bad, listed(bad)
