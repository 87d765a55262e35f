"""Tiny scripted vfio-user servers for the plugin's tests.

``script_server(tmp_path, *flags)`` writes the script and returns a
``--vfu-server`` command line (``fd=True``: with ``{fd}`` instead of ``{socket}``).
The server answers VERSION, DEVICE_GET_INFO
(PCI, 1 region, 1 IRQ), GET_REGION_INFO and GET_IRQ_INFO; any other command
gets an ENOTSUP error reply, unless a flag says otherwise:

  --abort-on N     os.abort() on command N (a crash: SIGABRT), after a last stderr line
  --hang-on N      never reply to command N (and stop reading)
  --error-on N     an error reply (errno 95) to command N
  --malformed-on N a success reply to command N whose 3-byte payload no reply layout has
  --malformed-from K  only from the K-th client on (1-based; the first K-1 are served right)
  --delay-errors S sleep S seconds before each error reply (slow, but correct)
  --once           exit(0) after the first client disconnects
  --exit-delay S   with --once: exit S seconds later (a slow exit, as on a loaded machine)
  --close-on-bad-size  close the connection on a msg_size below 16 or above 1 MiB
  --reject-unread N  refuse command N without reading its payload (the payload is then
                   read as the next headers: out of step, as a server that ignores msg_size)
  --accept-set-irqs  grant SET_IRQS (command 8) and keep the eventfds that come with it
  --one-client     after the first client disconnects, stay alive and accept
                   connections without ever answering (libvfio-user's null sample)
  --never-answer   accept connections and never answer (a server wedged from the start)
  --abort-at-close os.abort() when a client that sent DEVICE_RESET disconnects
  --ignore-term    ignore SIGTERM (the suite must SIGKILL it)
  --no-mmap        region 0 without the MMAP flag
  --stray-fds N    every reply carries N eventfds besides its own fds (at most 253 in all)
  --fail-start     print an error to stderr and exit(3) without listening
  --spin-mid-message  when a client leaves in the middle of a message, spin at full CPU,
                   never exiting nor accepting again (with --once: it exits after others;
                   libvfio-user's shadow_ioeventfd_server sample does so)
  --grant-dma      grant every DMA_MAP and DMA_UNMAP (the reply to an unmap is its entry),
                   without looking at what is mapped (libvfio-user's null sample does so)
  --recv-once S    read a header, then a body, with one recv() each after sleeping S seconds
                   (a reader slower than its client), and close on a short read
                   (libvfio-user's samples read so)
  --daemonize      fork, setsid, fork again; the daemon listens, then the started process
                   exits 0 (its first child, dead after setsid, is never waited for)
  --exit-late S    with --daemonize: the started process exits S seconds after the daemon
                   listens (it is still there when the suite sees the socket listen)
  --fork-setsid    fork a child that calls setsid and stays (sleeping); the parent serves
  --slow-start-if FILE  if FILE exists: create FILE.started, then sleep 60 s before listening
  --tag TEXT       ignored: a mark in the command line of every process of the server
"""

from __future__ import annotations

import json
import shlex
import subprocess as _subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, os, signal, socket, struct, sys, time
path, flags = sys.argv[1], sys.argv[2:]
def opt(name, kind=int):
    return kind(flags[flags.index(name) + 1]) if name in flags else None
if "--fail-start" in flags:
    sys.stderr.write("scriptserver: cannot open /dev/vfio-nothing: No such device\n")
    sys.exit(3)
if "--ignore-term" in flags:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if opt("--slow-start-if", str) and os.path.exists(opt("--slow-start-if", str)):
    open(opt("--slow-start-if", str) + ".started", "w").close()
    time.sleep(60)
ready = None  # --daemonize: the pipe on which the daemon says it listens
if "--daemonize" in flags:
    r, ready = os.pipe()
    if os.fork() > 0:
        os.close(ready)
        os.read(r, 1)
        time.sleep(opt("--exit-late", float) or 0)
        os._exit(0)
    os.close(r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
if "--fork-setsid" in flags and os.fork() == 0:
    os.setsid()
    while True:
        time.sleep(3600)
abort_on, hang_on, error_on = opt("--abort-on"), opt("--hang-on"), opt("--error-on")
malformed_on, malformed_from = opt("--malformed-on"), opt("--malformed-from") or 1
delay_errors, reject_unread = opt("--delay-errors", float), opt("--reject-unread")
stray_fds = opt("--stray-fds") or 0
HDR = struct.Struct("<HHIII")
def reply(conn, msg_id, cmd, payload=b"", error=0, fds=()):
    flags = 1 | (0x20 if error else 0)
    if error and delay_errors:
        time.sleep(delay_errors)
    message = HDR.pack(msg_id, cmd, 16 + len(payload), flags, error) + payload
    stray = [os.eventfd(0) for _ in range(stray_fds)]
    try:
        if fds or stray:
            socket.send_fds(conn, [message], [*fds, *stray])
        else:
            conn.sendall(message)
    finally:
        for fd in stray:
            os.close(fd)
kept_fds = []  # eventfds of granted SET_IRQS requests
recv_once = opt("--recv-once", float)
def recv_exact(conn, n):
    if recv_once is not None:
        time.sleep(recv_once)
        chunk, fds, _, _ = socket.recv_fds(conn, n, 16)
        for fd in fds:
            os.close(fd)
        return chunk if len(chunk) == n else None
    buf = b""
    while len(buf) < n:
        chunk, fds, _, _ = socket.recv_fds(conn, n - len(buf), 16)
        if "--accept-set-irqs" in flags:
            kept_fds.extend(fds)
        else:
            for fd in fds:
                os.close(fd)
        if not chunk:
            if "--spin-mid-message" in flags and (buf or mid_message):
                while True:
                    pass
            return None
        buf += chunk
    return buf
mid_message = False
def serve(conn):
    global mid_message
    while True:
        mid_message = False
        head = recv_exact(conn, 16)
        if head is None:
            return
        mid_message = True
        msg_id, cmd, size, _, _ = HDR.unpack(head)
        if "--close-on-bad-size" in flags and not 16 <= size <= 1 << 20:
            return
        if cmd == reject_unread:
            reply(conn, msg_id, cmd, error=22)
            continue
        payload = recv_exact(conn, size - 16) if size > 16 else b""
        if cmd == abort_on:
            # A last line, as a C server's failed assertion leaves (what a crash report shows).
            print(f"scriptserver: assertion failed: command {cmd} aborts", file=sys.stderr)
            sys.stderr.flush()
            os.abort()
        if cmd == hang_on:
            time.sleep(3600)
        if cmd == 13:
            global reset_seen
            reset_seen = True
        if cmd == error_on:
            reply(conn, msg_id, cmd, error=95)
        elif cmd == malformed_on and served >= malformed_from:
            reply(conn, msg_id, cmd, b"\0\0\0")
        elif cmd == 8 and "--accept-set-irqs" in flags:
            reply(conn, msg_id, cmd)
        elif cmd == 2 and "--grant-dma" in flags:
            reply(conn, msg_id, cmd)
        elif cmd == 3 and "--grant-dma" in flags:
            reply(conn, msg_id, cmd, payload[:24])  # the original DMA entry
        elif cmd == 1:
            caps = json.dumps({"capabilities": {"max_msg_fds": 8}}).encode() + b"\0"
            reply(conn, msg_id, cmd, struct.pack("<HH", 0, 0) + caps)
        elif cmd == 4:
            reply(conn, msg_id, cmd, struct.pack("<IIII", 16, 2, 1, 1))
        elif cmd == 5:
            index = struct.unpack_from("<I", payload, 8)[0]
            rflags = 3 if "--no-mmap" in flags else 7
            if index == 0:
                reply(conn, msg_id, cmd, struct.pack("<IIIIQQ", 32, rflags, 0, 0, 4096, 0))
            else:
                reply(conn, msg_id, cmd, error=22)
        elif cmd == 7:
            reply(conn, msg_id, cmd, struct.pack("<IIII", 16, 1, 0, 1))
        else:
            reply(conn, msg_id, cmd, error=95)
if path.isdigit():  # {fd}: an inherited listening socket
    listener = socket.socket(fileno=int(path))
else:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(8)
if ready is not None:
    os.write(ready, b"x")
    os.close(ready)
held, served = [], 0
while True:
    conn, _ = listener.accept()
    if "--never-answer" in flags or ("--one-client" in flags and served):
        held.append(conn)  # accepted, never read from nor answered
        continue
    served += 1
    reset_seen = False
    with conn:
        serve(conn)
    if "--abort-at-close" in flags and reset_seen:
        os.abort()
    if "--once" in flags:
        time.sleep(opt("--exit-delay", float) or 0)
        sys.exit(0)
"""


def script_server(directory: Path, *flags: str, fd: bool = False) -> str:
    """Write the server script into ``directory``; the --vfu-server command line for it."""
    script = Path(directory) / "scriptserver.py"
    if not script.exists():
        script.write_text(SCRIPT)
    return shlex.join([sys.executable, str(script), "{fd}" if fd else "{socket}", *flags])


# Plugins an inner pytest run does not need: hypothesis' re-imports itself
# (with assertion rewriting) in every pytester inline run, ~0.6 s each.
INNER_ARGS = ("-p", "no:hypothesispytest", "-p", "no:cacheprovider")


def cli(cwd: Path, *args: str) -> _subprocess.CompletedProcess:
    """``vfio-user-conformance *args`` in ``cwd``, as the console script runs it (a
    subcommand, ``client``, first)."""
    sub = [args[0]] if args[:1] == ("client",) else []
    rest = args[len(sub) :]
    return _subprocess.run(
        # -P: as the console script does, without the current directory on sys.path
        [sys.executable, "-P", "-m", "pytest_vfiouser.cli", *sub]
        + ["-p", "no:hypothesispytest", *rest],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def run(pytester, *args, subprocess: bool = False):
    """pytester.runpytest with INNER_ARGS."""
    runner = pytester.runpytest_subprocess if subprocess else pytester.runpytest
    return runner(*INNER_ARGS, *args)


def load_json(pytester, name: str = "vfu.json") -> dict:
    """The --vfu-json report of an inner run, with cases by test name."""
    data = json.loads((pytester.path / name).read_text())
    data["by_name"] = {c["nodeid"].split("::", 1)[1]: c for c in data["cases"]}
    return data
