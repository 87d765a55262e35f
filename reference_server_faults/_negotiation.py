"""VERSION under the faults: the reference server's negotiation with the defects of
negotiation.py's area."""

from __future__ import annotations

import errno
import struct
from dataclasses import replace

from pytest_vfiouser.protocol import (
    CodecError,
    Version,
)
from reference_server.errors import VfioError
from reference_server.negotiation import MAJOR, ClientLimits, answer

from ._catalogue import FAULTS


def negotiate(conn, payload: bytes) -> tuple[bytes, ClientLimits]:
    """VERSION on ``conn`` (FaultyConnection.negotiate)."""
    try:
        req = Version.unpack(payload)
    except CodecError as e:
        if "version-handling-lax" not in FAULTS or len(payload) < 4:
            raise VfioError(errno.EINVAL, str(e)) from None
        req = Version(*struct.unpack_from("<HH", payload))  # taken as no capabilities
    if FAULTS and "version-data-required" in FAULTS and not (req.json or {}).get("capabilities"):
        raise VfioError(errno.EINVAL, "VERSION without capabilities")
    if req.major != MAJOR and "version-unchecked" not in FAULTS:
        raise VfioError(errno.ENOTSUP, f"major {req.major} is not supported (only {MAJOR})")
    migration = conn.device.supports_migration
    reply, limits = answer(req, conn.settings, conn.revision, migration)
    if conn.revision != "0.9.1" and FAULTS:
        reply, limits = _twin(req, reply, limits)
    return _faulty(req, reply, limits, migration)


def _twin(req: Version, reply: Version, limits: ClientLimits) -> tuple[Version, ClientLimits]:
    """The reply's twin_socket capability under the faults enabled."""
    caps = req.capabilities
    asked = caps.twin_socket
    if reply.json is None or not isinstance(asked, dict):
        return reply, limits
    enable = limits.twin_socket and "twin-never-enabled" not in FAULTS
    if "twin-offered-unasked" in FAULTS:
        enable = True  # the object's presence taken for support
    if "twin-ignores-max-msg-fds" in FAULTS and asked.get("supported") is True:
        enable = True
    if not enable:
        mine = {k: v for k, v in reply.json["capabilities"].items() if k != "twin_socket"}
        return Version(reply.major, reply.minor, {"capabilities": mine}), replace(
            limits, twin_socket=False
        )
    twin = {"supported": True, "fd_index": 0}
    if "twin-fd-index-off" in FAULTS:
        twin["fd_index"] = 1  # counted from 1
    if "twin-supported-string" in FAULTS:
        twin["supported"] = "true"
    mine = {**reply.json["capabilities"], "twin_socket": twin}
    return Version(reply.major, reply.minor, {"capabilities": mine}), replace(
        limits, twin_socket=True
    )


def _faulty(
    req: Version, reply: Version, limits: ClientLimits, supports_migration: bool
) -> tuple[bytes, ClientLimits]:
    """The VERSION reply under the faults enabled."""
    major, minor, json = reply.major, reply.minor, reply.json
    if "version-unchecked" in FAULTS:
        major, minor = 1, 1  # the server's own idea of its version
    if json is not None:
        mine = json["capabilities"]
        if "caps-not-negotiated" in FAULTS:
            mine = {
                **req.capabilities.raw,
                "max_msg_fds": mine.get("max_msg_fds", 16),
                "max_data_xfer_size": mine.get("max_data_xfer_size", 1 << 20),
            }
            if supports_migration:
                mine["migration"] = {"pgsize": 1 << 16}
                if limits.migration_pgsize is not None:
                    limits = ClientLimits(
                        limits.max_msg_fds, limits.max_data_xfer_size, 1 << 16, limits.minor
                    )
        if "max-msg-fds-ignored" in FAULTS and "max_msg_fds" in mine:
            mine["max_msg_fds"] = 4
        if "xfer-limit-overstated" in FAULTS and "max_data_xfer_size" in mine:
            mine["max_data_xfer_size"] = 1 << 16
        if "migration-cap-missing" in FAULTS:
            mine.pop("migration", None)
            limits = ClientLimits(limits.max_msg_fds, limits.max_data_xfer_size, None, limits.minor)
        json = {"capabilities": mine}
    packed = Version(major, minor, json).pack()
    if "version-json-truncated" in FAULTS and len(packed) > 4 + 72:
        packed = packed[: 4 + 72]  # what a 72-byte buffer holds: no closing brace, no NUL
    return packed, limits
