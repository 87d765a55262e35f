"""What a fuzzer puts on the wire.

A ``WireMessage`` is one message: its header fields, payload bytes, how many
fds go with it and what was done to it; ``RawBytes`` is anything else; a
``Transmission`` is one or more of them sent back to back, possibly cut into
several writes.

fds are counted, not made: whoever sends a message creates them. The kind
follows ``fuzz``'s reproducer (a memfd for a write that starts with a DMA_MAP,
an eventfd otherwise), so that a replayed conversation passes the same kinds
of fds.
"""

from __future__ import annotations

import dataclasses

from pytest_vfiouser.protocol import (
    HEADER_SIZE,
    HEADER_STRUCT,
    CodecError,
    Header,
    decode,
)


def _describe_bytes(raw: bytes) -> str:
    """One line: the header and the decoded payload (or why it does not decode)."""
    if len(raw) < HEADER_SIZE:
        return f"<{len(raw)} bytes, less than a header>"
    h = Header.unpack(raw[:HEADER_SIZE])
    payload = raw[HEADER_SIZE:]
    text = h.describe()
    if h.msg_size != len(raw):
        return f"{text}: {len(payload)} payload bytes follow (msg_size says {h.msg_size})"
    try:
        body = decode(h.command, h.is_reply, payload)
    except CodecError as e:
        return f"{text}: {len(payload)} payload bytes, undecodable: {e}"
    shown = "(none)" if body is None else repr(body)
    return f"{text}: {shown if len(shown) <= 160 else shown[:157] + '...'}"


@dataclasses.dataclass(frozen=True)
class WireMessage:
    """One message as a fuzzer sends it.

    ``msg_size`` None: the true size (HEADER_SIZE + len(payload)). ``mutation`` says
    what was done to a valid message ("" for none), for reports.
    """

    msg_id: int
    command: int
    payload: bytes = b""
    flags: int = 0
    error: int = 0
    msg_size: int | None = None
    nfds: int = 0
    mutation: str = ""

    @property
    def true_size(self) -> int:
        return HEADER_SIZE + len(self.payload)

    def encode(self) -> bytes:
        size = self.true_size if self.msg_size is None else self.msg_size
        return (
            HEADER_STRUCT.pack(self.msg_id, self.command, size, self.flags, self.error)
            + self.payload
        )

    def describe(self) -> str:
        fds = f" +{self.nfds} fds" if self.nfds else ""
        how = f" [{self.mutation}]" if self.mutation else ""
        return f"{_describe_bytes(self.encode())}{fds}{how}"

    def mutate(self, label: str, **changes) -> WireMessage:
        mutation = f"{self.mutation}, {label}" if self.mutation else label
        return dataclasses.replace(self, mutation=mutation, **changes)


@dataclasses.dataclass(frozen=True)
class RawBytes:
    """Bytes that need not be a message at all."""

    data: bytes
    nfds: int = 0
    mutation: str = "raw bytes"

    def encode(self) -> bytes:
        return self.data

    def describe(self) -> str:
        fds = f" +{self.nfds} fds" if self.nfds else ""
        return f"{len(self.data)} raw bytes{fds}: {_describe_bytes(self.data)}"


@dataclasses.dataclass(frozen=True)
class Transmission:
    """Items sent back to back, cut into writes at ``cuts`` (stream offsets).

    An item's fds go with the write that starts at its first byte (a cut is
    made there), so a write with fds always starts with the message they
    belong to.
    """

    items: tuple
    cuts: tuple[int, ...] = ()

    def stream(self) -> bytes:
        return b"".join(item.encode() for item in self.items)

    def writes(self) -> list[tuple[bytes, int]]:
        """(bytes, number of fds) of each write, in order."""
        stream = self.stream()
        pos = 0
        fds_at: dict[int, int] = {}
        for item in self.items:
            if item.nfds:
                fds_at[pos] = fds_at.get(pos, 0) + item.nfds
            pos += len(item.encode())
        bounds = sorted({0, len(stream), *fds_at, *(c for c in self.cuts if 0 < c < len(stream))})
        return [(stream[a:b], fds_at.get(a, 0)) for a, b in zip(bounds, bounds[1:], strict=False)]

    def describe(self) -> str:
        lines = [f"  >> {item.describe()}" for item in self.items]
        if self.cuts:
            lines.append(f"  (sent in {len(self.writes())} writes, cut at {list(self.cuts)})")
        return "\n".join(lines)
