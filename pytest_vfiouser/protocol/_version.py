"""VFIO_USER_VERSION: major, minor and optional NUL-terminated UTF-8 JSON."""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

from ._base import Payload
from ._constants import (
    DEFAULT_MAX_DATA_XFER_SIZE,
    DEFAULT_MAX_DMA_MAPS,
    DEFAULT_MAX_MSG_FDS,
    DEFAULT_PGSIZES,
)
from ._errors import CodecError

_NAME = "VERSION"
_MAJOR_MINOR = struct.Struct("<HH")
_U64_MAX = (1 << 64) - 1


def _refuse_constant(name: str) -> Any:
    """json.loads reads NaN, Infinity and -Infinity; JSON (RFC 8259) has none of them."""
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    """A JSON number as a float, refusing those beyond the double range (1e999)."""
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"{text} is out of the range of a double")
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_count(where: str, value: Any, minimum: int = 0) -> None:
    if not _is_int(value):
        raise CodecError(_NAME, where, f"must be an integer, got {value!r}")
    if not minimum <= value <= _U64_MAX:
        raise CodecError(_NAME, where, f"{value} is out of range [{minimum}, 2**64)")


def _check_power_of_two(where: str, value: Any) -> None:
    _check_count(where, value, minimum=1)
    if value & (value - 1):
        raise CodecError(_NAME, where, f"{value} is not a power of two")


@dataclass(slots=True)
class Capabilities:
    """The ``capabilities`` object, with typed access and unknown keys kept.

    Absent keys read as the spec's defaults; ``raw`` is exactly what was sent.
    """

    raw: dict = field(default_factory=dict)

    @property
    def max_msg_fds(self) -> int:
        return self.raw.get("max_msg_fds", DEFAULT_MAX_MSG_FDS)

    @property
    def max_data_xfer_size(self) -> int:
        return self.raw.get("max_data_xfer_size", DEFAULT_MAX_DATA_XFER_SIZE)

    @property
    def migration(self) -> dict | None:
        return self.raw.get("migration")

    @property
    def migration_pgsize(self) -> int | None:
        mig = self.migration
        return None if mig is None else mig.get("pgsize")

    @property
    def max_dma_maps(self) -> int:
        return self.raw.get("max_dma_maps", DEFAULT_MAX_DMA_MAPS)

    @property
    def pgsizes(self) -> int:
        return self.raw.get("pgsizes", DEFAULT_PGSIZES)

    @property
    def twin_socket(self) -> dict | None:
        return self.raw.get("twin_socket")

    @property
    def write_multiple(self) -> bool:
        return self.raw.get("write_multiple", False)

    def validate(self) -> None:
        """Raise CodecError where a known capability has the wrong type or range."""
        caps = self.raw
        if "max_msg_fds" in caps:
            _check_count("capabilities.max_msg_fds", caps["max_msg_fds"])
        if "max_data_xfer_size" in caps:
            _check_count("capabilities.max_data_xfer_size", caps["max_data_xfer_size"], 1)
        if "migration" in caps:
            mig = caps["migration"]
            if not isinstance(mig, dict):
                raise CodecError(_NAME, "capabilities.migration", f"must be an object, got {mig!r}")
            if "pgsize" in mig:
                _check_power_of_two("capabilities.migration.pgsize", mig["pgsize"])
        if "max_dma_maps" in caps:
            _check_count("capabilities.max_dma_maps", caps["max_dma_maps"])
        if "pgsizes" in caps:
            _check_count("capabilities.pgsizes", caps["pgsizes"], 1)
        if "write_multiple" in caps and not isinstance(caps["write_multiple"], bool):
            raise CodecError(
                _NAME,
                "capabilities.write_multiple",
                f"must be a boolean, got {caps['write_multiple']!r}",
            )
        if "twin_socket" in caps:
            twin = caps["twin_socket"]
            if not isinstance(twin, dict):
                raise CodecError(
                    _NAME, "capabilities.twin_socket", f"must be an object, got {twin!r}"
                )
            if "supported" in twin and not isinstance(twin["supported"], bool):
                raise CodecError(
                    _NAME,
                    "capabilities.twin_socket.supported",
                    f"must be a boolean, got {twin['supported']!r}",
                )
            if "fd_index" in twin:
                _check_count("capabilities.twin_socket.fd_index", twin["fd_index"])


@dataclass(slots=True, frozen=True)
class Version(Payload):
    """Request and reply alike. ``json`` is None when no version data is sent.

    ``json`` is the whole top-level object: ``capabilities`` inside it, and any
    other keys a peer sent, kept as they were.
    """

    NAME = _NAME
    major: int
    minor: int
    json: dict | None = None

    @classmethod
    def with_capabilities(cls, major: int, minor: int, **caps: Any) -> Version:
        return cls(major, minor, {"capabilities": caps})

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities((self.json or {}).get("capabilities", {}))

    def pack(self) -> bytes:
        try:
            head = _MAJOR_MINOR.pack(self.major, self.minor)
        except struct.error as e:
            raise CodecError(_NAME, "major/minor", str(e)) from None
        if self.json is None:
            return head
        try:
            text = json.dumps(self.json, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as e:
            raise CodecError(_NAME, "version data", f"cannot be written as JSON: {e}") from None
        return head + text.encode() + b"\0"

    @classmethod
    def unpack(cls, data: bytes) -> Version:
        data = bytes(data)
        if len(data) < _MAJOR_MINOR.size:
            raise CodecError(_NAME, "size", f"payload is {len(data)} bytes, expected at least 4")
        major, minor = _MAJOR_MINOR.unpack_from(data)
        text = data[_MAJOR_MINOR.size :]
        if not text:
            return cls(major, minor, None)
        if not text.endswith(b"\0"):
            raise CodecError(_NAME, "version data", "is not NUL-terminated")
        text = text[:-1]
        if b"\0" in text:
            raise CodecError(_NAME, "version data", "has a NUL before its end")
        try:
            obj = json.loads(
                text.decode("utf-8"), parse_constant=_refuse_constant, parse_float=_finite_float
            )
        except UnicodeDecodeError as e:
            raise CodecError(_NAME, "version data", f"is not UTF-8: {e.reason}") from None
        except (ValueError, RecursionError) as e:
            raise CodecError(_NAME, "version data", f"is not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise CodecError(_NAME, "version data", "is not a JSON object")
        caps = obj.get("capabilities", {})
        if not isinstance(caps, dict):
            raise CodecError(_NAME, "capabilities", f"must be an object, got {caps!r}")
        Capabilities(caps).validate()
        return cls(major, minor, obj)
