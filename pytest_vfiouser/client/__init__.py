"""The raw vfio-user client the conformance tests drive servers with.

    from pytest_vfiouser.client import Client
    with Client.connect(path, timeout=5.0) as c:
        c.negotiate()
        info = c.device_get_info().check().body

``Client`` sends exactly what it is told (``send``, ``send_raw``), matches
replies by msg_id (``recv_reply``, ``request``, ``pipeline``), serves the
server's DMA_READ/DMA_WRITE from ``ClientMemory`` while it waits, bounds every
wait, and records every message in a ``WireLog``. Fds on a message that may not
carry them are closed (``recv_message`` hands them over) and listed in
``Client.stray`` (``StrayFds``), for the verdicts to judge. A client that proposes
twin-socket mode (0.9.2) and gets it serves the twin socket in a thread (``Twin``).

May import: ``protocol`` and ``_unix``.
"""

from pytest_vfiouser._unix import SCM_MAX_FD

from ._client import DEFAULT_MAX_MSG_SIZE, Client, DmaRequest, StrayFds, twin_socket_fd
from ._connection import DEFAULT_TIMEOUT, Connection
from ._errors import (
    ClientError,
    ConnectionClosed,
    ErrorReply,
    MalformedReply,
    Timeout,
    UnexpectedReply,
    errno_text,
)
from ._memory import ClientMemory, DmaFault, Region
from ._reply import Reply
from ._twin import Twin
from ._wirelog import WireLog, render_dicts

__all__ = [
    "DEFAULT_MAX_MSG_SIZE",
    "DEFAULT_TIMEOUT",
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
    "StrayFds",
    "Timeout",
    "Twin",
    "UnexpectedReply",
    "WireLog",
    "render_dicts",
    "errno_text",
    "twin_socket_fd",
]
