"""Which payload type each command carries, and decoding by command."""

from __future__ import annotations

from ._base import Payload
from ._constants import Command, DirtyPagesFlags, command_name
from ._device import DeviceInfo, IrqInfo, RegionIoFdsReply, RegionIoFdsRequest, SetIrqs
from ._dirty import DirtyPages
from ._dma import DmaMap, DmaRead, DmaReadReply, DmaUnmap, DmaWrite, DmaWriteReply
from ._errors import CodecError
from ._migration import DeviceFeature, MigDataRead, MigDataReadReply, MigDataWrite
from ._region_info import RegionInfo
from ._region_rw import (
    RegionRead,
    RegionReadReply,
    RegionWrite,
    RegionWriteMulti,
    RegionWriteMultiReply,
    RegionWriteReply,
)
from ._version import Version

# None: the message has no payload.
REQUEST_TYPES: dict[int, type[Payload] | None] = {
    Command.VERSION: Version,
    Command.DMA_MAP: DmaMap,
    Command.DMA_UNMAP: DmaUnmap,
    Command.DEVICE_GET_INFO: DeviceInfo,
    Command.DEVICE_GET_REGION_INFO: RegionInfo,
    Command.DEVICE_GET_REGION_IO_FDS: RegionIoFdsRequest,
    Command.DEVICE_GET_IRQ_INFO: IrqInfo,
    Command.DEVICE_SET_IRQS: SetIrqs,
    Command.REGION_READ: RegionRead,
    Command.REGION_WRITE: RegionWrite,
    Command.DMA_READ: DmaRead,
    Command.DMA_WRITE: DmaWrite,
    Command.DEVICE_RESET: None,
    Command.DIRTY_PAGES: DirtyPages,
    Command.REGION_WRITE_MULTI: RegionWriteMulti,
    Command.DEVICE_FEATURE: DeviceFeature,
    Command.MIG_DATA_READ: MigDataRead,
    Command.MIG_DATA_WRITE: MigDataWrite,
}

REPLY_TYPES: dict[int, type[Payload] | None] = {
    Command.VERSION: Version,
    Command.DMA_MAP: None,
    Command.DMA_UNMAP: DmaUnmap,
    Command.DEVICE_GET_INFO: DeviceInfo,
    Command.DEVICE_GET_REGION_INFO: RegionInfo,
    Command.DEVICE_GET_REGION_IO_FDS: RegionIoFdsReply,
    Command.DEVICE_GET_IRQ_INFO: IrqInfo,
    Command.DEVICE_SET_IRQS: None,
    Command.REGION_READ: RegionReadReply,
    Command.REGION_WRITE: RegionWriteReply,
    Command.DMA_READ: DmaReadReply,
    Command.DMA_WRITE: DmaWriteReply,
    Command.DEVICE_RESET: None,
    Command.DIRTY_PAGES: DirtyPages,  # empty for START and STOP
    Command.REGION_WRITE_MULTI: RegionWriteMultiReply,
    Command.DEVICE_FEATURE: DeviceFeature,
    Command.MIG_DATA_READ: MigDataReadReply,
    Command.MIG_DATA_WRITE: None,
}


def payload_type(command: int, reply: bool) -> type[Payload] | None:
    table = REPLY_TYPES if reply else REQUEST_TYPES
    if command not in table:
        raise CodecError(command_name(command), "command", "is not a vfio-user command")
    return table[command]


def decode(command: int, reply: bool, payload: bytes) -> Payload | None:
    """The typed payload of a message, None for a message that carries none.

    Raises CodecError on anything else: an unknown command, bytes where no
    payload belongs, or a payload that does not decode.
    """
    cls = payload_type(command, reply)
    if cls is None or (reply and command == Command.DIRTY_PAGES and not payload):
        if payload:
            kind = "reply" if reply else "request"
            raise CodecError(
                f"{command_name(command)} {kind}",
                "size",
                f"carries no payload, but {len(payload)} bytes follow the header",
            )
        return None
    return cls.unpack(payload)


def dirty_pages_reply_expected(request: DirtyPages) -> bool:
    """Only GET_BITMAP has a reply payload."""
    return bool(request.flags & DirtyPagesFlags.GET_BITMAP)
