"""Standalone reproducers: a conversation from wire logs, as a Python script.

A failing case or a shrunk fuzzing example becomes a script an implementer
can run against their server with nothing but Python's standard library:

    python reproducer.py /path/to/server.sock

It replays what the suite sent, connection by connection and in order (fds
are recreated: a memfd for DMA_MAP, an eventfd otherwise), reads as many
messages as the server sent back at that point (answering the server's own
DMA_READ/DMA_WRITE requests), prints each, and judges: when the server
answers as it did in the failing run (the same headers, then the same close
or silence), the failure reproduces and the script exits 1; at the first
answer that differs it says how and exits 0. It opens no connection beyond
the recorded ones (a server that serves one client is not disturbed).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from pathlib import Path

from pytest_vfiouser.protocol import HEADER_SIZE, HEADER_STRUCT, Command

__all__ = ["conversation_steps", "reproducer_script", "write_reproducer"]


def conversation_steps(messages: Iterable[dict]) -> list[dict]:
    """The sends of one connection's wire log (``WireLog.to_dicts()``), each with the
    headers the server answered before the next send (``expect``: msg_id, command,
    msg_size, flags, error; the server's own DMA requests are not counted) and, on the
    last, how the connection ended (``end``: "closed", "silent" or None)."""
    steps: list[dict] = []
    for m in messages:
        if m.get("direction") == "send":
            raw = bytes.fromhex(m["raw"])
            steps.append(
                {
                    "raw": m["raw"],
                    "fds": _fd_kinds(raw, m.get("fds", 0)),
                    "what": m.get("header", ""),
                    "expect": [],
                    "end": None,
                }
            )
        elif m.get("direction") == "recv" and steps:
            raw = bytes.fromhex(m["raw"])
            if len(raw) >= HEADER_SIZE:
                hdr = list(HEADER_STRUCT.unpack_from(raw))
                if not (hdr[3] & 0xF == 0 and hdr[1] in (Command.DMA_READ, Command.DMA_WRITE)):
                    steps[-1]["expect"].append(hdr)
        elif m.get("direction") == "note" and steps:
            note = m.get("note", "")
            if "closed" in note:
                steps[-1]["end"] = "closed"
            elif "time" in note:
                steps[-1]["end"] = "silent"
    for step in steps:
        step["replies"] = len(step["expect"])
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


class Differs(Exception):
    pass  # the server did not answer as in the failing run


def same(got, want):
    # A VERSION reply's size follows the server's JSON: only its fields are compared.
    keep = (0, 1, 3, 4) if want[1] == 1 else (0, 1, 2, 3, 4)
    return all(got[i] == want[i] for i in keep)


def replay(path, steps, timeout):
    # Replay one connection; raise Differs at the first answer unlike the recording.
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
            except OSError as e:
                raise Differs(f"sending failed ({{e}}); in the failing run it went out")
            finally:
                for fd in fds:
                    os.close(fd)
            for want in step["expect"]:
                hdr, payload = next_answer(sock, step, want)
                show("<<", hdr, payload[0], payload[1])
                if not same(hdr, want):
                    raise Differs(f"the server sent {{fmt(hdr)}}; in the failing run {{fmt(want)}}")
            if step["end"]:
                try:
                    hdr, payload, nfds = recv_message(sock)
                except (EOFError, ConnectionError):
                    ended = "closed"
                except (TimeoutError, socket.timeout):
                    ended = "silent"
                else:
                    show("<<", hdr, payload, nfds)
                    raise Differs(f"the server sent {{fmt(hdr)}}; in the failing run it was "
                                  f"{{step['end']}} here")
                print(f"-- the server {{ended}}")
                if ended != step["end"]:
                    raise Differs(f"the server {{ended}}; in the failing run: {{step['end']}}")
                return
    finally:
        sock.close()


def next_answer(sock, step, want):
    while True:
        try:
            hdr, payload, nfds = recv_message(sock)
        except (EOFError, ConnectionError, TimeoutError, socket.timeout, ValueError) as e:
            raise Differs(f"{{type(e).__name__}}: {{e}}; in the failing run the server sent "
                          f"{{fmt(want)}}") from None
        if hdr[3] & 0xF == 0 and hdr[1] in (DMA_READ, DMA_WRITE):
            show("   << server request", hdr, payload, nfds)
            answer_dma(sock, hdr, payload)
            continue
        return hdr, (payload, nfds)


def fmt(hdr):
    msg_id, cmd, size, flags, error = hdr
    return (f"cmd={{cmd}} id={{msg_id}} size={{size}} flags={{flags:#x}}"
            + (f" errno={{error}}" if flags & 0x20 else ""))


def main():
    parser = argparse.ArgumentParser(
        description="Replay a vfio-user conversation; exit 1 if the failure reproduces.")
    parser.add_argument("socket")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    try:
        for n, steps in enumerate(CONVERSATIONS):
            print(f"== connection {{n}}")
            replay(args.socket, steps, args.timeout)
    except Differs as e:
        print(f"== not reproduced: {{e}}")
        return 0
    except OSError as e:
        print(f"== not reproduced: {{type(e).__name__}}: {{e}}")
        return 0
    print("== reproduced: the server answered as in the failing run")
    return 1


if __name__ == "__main__":
    sys.exit(main())
"""
