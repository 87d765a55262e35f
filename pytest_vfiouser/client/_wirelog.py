"""A per-connection record of every message sent and received.

Recording is on the hot path, so the connection appends a tuple of what it
has at hand and nothing is decoded until the log is rendered:

* each send() is one entry holding the message's bytes; a pipeline's sends
  are one entry holding the list of messages; send_raw() bytes are kept as
  they were sent (any bytes, not necessarily one message);
* each receive syscall is one entry holding the bytes it returned. Rendering
  reframes the received stream into messages (a message is timed by the
  receive that completed it; fds go to the message holding the last byte of
  the receive that brought them, as the client attributes them).

Entries are ``(seq, time, kind, data, nfds, lead)``; ``lead`` (receives only)
counts the bytes at the start of ``data`` that continue a message begun in an
earlier receive, so that rendering can start framing after older entries
were evicted. A receive that brought exactly one message may be logged as
its payload with ``lead`` the header tuple (saving a copy on the hot path).
The log keeps the last ``max_messages`` entries (the deque's maxlen, enforced
in C) and about ``max_bytes``: only entries above BIG bytes are accounted,
smaller ones being bounded by the entry count.
"""

from __future__ import annotations

import itertools
import time
from collections import deque

from pytest_vfiouser.protocol import (
    HEADER_SIZE,
    HEADER_STRUCT,
    MSG_SIZE,
    CodecError,
    Header,
    decode,
)

_now = time.monotonic

# Entry kinds; the rendered directions are "send", "recv" and "note".
SENT = "send"
SENT_RAW = "send raw"
SENT_BATCH = "send batch"
RECEIVED = "recv"
NOTE = "note"
_RAW_SEND = object()  # in WireLog._framed: bytes of send_raw(), described on demand


class WireLog:
    BIG = 4096

    def __init__(self, max_messages: int = 10000, max_bytes: int = 16 << 20, enabled: bool = True):
        self.max_bytes = max_bytes
        self.enabled = enabled
        self._entries: deque = deque(maxlen=max_messages)
        # The hot path's primitives: the connection appends
        # (next_seq(), time, kind, data, nfds, lead) itself and calls
        # account(size) for entries above BIG bytes.
        self.append = self._entries.append
        self.next_seq = itertools.count().__next__
        self._first = 0  # seq of the first entry since the start or clear()
        self._big_bytes = 0  # upper bound of the bytes held in BIG entries
        self.started = _now()

    @property
    def max_messages(self) -> int:
        return self._entries.maxlen

    @property
    def dropped(self) -> int:
        """Entries evicted by the caps since the log started (or was cleared)."""
        return self._entries[0][0] - self._first if self._entries else 0

    def record(self, kind: str, data, nfds: int = 0, lead: int = 0, t: float | None = None) -> None:
        """One entry, outside the hot path; ``t`` is when it happened (default: now)."""
        if self.enabled:
            self.append((self.next_seq(), t or _now(), kind, data, nfds, lead))
            size = _size(data)
            if size > self.BIG:
                self.account(size)

    def note(self, text: str) -> None:
        """An event worth seeing between messages (fds closed, a timeout, ...)."""
        self.record(NOTE, text)

    def account(self, n: int) -> None:
        self._big_bytes += n
        if self._big_bytes > self.max_bytes:
            # Recount (maxlen evictions are not subtracted) and drop the oldest
            # until within 3/4 of the cap, so that this O(entries) pass is rare.
            entries = self._entries
            held = sum(s for s in map(_entry_size, entries) if s > self.BIG)
            while entries and held > self.max_bytes * 3 // 4:
                size = _entry_size(entries.popleft())
                held -= size if size > self.BIG else 0
            self._big_bytes = held

    def last_sent(self, command: int) -> bytes | None:
        """The payload of the last message of ``command`` sent whole (send(), request(),
        a pipeline), or None: what a test repeats without knowing how it was made."""
        for _, _, kind, data, _, _ in reversed(self._entries):
            if kind == SENT or kind == SENT_BATCH:
                for raw in reversed(data) if kind == SENT_BATCH else (data,):
                    if (
                        len(raw) >= HEADER_SIZE
                        and Header.unpack(raw[:HEADER_SIZE]).command == command
                    ):
                        return bytes(raw[HEADER_SIZE:])
        return None

    def clear(self) -> None:
        self._entries.clear()
        self._big_bytes = 0
        self._first = self.next_seq() + 1  # the next entry's seq

    def __len__(self) -> int:
        return len(self._entries)

    # -- rendering: reframe and decode, only now

    def to_dicts(self, last: int | None = None) -> list[dict]:
        """One JSON-able dict a message (or note), oldest first: for reports and
        reproducers; with ``last``, only the last ``last`` of them (the others are
        framed, not decoded: a failing case's log may hold a hundred thousand
        messages). Keys: seq (of the entry), time (seconds since the log started),
        direction (send/recv/note), and for messages header, msg_id, command, flags,
        error, msg_size, payload (a summary), raw (hex), fds; raw_send for bytes sent
        with send_raw; note for notes."""
        framed = self._framed()
        if last:
            framed = framed[-last:]
        out = []
        for seq, t, direction, raw, fds, extra in framed:
            base = {"seq": seq, "time": t}
            if direction == NOTE:
                out.append({**base, "direction": NOTE, "note": raw})
                continue
            item = {**base, "direction": direction, "fds": fds, "raw": raw.hex()}
            item.update(describe(raw) if extra is None or extra is _RAW_SEND else extra)
            if extra is _RAW_SEND:
                item["raw_send"] = True
            out.append(item)
        return out

    def _framed(self) -> list[tuple]:
        """(seq, time, direction, raw, fds, extra) a message or note, undecoded:
        ``extra`` is None for a message to describe, _RAW_SEND for bytes sent raw (to
        describe too), else the fields of what is not a message (a fragment, the
        incomplete end)."""
        out = []
        receiving = _Reframer()
        started = self.started
        for seq, t, kind, data, nfds, lead in list(self._entries):
            t = round(t - started, 6)
            if kind == NOTE:
                out.append((seq, t, NOTE, data, 0, None))
            elif kind == RECEIVED:
                if isinstance(lead, tuple):  # a whole message: header tuple and payload
                    data, lead = HEADER_STRUCT.pack(*lead) + data, 0
                for raw, fds, extra in receiving.feed(data, nfds, lead):
                    out.append((seq, t, RECEIVED, raw, fds, extra))
            else:
                for raw in data if kind == SENT_BATCH else [data]:
                    out.append((seq, t, SENT, raw, nfds, _RAW_SEND if kind == SENT_RAW else None))
        if receiving.pending:
            n = len(receiving.pending)
            extra = {"header": f"<{n} bytes of an incomplete message>", "payload": ""}
            out.append((None, None, RECEIVED, bytes(receiving.pending), 0, extra))
        return out

    def render(self, hexdump: bool = True, last: int | None = None) -> str:
        """Human-readable text: one line a message, then its bytes in hex."""
        return render_dicts(self.to_dicts(last), self.dropped, hexdump)

    def __str__(self) -> str:
        return self.render()


def render_dicts(items: list[dict], dropped: int = 0, hexdump: bool = True) -> str:
    """The text of ``WireLog.render`` from its ``to_dicts`` (``dropped``: entries evicted)."""
    lines = [f"({dropped} earlier log entries dropped)"] if dropped else []
    for d in items:
        stamp = f"#{d['seq']} {d['time']:.6f}" if d["seq"] is not None else "#- -"
        if d["direction"] == NOTE:
            lines.append(f"{stamp} -- {d['note']}")
            continue
        arrow = ">>" if d["direction"] == SENT else "<<"
        raw = " (raw)" if d.get("raw_send") else ""
        fds = f" fds={d['fds']}" if d["fds"] else ""
        lines.append(f"{stamp} {arrow}{raw} {d['header']}{fds}: {d['payload']}")
        if hexdump:
            lines.extend("    " + row for row in hexdump_lines(bytes.fromhex(d["raw"])))
    return "\n".join(lines)


class _Reframer:
    """Cuts the received stream back into messages, as the connection did."""

    def __init__(self):
        self.pending = bytearray()
        self.started = False
        self.broken = False
        self.fds = 0  # fds that came with bytes of the message not yet complete

    def feed(self, chunk: bytes, nfds: int, lead: int):
        if not self.started:
            self.started = True
            if lead:  # the rest of a message whose start was evicted from the log
                yield (
                    chunk[:lead],
                    0,
                    {"header": f"<{lead} bytes continuing an earlier message>", "payload": ""},
                )
                chunk = chunk[lead:]
        if self.broken:
            yield chunk, nfds, {"header": "<unframeable>", "payload": ""}
            return
        self.pending += chunk
        self.fds += nfds
        while len(self.pending) >= HEADER_SIZE:
            size = HEADER_STRUCT.unpack_from(self.pending)[MSG_SIZE]
            if size < HEADER_SIZE:
                self.broken = True
                raw, self.pending = bytes(self.pending), bytearray()
                yield raw, self.fds, {**describe(raw), "header": f"<unframeable: msg_size {size}>"}
                return
            if len(self.pending) < size:
                return
            raw = bytes(self.pending[:size])
            del self.pending[:size]
            # The fds belong to the message holding the receive's last byte: this
            # one if nothing of the next has arrived yet.
            fds, self.fds = (self.fds, 0) if not self.pending else (0, self.fds)
            yield raw, fds, None


def describe(raw: bytes) -> dict:
    """Header and payload summary of the bytes of one message (or of anything sent raw)."""
    if len(raw) < HEADER_SIZE:
        return {"header": f"<{len(raw)} bytes, less than a header>", "payload": ""}
    h = Header.unpack(raw[:HEADER_SIZE])
    payload = raw[HEADER_SIZE:]
    out = {
        "header": h.describe(),
        "msg_id": h.msg_id,
        "command": h.command,
        "flags": h.flags,
        "error": h.error,
        "msg_size": h.msg_size,
    }
    if h.msg_size != len(raw):
        out["payload"] = f"{len(payload)} bytes (msg_size says {h.msg_size})"
    elif h.is_error and not payload:
        out["payload"] = "(error reply)"
    else:
        try:
            body = decode(h.command, h.is_reply, payload)
        except CodecError as e:
            out["payload"] = f"{len(payload)} bytes, undecodable: {e}"
        else:
            out["payload"] = "(none)" if body is None else _short(repr(body))
    return out


def _size(data) -> int:
    return sum(map(len, data)) if isinstance(data, list) else len(data)


def _entry_size(entry: tuple) -> int:
    return _size(entry[3])


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


_PRINTABLE = bytes(b if 32 <= b < 127 else ord(".") for b in range(256))  # for translate


def hexdump_lines(data: bytes, width: int = 16, limit: int = 256) -> list[str]:
    rows = []
    for pos in range(0, min(len(data), limit), width):
        chunk = data[pos : pos + width]
        text = chunk.translate(_PRINTABLE).decode("ascii")
        rows.append(f"{pos:04x}  {chunk.hex(' '):<{width * 3}} {text}")
    if len(data) > limit:
        rows.append(f"...  ({len(data) - limit} more bytes)")
    return rows
