"""The raw vfio-user client the conformance tests drive servers with.

    from pytest_vfiouser.client import Client
    with Client.connect(path, timeout=5.0) as c:
        c.negotiate()
        info = c.device_get_info().check().body

``Client`` sends exactly what it is told (``send``, ``send_raw``), matches
replies by msg_id (``recv_reply``, ``request``, ``pipeline``), serves the
server's DMA_READ/DMA_WRITE from ``ClientMemory`` while it waits, bounds every
wait, and records every message in a ``WireLog``.
"""

from .client import DEFAULT_MAX_MSG_SIZE, Client, DmaRequest
from .connection import SCM_MAX_FD, Connection
from .errors import (
                     ClientError,
                     ConnectionClosed,
                     ErrorReply,
                     MalformedReply,
                     Timeout,
                     UnexpectedReply,
)
from .memory import ClientMemory, DmaFault, Region
from .reply import Reply
from .wirelog import WireLog

__all__ = [
    "DEFAULT_MAX_MSG_SIZE",
    "SCM_MAX_FD",
    "Client",
    "ClientError",
    "ClientMemory",
    "Connection",
    "ConnectionClosed",
    "DmaFault",
    "DmaRequest",
    "ErrorReply",
    "MalformedReply",
    "Region",
    "Reply",
    "Timeout",
    "UnexpectedReply",
    "WireLog",
]
