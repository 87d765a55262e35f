"""Migration at 0.9.2, the client's side: it reads the stream to its end."""

from __future__ import annotations

import struct

from pytest_vfiouser import MUST, case
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
