"""The vfio-user codec: pure functions and data over bytes, no I/O.

Every payload type has ``pack() -> bytes`` and ``unpack(bytes) -> object``;
``unpack`` raises :class:`CodecError` and nothing else.
"""

from .base import Payload
from .constants import *  # noqa: F401,F403  (the spec's names are the API)
from .device import (
                     DeviceInfo,
                     IoFdSubRegion,
                     IrqInfo,
                     RegionIoFdsReply,
                     RegionIoFdsRequest,
                     SetIrqs,
)
from .dirty import BitmapRange, DirtyPages, bitmap_bytes
from .dma import DmaMap, DmaRead, DmaReadReply, DmaUnmap, DmaWrite, DmaWriteReply, VfioBitmap
from .errors import CodecError
from .framing import MessageReader, check_msg_size
from .header import Header, encode, encode_error, encode_reply
from .messages import REPLY_TYPES, REQUEST_TYPES, decode, payload_type
from .migration import (
                     V1_TABLE_STATES,
                     V1_TRANSITIONS,
                     V2_ARCS,
                     V2_SAVING_GROUP,
                     V2_STATES,
                     DeviceFeature,
                     DmaLoggingControl,
                     DmaLoggingReport,
                     FeatureMigDeviceState,
                     FeatureMigration,
                     MigDataRead,
                     MigDataReadReply,
                     MigDataWrite,
                     MigrationInfo,
                     MigrationStateBits,
                     MigrationStateV1,
                     MigState,
                     v1_transition_valid,
                     v2_path,
)
from .region_info import RegionCap, RegionInfo, RegionTypeCap, SparseMmapCap, UnknownCap
from .region_rw import (
                     RegionAccess,
                     RegionRead,
                     RegionReadReply,
                     RegionWrite,
                     RegionWriteMulti,
                     RegionWriteMultiReply,
                     RegionWriteReply,
                     SingleWrite,
)
from .version import Capabilities, Version

__all__ = [name for name in dir() if not name.startswith("_")]
