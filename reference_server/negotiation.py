"""VERSION: what the server answers, and what it learns about the client.

- Major: the server speaks major 0 only. Another major gets an error reply
  (ENOTSUP), never a reply with a different major (errata 5); the
  connection stays unnegotiated, so the client may propose again.
- Minor: min(proposed, the server's highest minor for the revision).
- Capabilities: only keys the client proposed are echoed, with the
  server's values: max_msg_fds and max_data_xfer_size are the server's own
  limits; migration (0.9.1, only when the device has a migration region) gets
  pgsize = the smaller of the two (the server's when the client gave none).
  At 0.9.2: max_dma_maps and pgsizes are the server's, write_multiple true
  (REGION_WRITE_MULTI is then served); migration is not a 0.9.2 capability.
  twin_socket: enabled ("supported": true, "fd_index": 0, the client end of a
  fresh socket pair with the reply) if and only if the client set
  twin_socket.supported to true and takes an fd (max_msg_fds at least 1), and
  the server's config allows it; otherwise the reply leaves it out ("the
  server does not support twin-socket mode or decided not to enable it").
  Unknown capabilities and other top-level JSON keys are ignored.
- No JSON in the request: accepted, and the reply carries none either.
- Malformed JSON, wrong types, out-of-range values: EINVAL (the codec's
  Version.unpack does the checking).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from pytest_vfiouser.protocol import (
    DEFAULT_MAX_DATA_XFER_SIZE,
    DEFAULT_MAX_MSG_FDS,
    CodecError,
    Version,
)

from .device_config import ServerConfig
from .errors import VfioError

MAJOR = 0
# The highest minor the server implements, per spec revision. The 0.9.1
# document defines no minor numbers; 0 is what clients of that era propose.
MAX_MINOR = {"0.9.1": 0, "0.9.2": 2}  # 0.2: what libvfio-user, of the 0.9.2 era, speaks


@dataclass(frozen=True)
class ClientLimits:
    """What the client stated (or the spec's defaults before/without it)."""

    max_msg_fds: int = DEFAULT_MAX_MSG_FDS
    max_data_xfer_size: int = DEFAULT_MAX_DATA_XFER_SIZE
    migration_pgsize: int | None = None  # negotiated dirty page size, None: no migration
    minor: int = 0
    write_multiple: bool = False  # 0.9.2: the server said it takes REGION_WRITE_MULTI
    twin_socket: bool = False  # 0.9.2: the reply enables twin-socket mode (fd_index 0)


def negotiate(
    payload: bytes, server: ServerConfig, revision: str, supports_migration: bool
) -> tuple[bytes, ClientLimits]:
    try:
        req = Version.unpack(payload)
    except CodecError as e:
        raise VfioError(errno.EINVAL, str(e)) from None
    if req.major != MAJOR:
        raise VfioError(errno.ENOTSUP, f"major {req.major} is not supported (only {MAJOR})")
    reply, limits = answer(req, server, revision, supports_migration)
    return reply.pack(), limits


def answer(
    req: Version, server: ServerConfig, revision: str, supports_migration: bool
) -> tuple[Version, ClientLimits]:
    """The reply to an acceptable VERSION request, and what it tells of the client."""
    minor = min(req.minor, MAX_MINOR[revision])
    caps = req.capabilities
    mine: dict = {}
    if "max_msg_fds" in caps.raw:
        mine["max_msg_fds"] = server.max_msg_fds
    if "max_data_xfer_size" in caps.raw:
        mine["max_data_xfer_size"] = server.max_data_xfer_size
    pgsize = None
    if revision == "0.9.1" and caps.migration is not None and supports_migration:
        theirs = caps.migration_pgsize
        pgsize = server.migration_pgsize if theirs is None else min(theirs, server.migration_pgsize)
        mine["migration"] = {"pgsize": pgsize}
    multi = twin = False
    if revision != "0.9.1":
        if "max_dma_maps" in caps.raw:
            mine["max_dma_maps"] = server.max_dma_maps
        if "pgsizes" in caps.raw:
            mine["pgsizes"] = server.pgsizes
        if "write_multiple" in caps.raw:
            mine["write_multiple"] = multi = True
        offer = caps.twin_socket
        if (
            server.twin_socket
            and isinstance(offer, dict)
            and offer.get("supported") is True
            and caps.max_msg_fds >= 1
        ):
            mine["twin_socket"] = {"supported": True, "fd_index": 0}
            twin = True
    limits = ClientLimits(caps.max_msg_fds, caps.max_data_xfer_size, pgsize, minor, multi, twin)
    json = None if req.json is None else {"capabilities": mine}
    return Version(MAJOR, minor, json), limits
