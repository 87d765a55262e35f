"""0.9.2 migration: the VFIO "v2" state machine and its data stream (MIG_DATA_READ/WRITE).

The device's migration (``Device.migration_v2``, present when the device
description has a migration region: at 0.9.2 that region is not served, the
device migrates this way instead). It outlives connections; DEVICE_RESET puts
it back to RUNNING with no transfer in progress.

States (protocol.MigState): RUNNING at start. The MIGRATION flags are
STOP_COPY and PRE_COPY, or STOP_COPY alone for a device described with
``pre_copy = false`` (then PRE_COPY is refused like any state the device lacks).
A SET to STOP, RUNNING, STOP_COPY, RESUMING or PRE_COPY runs protocol.v2_path's arcs (the shortest
path without saving-group states inside it); SET to the current state does
nothing. Refused with EINVAL and the state unchanged: ERROR, the P2P states
("not used in vfio-user"), values above 7, STOP_COPY -> PRE_COPY ("explicitly
not allowed"), and any SET while in ERROR ("To recover from ERROR,
VFIO_USER_DEVICE_RESET must be used").

The stream: records of migration.py's chunk format (header, then payload),
each carrying a whole Device.save_state() blob (offset 0, total its length):
  RUNNING -> PRE_COPY     a PRECOPY record of the device as it is
  PRE_COPY -> STOP_COPY   a FINAL record after what was not read yet
  STOP -> STOP_COPY       a FINAL record (a new stream)
  PRE_COPY -> RUNNING, STOP_COPY -> STOP: the session ends, unread data goes.
MIG_DATA_READ returns up to ``size`` bytes of it; fewer means no more for now
(in STOP_COPY: the end of the stream). The destination takes the bytes of
MIG_DATA_WRITE while RESUMING (at most MAX_STREAM in all: ENOSPC beyond) and
RESUMING -> STOP applies them: records in order, PRECOPY ones checked and
dropped, exactly one FINAL record last, loaded into the device. Data that is
incomplete, damaged or does not fit the device fails the SET (EINVAL) and the
device goes to ERROR with its state as it was ("fail the SET command and
optionally transition to the ERROR state"). No data at all: the device is
left as it is (a resume the client abandoned).
"""

from __future__ import annotations

import errno
import zlib

from pytest_vfiouser.protocol import MigrationFlags, MigState, v2_path

from .errors import VfioError
from .migration import FINAL, HEADER, MAGIC, PRECOPY, chunk

MAX_STREAM = 64 << 20  # bytes a destination takes in one resume
_SETTABLE = frozenset(
    {MigState.STOP, MigState.RUNNING, MigState.STOP_COPY, MigState.RESUMING, MigState.PRE_COPY}
)
_SAVING = frozenset({MigState.PRE_COPY, MigState.STOP_COPY})


class MigrationV2:
    def __init__(self, device, pre_copy: bool = True):
        self._device = device
        self.pre_copy = pre_copy  # without it, "arcs touching it are removed"
        self.flags = int(MigrationFlags.STOP_COPY | (MigrationFlags.PRE_COPY if pre_copy else 0))
        self.reset()

    def reset(self) -> None:
        self.state = MigState.RUNNING
        self._out = bytearray()  # the source's stream, not read yet
        self._in = bytearray()  # what a destination received
        self._seq = 0

    # ---- DEVICE_FEATURE MIG_DEVICE_STATE SET

    def set_state(self, target: int) -> None:
        current = self.state
        if current == MigState.ERROR:
            raise VfioError(errno.EINVAL, "the device is in ERROR: only DEVICE_RESET recovers it")
        if target not in _SETTABLE:
            what = MigState(target).name if target in iter(MigState) else str(target)
            raise VfioError(errno.EINVAL, f"device_state {what} cannot be set")
        path = v2_path(current, MigState(target), self.pre_copy)
        if path is None:
            raise VfioError(
                errno.EINVAL, f"{current.name} -> {MigState(target).name} is not allowed"
            )
        for state in path:
            self._arc(self.state, state)
            self.state = state

    def _arc(self, old: MigState, new: MigState) -> None:
        if new == MigState.PRE_COPY:
            self._begin()
            self._record(PRECOPY)
        elif new == MigState.STOP_COPY:
            if old != MigState.PRE_COPY:
                self._begin()
            self._record(FINAL)
        elif old in _SAVING:
            self._out = bytearray()
        elif new == MigState.RESUMING:
            self._in = bytearray()
        elif old == MigState.RESUMING:
            self._resume()

    def _begin(self) -> None:
        self._out, self._seq = bytearray(), 0

    def _record(self, kind: int) -> None:
        blob = self._device.save_state()
        self._out += chunk(self._seq, kind, 0, len(blob), blob)
        self._seq += 1

    def _resume(self) -> None:
        data, self._in = bytes(self._in), bytearray()
        if not data:
            return
        try:
            self._device.load_state(final_blob(data))
        except ValueError as e:
            self.state = MigState.ERROR
            raise VfioError(errno.EINVAL, f"the migration data cannot be applied: {e}") from None

    # ---- MIG_DATA_READ / MIG_DATA_WRITE

    def read(self, size: int) -> bytes:
        if self.state not in _SAVING:
            raise VfioError(
                errno.EINVAL, f"MIG_DATA_READ in {self.state.name} (only PRE_COPY or STOP_COPY)"
            )
        data = bytes(self._out[:size])
        del self._out[:size]
        return data

    def write(self, data: bytes) -> None:
        if self.state != MigState.RESUMING:
            raise VfioError(errno.EINVAL, f"MIG_DATA_WRITE in {self.state.name} (only RESUMING)")
        if len(self._in) + len(data) > MAX_STREAM:
            raise VfioError(errno.ENOSPC, f"more than {MAX_STREAM} bytes of migration data")
        self._in += data


def final_blob(data: bytes) -> bytes:
    """The FINAL record's blob of a whole stream; ValueError where the stream is wrong."""
    pos, seq, final = 0, 0, None
    while pos < len(data):
        if final is not None:
            raise ValueError(f"{len(data) - pos} bytes follow the final record")
        if len(data) - pos < HEADER.size:
            raise ValueError(f"record {seq} is cut short in its header")
        magic, got, kind, offset, total, crc, length = HEADER.unpack_from(data, pos)
        body = data[pos + HEADER.size : pos + HEADER.size + length]
        if magic != MAGIC:
            raise ValueError(f"record {seq} is not migration data of this server (bad magic)")
        if got != seq or kind not in (PRECOPY, FINAL) or offset != 0 or total != length:
            raise ValueError(f"record {seq} is out of place (seq {got}, kind {kind})")
        if len(body) != length:
            raise ValueError(f"record {seq} is incomplete: {len(body)} of {length} bytes")
        if zlib.crc32(body) != crc:
            raise ValueError(f"record {seq} is damaged (crc mismatch)")
        if kind == FINAL:
            final = body
        pos += HEADER.size + length
        seq += 1
    if final is None:
        raise ValueError("the stream has no final record: it is incomplete")
    return final
