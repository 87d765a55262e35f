"""The device's DMA engine: copies between its RAM and client memory.

Client memory is reached through the connection's DMA map table: through the
file when the client gave an fd (dma_map.py says why not through a mapping),
otherwise with DMA_READ /
DMA_WRITE requests over the socket, in chunks of at most the smaller of the
two sides' max_data_xfer_size. Every write to client memory goes through
``write_client_memory`` (and so through ``DmaMapTable.note_write``), the one
place dirty page tracking needs to see.
"""

from __future__ import annotations

import errno
from typing import Protocol

from pytest_vfiouser.protocol import DmaMapFlags

from . import registers
from .dma_map import DmaMapTable
from .errors import VfioError
from .regions import Region


class ClientLink(Protocol):
    """What the engine needs of the connection it works for."""

    dma_map: DmaMapTable

    @property
    def dma_chunk(self) -> int: ...

    def dma_read(self, address: int, count: int) -> bytes: ...

    def dma_write(self, address: int, data: bytes) -> None: ...


class DmaEngine:
    def __init__(self, ram: Region | None):
        self.ram = ram

    def run(
        self, link: ClientLink | None, dev_offset: int, address: int, length: int, direction: int
    ) -> None:
        """One copy; raises VfioError (see registers.py for the errnos)."""
        if self.ram is None:
            raise VfioError(errno.ENODEV, "the device has no DMA RAM")
        if direction not in (registers.DMA_TO_CLIENT, registers.DMA_FROM_CLIENT):
            raise VfioError(errno.EINVAL, f"DMA direction {direction} is neither 0 nor 1")
        if dev_offset + length > self.ram.size:
            raise VfioError(
                errno.EINVAL,
                f"device range {dev_offset:#x}+{length:#x} is outside "
                f"the {self.ram.size:#x}-byte DMA RAM",
            )
        if length == 0:
            return
        if link is None:
            raise VfioError(errno.EFAULT, "no client is connected")
        if direction == registers.DMA_TO_CLIENT:
            segments = link.dma_map.segments(address, length, DmaMapFlags.WRITE)
            self.write_client_memory(link, segments, self.ram.read(dev_offset, length))
        else:
            segments = link.dma_map.segments(address, length, DmaMapFlags.READ)
            self.ram.write(dev_offset, self.read_client_memory(link, segments))

    @classmethod
    def read_client_memory(cls, link: ClientLink, segments) -> bytes:
        parts = []
        for m, pos, n in segments:
            if m.fd is not None:
                parts.append(m.read(pos, n))
                continue
            chunk = link.dma_chunk
            address = cls.dma_address(m, pos)
            for off in range(0, n, chunk):
                parts.append(link.dma_read(address + off, min(chunk, n - off)))
        return b"".join(parts)

    @classmethod
    def write_client_memory(cls, link: ClientLink, segments, data: bytes) -> None:
        done = 0
        for m, pos, n in segments:
            cls.write_segment(link, m, pos, data[done : done + n])
            done += n

    @classmethod
    def write_segment(cls, link: ClientLink, m, pos: int, piece: bytes) -> None:
        """Write ``piece`` at ``pos`` in mapping ``m`` (into its file, or by DMA_WRITE),
        and log it for dirty page tracking."""
        if m.fd is not None:
            m.write(pos, piece)
        else:
            chunk = link.dma_chunk
            address = cls.dma_address(m, pos)
            for off in range(0, len(piece), chunk):
                link.dma_write(address + off, piece[off : off + chunk])
        link.dma_map.note_write(m.address + pos, len(piece))

    @staticmethod
    def dma_address(m, pos: int) -> int:
        """The client address of ``pos`` in mapping ``m``: what DMA_READ/DMA_WRITE name."""
        return m.address + pos
