"""Round trips per second of the raw client against a bare socket loop.

    python benchmarks/client_roundtrip.py                      # in-script responder
    python benchmarks/client_roundtrip.py /path/to/socket      # a server already listening
    python benchmarks/client_roundtrip.py 'python -m reference_server --socket-path={socket}'

Both the client (Client.request, Client.pipeline) and a bare loop (struct.pack
+ send + recv, no framing library) run REGION_READ of 4 bytes over the SAME
connection, synchronously and pipelined by 64 (each request its own send),
interleaved for many short rounds: the machine's load changes between rounds,
so each round compares like with like and the median of the per-round ratios
is the figure. The last line is ``client_vs_bare sync=R1 pipelined=R2``.

The client as shipped polls its socket briefly before it blocks
(pytest_vfiouser/client/busy_poll.py); the bare loop blocks at once. So the
client is also measured with polling off (``busy_poll = BusyPoll(0)``): the
line ``client_blocking_vs_bare`` before the last is the cost of the client's
own work (framing, fd accounting, the wire log) against the bare loop.

The in-script responder (``--responder-style``) is ``codec`` by default, a
minimal server that decodes and encodes with the project's codec, or ``raw``,
struct only and batching its answers: the lightest possible server, against
which the client's own costs weigh most.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import json
import os
import shlex
import socket
import statistics
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pytest_vfiouser import protocol as P
from pytest_vfiouser._unix import BusyPoll
from pytest_vfiouser.client import Client  # noqa: E402
from pytest_vfiouser.target import Target, TargetStartError

HDR = struct.Struct("<HHIII")
ACCESS = struct.Struct("<QII")
REGION_READ = int(P.Command.REGION_READ)
COUNT = 4
DEPTH = 64


# -- the in-script responder: a minimal vfio-user server (VERSION, REGION_READ)


def responder(path: str, style: str = "codec") -> None:
    """Serve one connection at a time, forever.

    ``codec``, like a minimal real server: read one message (header, then
    payload), decode it and encode the answer with the project's codec, send,
    repeat. ``raw``: struct only, framing every message a receive brought and
    answering them all with one send; a server this light makes the client's
    own costs show as much as they can.
    """
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    while True:
        conn, _ = listener.accept()
        with conn:
            (serve_codec if style == "codec" else serve_raw)(conn)


CAPS = {"capabilities": {"max_msg_fds": 8, "max_data_xfer_size": 1048576}}


def serve_codec(conn: socket.socket) -> None:
    version = P.Version(0, 0, CAPS).pack()
    while True:
        head = conn.recv(16, socket.MSG_WAITALL)
        if len(head) < 16:
            return
        header = P.Header.unpack(head)
        P.check_msg_size(header, 1 << 20)
        need = header.msg_size - 16
        payload = conn.recv(need, socket.MSG_WAITALL) if need else b""
        if len(payload) < need:
            return
        if header.command == REGION_READ:
            req = P.decode(header.command, False, payload)
            out = P.encode_reply(
                header.msg_id,
                header.command,
                P.RegionReadReply(req.offset, req.region, req.count, bytes(req.count)).pack(),
            )
        elif header.command == P.Command.VERSION:
            out = P.encode_reply(header.msg_id, header.command, version)
        elif header.no_reply:
            continue
        else:
            out = P.encode_error(header.msg_id, header.command, errno.ENOSYS)
        conn.sendall(out)


def answer_raw(buf, start: int, caps: bytes) -> bytes:
    msg_id, command, size, flags, _ = HDR.unpack_from(buf, start)
    if command == REGION_READ:
        offset, region, count = ACCESS.unpack_from(buf, start + 16)
        return (
            HDR.pack(msg_id, command, 32 + count, 1, 0)
            + ACCESS.pack(offset, region, count)
            + bytes(count)
        )
    if command == P.Command.VERSION:
        return HDR.pack(msg_id, command, 20 + len(caps), 1, 0) + struct.pack("<HH", 0, 0) + caps
    if flags & 0x10:
        return b""
    return HDR.pack(msg_id, command, 16, 0x21, errno.ENOSYS)


def serve_raw(conn: socket.socket) -> None:
    caps = json.dumps(CAPS).encode() + b"\0"
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    start = end = 0
    while True:
        if start == end:
            start = end = 0
        elif len(buf) - end < 4096:
            buf[: end - start] = buf[start:end]
            start, end = 0, end - start
        n = conn.recv_into(view[end:])
        if not n:
            return
        end += n
        out = []
        while end - start >= 16:
            size = HDR.unpack_from(buf, start)[2]
            if size < 16:
                return
            if end - start < size:
                break
            out.append(answer_raw(buf, start, caps))
            start += size
        if out:
            conn.sendall(b"".join(out))


# -- servers: ours, a command line, or a socket already there


# -- the measured loops: each returns round trips per second


def run_for(step, seconds: float, per_step: int) -> float:
    done = 0
    t0 = time.perf_counter()
    while True:
        step()
        done += per_step
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return done / elapsed


def client_sync(c: Client, n: int, poll: BusyPoll):
    payload = ACCESS.pack(0, 0, COUNT)

    def step():
        c.busy_poll = poll
        for _ in range(n):
            c.request(REGION_READ, payload)

    return step


def client_pipelined(c: Client, poll: BusyPoll):
    batch = [(REGION_READ, ACCESS.pack(0, 0, COUNT))] * DEPTH

    def step():
        c.busy_poll = poll
        c.pipeline(batch)

    return step


def bare_sync(sock: socket.socket, n: int):
    payload = ACCESS.pack(0, 0, COUNT)
    reply_size = 32 + COUNT
    ids = [0]

    def step():
        msg_id = ids[0]
        for _ in range(n):
            msg_id = (msg_id + 1) & 0xFFFF
            sock.sendall(HDR.pack(msg_id, REGION_READ, 32, 0, 0) + payload)
            data = sock.recv(65536)
            while len(data) < reply_size:
                data += sock.recv(65536)
        ids[0] = msg_id

    return step


def bare_pipelined(sock: socket.socket):
    payload = ACCESS.pack(0, 0, COUNT)
    ids = [0]

    def step():
        msg_id = ids[0]
        for _ in range(DEPTH):
            msg_id = (msg_id + 1) & 0xFFFF
            sock.sendall(HDR.pack(msg_id, REGION_READ, 32, 0, 0) + payload)
        ids[0] = msg_id
        data = b""
        pos = got = 0
        while got < DEPTH:
            data += sock.recv(65536)
            while len(data) - pos >= 16:
                size = HDR.unpack_from(data, pos)[2]
                if len(data) - pos < size:
                    break
                pos += size
                got += 1

    return step


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "target", nargs="?", help="a listening socket path, or a server command line with {socket}"
    )
    ap.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default 30)")
    ap.add_argument(
        "--seconds",
        type=float,
        default=0.05,
        help="duration of each measurement in a round (default 0.05)",
    )
    ap.add_argument(
        "--responder-style",
        choices=("codec", "raw"),
        default="codec",
        help="the in-script responder: decode and encode with the project's "
        "codec, one message per read (codec, the default), or struct only, "
        "all messages a read brought at once (raw, the lightest server)",
    )
    ap.add_argument("--responder", metavar="PATH", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.responder:
        responder(args.responder, args.responder_style)
        return 0

    target = None
    if args.target and os.path.exists(args.target):
        path = args.target
        print(f"server: {path} (already listening)")
    else:
        # The server's output goes to a log file (Target), so that the figures
        # stay this script's last lines.
        command = args.target or shlex.join(
            [
                sys.executable,
                os.path.abspath(__file__),
                "--responder",
                "{socket}",
                "--responder-style",
                args.responder_style,
            ]
        )
        target = Target(command)
        print(
            f"server: {command if args.target else f'in-script responder ({args.responder_style})'}"
        )
        try:
            target.start()
        except TargetStartError as e:
            target.cleanup()
            raise SystemExit(str(e)) from None
        path = target.socket_path
    try:
        return measure(path, args.rounds, args.seconds)
    finally:
        if target is not None:
            target.cleanup()


def measure(path: str, rounds: int, seconds: float) -> int:
    c = Client.connect(path)
    try:
        c.negotiate()
        c.region_read(0, 0, COUNT).check()
        polling, blocking = c.busy_poll, BusyPoll(0)
        loops = {
            "bare sync": bare_sync(c.sock, 100),
            "client sync": client_sync(c, 100, polling),
            "blocking sync": client_sync(c, 100, blocking),
            "bare pipelined": bare_pipelined(c.sock),
            "client pipelined": client_pipelined(c, polling),
            "blocking pipelined": client_pipelined(c, blocking),
        }
        for step in loops.values():  # warm up
            run_for(step, 0.05, 1)
        rates: dict[str, list[float]] = {name: [] for name in loops}
        for _ in range(rounds):
            for name, step in loops.items():
                rates[name].append(run_for(step, seconds, 100 if "sync" in name else DEPTH))
    finally:
        c.close()
    # Each round measures all four back to back, so a ratio within a round
    # compares like with like on a machine whose load changes; the median of
    # the per-round ratios is the figure.
    for name, r in rates.items():
        print(
            f"{name:18s} median {statistics.median(r):9.0f}/s  best {max(r):9.0f}/s  "
            f"worst {min(r):9.0f}/s"
        )
    ratios: dict[str, dict[str, float]] = {"blocking": {}, "client": {}}
    for who, kind in itertools.product(ratios, ("sync", "pipelined")):
        per_round = [
            c / b for c, b in zip(rates[f"{who} {kind}"], rates[f"bare {kind}"], strict=True)
        ]
        ratios[who][kind] = r = statistics.median(per_round)
        print(
            f"{kind:9s} {who}/bare per round: median {r:.3f}  "
            f"quartiles {' '.join(f'{q:.3f}' for q in statistics.quantiles(per_round))}"
        )
    for who, label in (("blocking", "client_blocking_vs_bare"), ("client", "client_vs_bare")):
        print(f"{label} sync={ratios[who]['sync']:.2f} pipelined={ratios[who]['pipelined']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
