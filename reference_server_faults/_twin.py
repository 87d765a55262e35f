"""Twin-socket faults (0.9.2): the connection's twin socket and its requests, with the
defects of twin.py's and connection.py's twin-socket code. The VERSION reply's own
faults (when the mode is enabled, what the capability says) are in _negotiation."""

from __future__ import annotations

import os
import socket

from pytest_vfiouser.protocol import Command, encode_reply
from reference_server.connection import Connection
from reference_server.errors import VfioError

from ._catalogue import FAULTS

_IRQ_INFO = int(Command.DEVICE_GET_IRQ_INFO)


class TwinFaults(Connection):
    def open_twin(self) -> int:
        fd = super().open_twin()
        if "twin-not-a-socket" in FAULTS:
            os.close(fd)
            return os.eventfd(0, os.EFD_CLOEXEC)  # "a socket" in name only
        if "twin-listening-socket" in FAULTS:
            os.close(fd)
            listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listening.bind("")  # an autobound abstract address: no file left behind
            listening.listen()  # a socket for the server's commands to be sent to, it thought
            return listening.detach()
        return fd

    @property
    def dma_chunk(self) -> int:
        if "dma-too-big" in FAULTS or ("twin-requests-too-big" in FAULTS and self.twin is not None):
            return self.settings.max_data_xfer_size  # the client's limit forgotten here
        return super().dma_chunk

    def _dma_between(self) -> None:
        maps = list(self._fresh_maps)
        super()._dma_between()
        if "dma-too-big" in FAULTS:  # and once more, as big as the server's own limit allows
            for address, size in maps:
                count = min(size, self.dma_chunk)
                if count > self.client.max_data_xfer_size:
                    try:
                        self.dma_read(address, count)
                    except VfioError:
                        pass

    def _request(self, command: int, payload: bytes) -> bytes:
        if "twin-requests-on-main" in FAULTS and self.twin is not None:
            twin, self.twin = self.twin, None  # the main socket's path, as before 0.9.2
            try:
                return super()._request(command, payload)
            finally:
                self.twin = twin
        return super()._request(command, payload)

    def serves_main_meanwhile(self) -> bool:
        if "twin-stalls-main" in FAULTS:
            return False  # one thread, synchronous: the main socket waits for the reply
        return super().serves_main_meanwhile()

    def _reply(self, hdr, result) -> None:
        if (
            "twin-replies-on-twin" in FAULTS
            and self.twin is not None
            and hdr.command == _IRQ_INFO
            and result.__class__ is bytes
        ):
            # The reply goes out on "the server's socket", the twin.
            self.twin.sock.sendall(encode_reply(hdr.msg_id, hdr.command, result))
            return
        super()._reply(hdr, result)
