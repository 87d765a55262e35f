"""Standalone reproducers: a conversation from wire logs, as a Python script.

A failing case or a shrunk fuzzing example becomes a script an implementer
can run against their server with nothing but Python's standard library:

    python reproducer.py /path/to/server.sock

It replays what the suite sent, connection by connection and in order (fds
are recreated: a memfd for DMA_MAP, an eventfd otherwise), reads as many
messages as the server sent back at that point (answering the server's own
DMA_READ/DMA_WRITE requests), prints each, and ends by checking that the
server still accepts a connection.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

from pytest_vfiouser.protocol import HEADER_SIZE, Command

__all__ = ["conversation_steps", "reproducer_script", "write_reproducer"]


def conversation_steps(messages: Iterable[dict]) -> list[dict]:
    """The sends of one connection's wire log (``WireLog.to_dicts()``), each with
    the number of messages the server sent back before the next send."""
    steps: list[dict] = []
    for m in messages:
        if m.get("direction") == "send":
            raw = bytes.fromhex(m["raw"])
            steps.append(
                {
                    "raw": m["raw"],
                    "fds": _fd_kinds(raw, m.get("fds", 0)),
                    "what": m.get("header", ""),
                    "replies": 0,
                }
            )
        elif m.get("direction") == "recv" and steps:
            steps[-1]["replies"] += 1
    return steps


def reproducer_script(conversations: Sequence[Iterable[dict]], title: str = "") -> str:
    """The script replaying ``conversations``: one wire log (list of dicts) a connection."""
    data = [conversation_steps(c) for c in conversations]
    return _TEMPLATE.format(
        title=_comment(title or "vfio-user conversation"), conversations=repr(json.dumps(data))
    )


def write_reproducer(
    path: str | Path, conversations: Sequence[Iterable[dict]], title: str = ""
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(reproducer_script(conversations, title))
    path.chmod(0o755)
    return path


def _fd_kinds(raw: bytes, count: int) -> list[list]:
    """What to pass again for ``count`` fds: DMA_MAP takes memory, the rest eventfds."""
    if not count:
        return []
    if len(raw) >= HEADER_SIZE + 32 and struct.unpack_from("<H", raw, 2)[0] == Command.DMA_MAP:
        offset, _, size = struct.unpack_from("<QQQ", raw, HEADER_SIZE + 8)
        return [["memfd", min(offset + size, 1 << 30)]] * count
    return [["eventfd", 0]] * count


def _comment(text: str) -> str:
    return "\n".join("# " + line for line in text.splitlines())


_TEMPLATE = """#!/usr/bin/env python3
{title}
#
# Written by pytest-vfiouser. Standard library only. Usage:
#     python3 THIS_FILE /path/to/server.sock [--timeout SECONDS]
import argparse, json, os, socket, struct, sys

CONVERSATIONS = json.loads({conversations})
HDR = struct.Struct("<HHIII")
DMA_READ, DMA_WRITE = 11, 12


def make_fd(kind, size):
    if kind == "memfd":
        fd = os.memfd_create("vfu-repro")
        os.ftruncate(fd, size)
        return fd
    return os.eventfd(0)


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError(f"connection closed after {{len(data)}} of {{n}} bytes")
        data += chunk
    return data


def recv_message(sock):
    data, fds, _, _ = socket.recv_fds(sock, 16, 253)
    for fd in fds:
        os.close(fd)
    if not data:
        raise EOFError("connection closed")
    header = data + recv_exact(sock, 16 - len(data)) if len(data) < 16 else data
    msg_id, cmd, size, flags, error = HDR.unpack(header)
    if size < 16 or size > (64 << 20):
        raise ValueError(f"msg_size {{size}} cannot be framed")
    return (msg_id, cmd, size, flags, error), recv_exact(sock, size - 16), len(fds)


def answer_dma(sock, hdr, payload):
    msg_id, cmd = hdr[0], hdr[1]
    address, count = struct.unpack_from("<QQ", payload)
    body = struct.pack("<QQ", address, count)
    if cmd == DMA_READ:
        body += bytes(min(count, 1 << 20))
    sock.sendall(HDR.pack(msg_id, cmd, 16 + len(body), 1, 0) + body)


def show(prefix, hdr, payload, nfds):
    msg_id, cmd, size, flags, error = hdr
    kind = {{0: "command", 1: "reply"}}.get(flags & 0xF, f"type {{flags & 0xF}}")
    err = f" ERROR errno={{error}}" if flags & 0x20 else ""
    print(f"{{prefix}} cmd={{cmd}} {{kind}} id={{msg_id}} size={{size}}{{err}} fds={{nfds}} "
          f"payload={{payload[:64].hex()}}{{'...' if len(payload) > 64 else ''}}")


def replay(path, steps, timeout):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(path)
    try:
        for step in steps:
            raw = bytes.fromhex(step["raw"])
            fds = [make_fd(kind, size) for kind, size in step["fds"]]
            print(f">> {{step['what']}}{{' fds=%d' % len(fds) if fds else ''}}")
            try:
                socket.send_fds(sock, [raw], fds) if fds else sock.sendall(raw)
            finally:
                for fd in fds:
                    os.close(fd)
            got = 0
            while got < step["replies"]:
                hdr, payload, nfds = recv_message(sock)
                if hdr[3] & 0xF == 0 and hdr[1] in (DMA_READ, DMA_WRITE):
                    show("   << server request", hdr, payload, nfds)
                    answer_dma(sock, hdr, payload)
                    continue
                show("<<", hdr, payload, nfds)
                got += 1
    except (EOFError, OSError, ValueError) as e:
        print(f"!! {{type(e).__name__}}: {{e}}")
    finally:
        sock.close()


def main():
    parser = argparse.ArgumentParser(description="Replay a vfio-user conversation.")
    parser.add_argument("socket")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    for n, steps in enumerate(CONVERSATIONS):
        print(f"== connection {{n}}")
        replay(args.socket, steps, args.timeout)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(args.socket)
        print("== the server still accepts connections")
    except OSError as e:
        print(f"== the server no longer accepts connections: {{e}}")
        return 1
    finally:
        probe.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
"""
