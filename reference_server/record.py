"""--record FILE: every message of every connection, as it went, one JSON object a line.

What a client sent and what it was answered, for whoever debugs a client against
this server, and for checks of what a client sends (issue: client conformance). A
line is written (and flushed) as the message is received or sent, so a server
that is killed leaves all it saw. Lines:

    {"conn": 1, "t": 0.0021, "event": "connect"}
    {"conn": 1, "t": 0.0034, "dir": "c2s", "channel": "main", "msg_id": 0, "command": 1,
     "msg_size": 64, "flags": 0, "error": 0, "fds": 0, "payload": "0000..."}
    {"conn": 1, "t": 0.0040, "dir": "s2c", "channel": "main", ...}
    {"conn": 1, "t": 0.9, "event": "irq", "index": 0, "vector": 0, "taken": true,
     "after": 0.001}
    {"conn": 1, "t": 1.2, "event": "disconnect", "detail": "disconnected"}

``dir``: c2s (the client's messages, as framed by the server) or s2c (the
server's); ``channel``: main, or twin (0.9.2 twin-socket mode); ``fds``: how many
came or went with the message; ``truncated``: the kernel dropped some of them;
``irq``: an interrupt raised through the client's eventfd ([server] raise_irqs),
``taken`` if the client read the eventfd within ``after`` seconds; ``fd_kinds``: what
the client's fds were ("eventfd", "memfd", "socket", "pipe",
"file", ...: pytest_vfiouser._unix.fd_kind); ``t``: seconds since the server
started; ``payload``: the bytes after the 16-byte header, in hex. The file is
appended to: one file may hold several servers' runs.
"""

from __future__ import annotations

import json
import threading
import time

from pytest_vfiouser.protocol import HEADER_SIZE, Header


class Recorder:
    def __init__(self, path: str):
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives with the server)
        self._start = time.monotonic()
        self._lock = threading.Lock()
        self._connections = 0

    def connection(self) -> int:
        """A new connection's number (from 1)."""
        with self._lock:
            self._connections += 1
            return self._connections

    def event(self, conn: int, what: str, detail: str = "", **fields) -> None:
        line = {"conn": conn, "t": self._now(), "event": what, **fields}
        if detail:
            line["detail"] = detail
        self._write(line)

    def message(
        self,
        conn: int,
        direction: str,
        channel: str,
        hdr: Header,
        payload: bytes,
        fds: int = 0,
        truncated: bool = False,
        kinds: tuple[str, ...] = (),
    ) -> None:
        line = {
            "conn": conn,
            "t": self._now(),
            "dir": direction,
            "channel": channel,
            "msg_id": hdr.msg_id,
            "command": hdr.command,
            "msg_size": hdr.msg_size,
            "flags": hdr.flags,
            "error": hdr.error,
            "fds": fds,
            "payload": bytes(payload).hex(),
        }
        if kinds:
            line["fd_kinds"] = list(kinds)
        if truncated:
            line["truncated"] = True
        self._write(line)

    def sent(self, conn: int, channel: str, msg: bytes, fds: int = 0) -> None:
        """A whole message the server sends (header and payload)."""
        self.message(conn, "s2c", channel, Header.unpack(msg[:HEADER_SIZE]), msg[HEADER_SIZE:], fds)

    def _now(self) -> float:
        return round(time.monotonic() - self._start, 6)

    def _write(self, line: dict) -> None:
        text = json.dumps(line, separators=(",", ":")) + "\n"
        with self._lock:
            try:
                self._file.write(text)
                self._file.flush()
            except (OSError, ValueError):  # a full disk or a closed file costs the record only
                pass

    def close(self) -> None:
        with self._lock:
            self._file.close()
