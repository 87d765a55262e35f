"""0.9.2 migration under the faults: the v2 state machine and its data stream
(migration_v2.MigrationV2) with the defects of their area, installed as the
device's ``migration_v2_type``."""

from __future__ import annotations

import errno

from pytest_vfiouser.protocol import MigState, v2_path
from reference_server.errors import VfioError
from reference_server.migration import FINAL, PRECOPY
from reference_server.migration_v2 import _SAVING, _SETTABLE, MigrationV2

from ._catalogue import FAULTS

# Fault p2p-states-as-twins: what each P2P state is taken for.
_TWINS = {MigState.RUNNING_P2P: MigState.RUNNING, MigState.PRE_COPY_P2P: MigState.PRE_COPY}
# Faults data-read-block-tail-lost and data-write-small-dropped: the device's block size.
_BLOCK = 512


class FaultyMigrationV2(MigrationV2):
    _ended = False  # fault stop-copy-stream-restarts: a read in STOP_COPY came short

    def reset(self) -> None:
        if "reset-keeps-migration-state" in FAULTS and hasattr(self, "state"):
            return  # DEVICE_RESET resets the regions and interrupts only
        super().reset()

    def set_state(self, target: int) -> None:
        current = self.state
        if current == MigState.ERROR and "error-not-sticky" in FAULTS:
            self.state = current = MigState.STOP  # served as if the device were stopped
        if target == current and "set-same-state-restarts" in FAULTS and target in _SETTABLE:
            self._arc(current, current)  # the arc into the state is run again
            return
        if target == MigState.ERROR and "set-error-accepted" in FAULTS:
            self.state = MigState.ERROR
            return
        if "p2p-states-as-twins" in FAULTS:
            target = _TWINS.get(target, target)
        if (current, target) == (
            MigState.STOP_COPY,
            MigState.PRE_COPY,
        ) and "stop-copy-to-pre-copy-allowed" in FAULTS:
            self._arc(current, MigState.PRE_COPY)  # taken as a direct arc
            self.state = MigState.PRE_COPY
            return
        if "direct-arcs-only" in FAULTS and current != MigState.ERROR and target in _SETTABLE:
            path = v2_path(current, MigState(target))
            if path is not None and len(path) > 1:
                raise VfioError(
                    errno.EINVAL,
                    f"{current.name} -> {MigState(target).name} is not a direct arc",
                )
        super().set_state(target)

    def _arc(self, old: MigState, new: MigState) -> None:
        self._ended = False
        if "saving-session-continues" in FAULTS:
            if old in _SAVING and new not in _SAVING:
                return  # the session is not terminated: its unread data stays
            if new in _SAVING and old not in _SAVING and self._out:
                self._record(PRECOPY if new == MigState.PRE_COPY else FINAL)
                return  # the old session goes on: its unread data comes first
        if new == MigState.RESUMING and "resume-data-kept" in FAULTS:
            return  # what an earlier resume received is still there
        if (old, new) == (MigState.PRE_COPY, MigState.STOP_COPY):
            if "stop-copy-drops-unread" in FAULTS:
                self._out = bytearray()  # the pre-copy data not read yet goes; seq goes on
            if "stop-copy-new-stream" in FAULTS:
                self._begin()  # the final record is numbered 0 again; unread data goes
        super()._arc(old, new)

    def _resume(self) -> None:
        if "resume-loads-nothing" in FAULTS:
            self._in = bytearray()  # accepted, and nothing is loaded
            return
        if not self._in and "resume-empty-refused" in FAULTS:
            raise VfioError(errno.EINVAL, "no migration data was written: it is incomplete")
        if "resume-data-kept" in FAULTS:
            kept = bytearray(self._in)
            super()._resume()
            self._in = kept  # the data is not dropped once loaded
            return
        super()._resume()

    def read(self, size: int) -> bytes:
        if self.state not in (MigState.PRE_COPY, MigState.STOP_COPY):
            if "data-read-any-state" in FAULTS:
                data = bytes(self._out[:size])  # whatever is buffered: nothing
                del self._out[:size]
                return data
            return super().read(size)
        if self.state == MigState.STOP_COPY and "stop-copy-stream-restarts" in FAULTS:
            if self._ended:  # the end is not remembered: the device is saved again
                self._ended = False
                self._begin()
                self._record(FINAL)
        if size == 0 and "data-read-zero-reads-all" in FAULTS:
            size = len(self._out)  # 0 taken as "whatever there is"
        if 0 < size < _BLOCK and "data-read-block-tail-lost" in FAULTS:
            data = bytes(self._out[:size])
            del self._out[:_BLOCK]  # the rest of the block is not kept for the next read
        else:
            data = super().read(size)
        if len(data) < size and self.state == MigState.STOP_COPY:
            self._ended = True
        return data

    def write(self, data: bytes) -> None:
        if self.state != MigState.RESUMING and "data-write-any-state" in FAULTS:
            self._in += data  # buffered; entering RESUMING drops it
            return
        if self.state == MigState.RESUMING and not data and "data-write-zero-restarts" in FAULTS:
            self._in = bytearray()  # size 0 taken as "start over"
            return
        if self.state == MigState.RESUMING and len(data) < _BLOCK:
            if "data-write-small-dropped" in FAULTS:
                return  # accepted, and the device waits for a whole block
        super().write(data)
