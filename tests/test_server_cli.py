"""The reference server as a program: options, --fd, signals, std fds, --device, -v."""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

import pytest
from test_server_support import SERVER, RefServer, read32

from pytest_vfiouser._unix import sockets_bound_to
from pytest_vfiouser.client import Client, ConnectionClosed
from pytest_vfiouser.protocol import Command, DeviceInfo, DmaMap
from pytest_vfiouser.target import wait_listening
from reference_server import registers as R
from reference_server import server as server_module


def run(*args, timeout=10, **kw):
    return subprocess.run(
        [*SERVER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kw,
    )


@pytest.mark.parametrize(
    "args, needle",
    [
        ((), "exactly one of --socket-path"),
        (("--socket-path=/tmp/x.sock", "--fd=3"), "exactly one of --socket-path"),
        (("--fd=abc",), "not a file descriptor number"),
        (("--fd=-1",), "not a file descriptor number"),
        (("--socket-path=/tmp/x.sock", "--spec", "0.9.3"), "'0.9.3' is not supported"),
        (("--socket-path=/tmp/x.sock", "--bogus"), "unrecognized arguments"),
        (("--socket-path=/tmp/x.sock", "--message-timeout=0"), "--message-timeout: 0.0 is not"),
        (("--socket-path=/tmp/x.sock", "--idle-timeout=-1"), "--idle-timeout: -1.0 is not"),
        (("--socket-path=/tmp/x.sock", "--idle-timeout=nan"), "--idle-timeout: nan is not"),
        (("--socket-path=/tmp/x.sock", "--send-timeout=inf"), "--send-timeout: inf is not"),
        (("--socket-path=/tmp/x.sock", "--send-timeout=1e6"), "--send-timeout: 1000000.0 is"),
        (("--socket-path=/tmp/x.sock", "--message-timeout=soon"), "invalid float value"),
        (("--socket-path=/tmp/x.sock", "--max-queued-bytes=-1"), "--max-queued-bytes: -1 is"),
        (("--socket-path=/tmp/x.sock", "--max-queued-bytes=1M"), "invalid int value"),
        (("--socket-path=/tmp/x.sock", "--max-msg-fds=0"), "--max-msg-fds: 0 is not in 1..253"),
        (("--socket-path=/tmp/x.sock", "--max-data-xfer-size=100"), "100 is not in 4096.."),
        (("--socket-path=/tmp/x.sock", "--close-after=SET_IRQS"), "'SET_IRQS' is not a command"),
        (("--socket-path=/tmp/x.sock", "--refuse=RESET:0"), "'RESET' is not a command"),
        (("--socket-path=/tmp/x.sock", "--refuse=DEVICE_RESET:x"), "'x' is not an errno number"),
        (("--socket-path=/tmp/x.sock", "--delay=DEVICE_GET_INFO"), "'' is not a number of"),
        (("--socket-path=/tmp/x.sock", "--delay=DEVICE_GET_INFO:-1"), "-1 is not in [0, 3600]"),
    ],
)
def test_usage_errors(args, needle):
    r = run(*args)
    assert r.returncode == 2, r
    assert needle in r.stderr


def test_help():
    r = run("--help")
    assert r.returncode == 0 and "--socket-path" in r.stdout and "--fd" in r.stdout
    for option in ("--message-timeout", "--idle-timeout", "--send-timeout", "--max-queued-bytes"):
        assert option in r.stdout


def test_device_file_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[[regions]]\nindex = 1\nkind = "ram"\nsize = 1000\n')
    r = run(f"--socket-path={tmp_path}/s.sock", f"--device={bad}")
    assert r.returncode == 2 and "regions[0].size" in r.stderr and "power of two" in r.stderr
    bad.write_text("not toml [")
    r = run(f"--socket-path={tmp_path}/s.sock", f"--device={bad}")
    assert r.returncode == 2 and "not valid TOML" in r.stderr
    r = run(f"--socket-path={tmp_path}/s.sock", f"--device={tmp_path}/missing.toml")
    assert r.returncode == 2 and "cannot read" in r.stderr
    bad.write_text('[server]\nclose_after = "RESET"\n')
    r = run(f"--socket-path={tmp_path}/s.sock", f"--device={bad}")
    assert r.returncode == 2 and "server.close_after: 'RESET' is not a command" in r.stderr
    assert not os.path.exists(tmp_path / "s.sock")


def test_socket_path_problems(tmp_path):
    r = run(f"--socket-path={tmp_path}/no/such/dir/s.sock")
    assert r.returncode == 1 and "cannot listen" in r.stderr
    regular = tmp_path / "file"
    regular.write_text("x")
    r = run(f"--socket-path={regular}")
    assert r.returncode == 1 and "not a socket" in r.stderr
    r = run(f"--socket-path={tmp_path}/{'x' * 120}.sock")
    assert r.returncode == 1 and "longer than 107" in r.stderr


def test_sigterm_exits_promptly_and_removes_socket(tmp_path):
    srv = RefServer(tmp_path)
    t0 = time.monotonic()
    assert srv.stop() == 0
    assert time.monotonic() - t0 < 2
    assert not os.path.exists(srv.path)


def test_sigterm_with_a_client_connected(tmp_path):
    srv = RefServer(tmp_path)
    with srv.connect() as c:
        c.device_get_info().check()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(3) == 0
    assert not os.path.exists(srv.path)


def test_sigint_also_terminates(tmp_path):
    srv = RefServer(tmp_path)
    srv.proc.send_signal(signal.SIGINT)
    assert srv.proc.wait(3) == 0
    assert not os.path.exists(srv.path)
    srv.stop()


def test_listens_quickly(tmp_path):
    path = str(tmp_path / "s.sock")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [*SERVER, f"--socket-path={path}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_listening(path, 5.0, lambda: proc.poll() is None)
        # A bound, not a speed goal (benchmarks measure speed): well under the suite's
        # 10 s start-up timeout even on a loaded machine.
        assert time.monotonic() - t0 < 3.0
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


def test_stale_socket_file_is_replaced_live_one_refused(tmp_path):
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    srv = RefServer(tmp_path, name="s")
    try:
        with srv.connect() as c:
            c.device_get_info().check()
        r = run(f"--socket-path={path}")
        assert r.returncode == 1 and "a listening stream socket is bound to it" in r.stderr
    finally:
        assert srv.stop() == 0


@pytest.mark.parametrize(
    "kind, what",
    [
        (socket.SOCK_DGRAM, "a datagram socket is bound"),
        (socket.SOCK_SEQPACKET, "a seqpacket socket not listening (yet) is bound"),
        (socket.SOCK_STREAM, "a stream socket not listening (yet) is bound"),
    ],
    ids=["datagram", "seqpacket", "stream-bound-not-listening"],
)
def test_socket_file_of_a_live_socket_that_refuses_connections_is_kept(tmp_path, kind, what):
    """A failed connect() is no proof of a stale file: these refuse it and are in use."""
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX, kind) as other:
        other.bind(str(path))
        before = os.lstat(path).st_ino
        r = run(f"--socket-path={path}")
        assert r.returncode == 1 and what in r.stderr, r.stderr
        assert os.lstat(path).st_ino == before  # the same file: not replaced


def test_a_listener_is_neither_connected_to_nor_waited_on(tmp_path):
    """A server that serves one client keeps it: the check does not connect; and a
    listener whose backlog is full does not make the check block."""
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        listener.listen(0)
        queued = []
        try:
            while True:  # fill the backlog: one more connect() would block
                c = socket.socket(socket.AF_UNIX)
                c.setblocking(False)
                queued.append(c)
                c.connect(str(path))
        except BlockingIOError:
            pass
        try:
            start = time.monotonic()
            r = run(f"--socket-path={path}", timeout=10)
            assert time.monotonic() - start < 5
            assert r.returncode == 1 and "a listening stream socket is bound" in r.stderr
            for _ in queued[:-1]:
                listener.accept()[0].close()  # the clients that were queued, and no other
            listener.setblocking(False)
            with pytest.raises(BlockingIOError):
                listener.accept()
        finally:
            for c in queued:
                c.close()


def test_a_renamed_socket_file_in_use_is_kept(tmp_path):
    """bind() recorded the old name; the file is known by its inode."""
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(tmp_path / "old.sock"))
        listener.listen(1)
        os.rename(tmp_path / "old.sock", tmp_path / "s.sock")
        r = run(f"--socket-path={tmp_path / 's.sock'}")
        assert r.returncode == 1 and "a listening stream socket is bound" in r.stderr
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()


def test_a_socket_file_whose_use_cannot_be_told_is_kept(tmp_path, monkeypatch):
    """Without the kernel's sock_diag for UNIX sockets, staleness cannot be proved."""
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as gone:
        gone.bind(str(path))

    def unavailable(st):
        raise OSError(errno.ENOENT, "sock_diag for AF_UNIX: No such file or directory")

    monkeypatch.setattr(server_module, "sockets_bound_to", unavailable)
    with pytest.raises(server_module.SetupError, match="cannot be told .* remove it if none"):
        server_module.bind_path(str(path))
    assert path.exists()


def test_sockets_bound_to_a_file():
    """Every socket bound to the file, by its inode, whatever its type and state."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "s.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        st = os.lstat(path)
        assert [(s.type, s.listening) for s in sockets_bound_to(st)] == [
            (socket.SOCK_STREAM, False)
        ]
        listener.listen(1)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            accepted, _ = listener.accept()
            bound = sorted(sockets_bound_to(st), key=lambda s: s.listening)
            assert [s.describe() for s in bound] == [
                "a connected stream socket",  # the accepted one shares the address
                "a listening stream socket",
            ]
            assert all(s.path == path for s in bound)
            accepted.close()
        listener.close()
        assert sockets_bound_to(st) == []


def test_inherited_listening_fd(tmp_path):
    path = str(tmp_path / "s.sock")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(4)
    fd = listener.fileno()
    proc = subprocess.Popen(
        [*SERVER, f"--fd={fd}"],
        pass_fds=[fd],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    listener.close()
    try:
        for _ in range(2):  # one client after another
            with Client.connect(path, timeout=5) as c:
                c.negotiate()
                assert c.device_get_info().check().body.num_regions == R.NUM_REGIONS
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0
        proc.stderr.close()
    assert os.path.exists(path)  # not ours to remove


def test_inherited_connected_fd_is_served_then_exit():
    ours, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [*SERVER, f"--fd={theirs.fileno()}"],
        pass_fds=[theirs.fileno()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    theirs.close()
    c = Client(ours, timeout=5)
    try:
        c.negotiate()
        assert read32(c, R.REG_ID) == R.ID_VALUE
    finally:
        c.close()
    assert proc.wait(5) == 0


def test_bad_inherited_fds(tmp_path):
    r = run("--fd=57")
    assert r.returncode == 1 and "--fd=57: Bad file descriptor" in r.stderr
    with open(tmp_path / "f", "w") as f:
        r = run(f"--fd={f.fileno()}", pass_fds=[f.fileno()])
    assert r.returncode == 1 and "is not a socket" in r.stderr
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    r = run(f"--fd={udp.fileno()}", pass_fds=[udp.fileno()])
    udp.close()
    assert r.returncode == 1 and "not a UNIX stream socket" in r.stderr


def test_std_fds_closed_or_null(tmp_path):
    """fds 0-2 closed at exec (and stderr a closed pipe): the server still works."""
    path = str(tmp_path / "s.sock")
    r, w = os.pipe()
    os.close(r)  # writes to stderr fail with EPIPE
    code = (
        "import os, sys, runpy; os.close(0); os.close(1); "
        "sys.argv = ['reference_server', '--socket-path=' + sys.argv[1], '-v']; "
        "runpy.run_module('reference_server', run_name='__main__')"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, path], stderr=w)
    os.close(w)
    try:
        assert wait_listening(path, 5.0, lambda: proc.poll() is None)
        with Client.connect(path, timeout=5) as c:
            c.negotiate()
            assert c.device_get_info().check().body.flags == 3
    finally:
        proc.terminate()
        assert proc.wait(5) == 0


def test_verbose_trace(tmp_path):
    srv = RefServer(tmp_path, "-v")
    try:
        with srv.connect() as c:
            c.device_get_info().check()
            c.region_read(4, 0, 4)  # refused: write-only
    finally:
        assert srv.stop() == 0
    log = srv.log()
    assert "<- DEVICE_GET_INFO command id=1 size=32 DeviceInfo(argsz=16" in log
    assert "-> DEVICE_GET_INFO reply id=1 size=32 DeviceInfo(argsz=16, flags=3" in log
    assert "refused REGION_READ command" in log and "EPERM" in log


def test_device_file(tmp_path):
    dev = tmp_path / "dev.toml"
    dev.write_text("""
[server]
max_data_xfer_size = 8192
[device]
base = "empty"
vendor_id = 0x1234
reset = false
num_regions = 9
[[regions]]
index = 2
kind = "ram"
size = 8192
[[irqs]]
index = 2
count = 3
flags = ["eventfd", "maskable"]
""")
    srv = RefServer(tmp_path, f"--device={dev}")
    try:
        with srv.connect() as c:
            assert c.negotiated.capabilities.max_data_xfer_size == 8192
            info = c.device_get_info().check().body
            assert (info.flags, info.num_regions, info.num_irqs) == (2, 9, 5)
            r = c.region_info(2).check()
            assert (r.body.flags, r.body.size, r.fd_count) == (3, 8192, 0)
            assert c.region_info(0).check().body.size == 0
            assert read32(c, 0, region=7) & 0xFFFF == 0x1234
            assert c.irq_info(2).check().body.count == 3
            assert c.irq_info(0).check().body.count == 0
            assert c.reset().error == 95  # ENOTSUP
            assert c.region_read(2, 0, 8193).error == 7  # E2BIG
            assert c.request(4, DeviceInfo(16)).ok
    finally:
        assert srv.stop() == 0


def test_limits_given_on_the_command_line_are_stated_and_kept(tmp_path):
    """--max-msg-fds and --max-data-xfer-size over the device's [server] (what client
    mode's small-limits scenario asks of the server)."""
    device = tmp_path / "d.toml"
    device.write_text("[server]\nmax_msg_fds = 8\n")
    server = RefServer(
        tmp_path, f"--device={device}", "--max-msg-fds=1", "--max-data-xfer-size=4096"
    )
    try:
        c = server.connect()
        assert (c.server_caps.max_msg_fds, c.server_caps.max_data_xfer_size) == (1, 4096)
        assert c.region_read(R.RAM_REGION, 0, 8192).error == errno.E2BIG
        c.close()
    finally:
        assert server.stop() == 0


def test_dma_between_reads_and_writes_back_each_new_mapping_before_the_next_reply(tmp_path):
    """--dma-between (client mode's dma-between scenario): after a DMA_MAP, the next
    command's reply comes after a DMA_READ of the mapping's first 64 bytes and a
    DMA_WRITE of them back; a mapping the client refuses to serve costs the probe only."""
    server = RefServer(tmp_path, "--dma-between", "--device", str(_short_dma_wait(tmp_path)))
    try:
        c = server.connect()
        c.memory.add(0x10000, 0x1000)
        c.memory.write(0x10000, bytes(range(64)))
        c.dma_map(0x10000, 0x1000).check()
        # Mapped at the server only (not client memory): the client refuses its DMA.
        c.request(Command.DMA_MAP, DmaMap(DmaMap.SIZE, 3, 0, 0x80000, 0x1000)).check()
        assert c.device_get_info().check().body.num_regions == 10  # 0.9.1
        requests = [(r.command, r.address, r.count, r.ok) for r in c.dma_requests]
        assert requests == [
            (Command.DMA_READ, 0x10000, 64, True),
            (Command.DMA_WRITE, 0x10000, 64, True),
            (Command.DMA_READ, 0x80000, 64, False),
        ]
        assert c.memory.read(0x10000, 64) == bytes(range(64))
        assert c.device_get_info().ok and len(c.dma_requests) == 3  # each mapping once
        c.close()
    finally:
        assert server.stop() == 0


def _short_dma_wait(tmp_path):
    device = tmp_path / "d.toml"
    device.write_text("[server]\ndma_reply_timeout = 1.0\n")
    return device


def test_close_after_closes_the_first_connection_after_that_reply_only(tmp_path):
    """--close-after COMMAND (client mode's server-closes scenario): the first connection
    is closed once its first COMMAND is answered; the next one is served on."""
    server = RefServer(tmp_path, "--close-after=DEVICE_GET_INFO")
    try:
        c = server.connect()
        assert c.device_get_info().ok
        with pytest.raises(ConnectionClosed):
            c.device_get_info()
        c.close()
        again = server.connect()
        assert again.device_get_info().ok and again.device_get_info().ok
        again.close()
    finally:
        assert server.stop() == 0


def test_refuse_refuses_every_such_command_with_the_errno_given(tmp_path):
    """--refuse COMMAND[:ERRNO] (client mode's errno-zero scenario and its control):
    errno 0 is the Error bit alone; the other commands are served."""
    for given, errno_value in (("DEVICE_GET_IRQ_INFO:0", 0), ("DEVICE_GET_IRQ_INFO", 22)):
        server = RefServer(tmp_path, f"--refuse={given}", name=f"r{errno_value}")
        try:
            c = server.connect()
            for index in (0, 1):
                reply = c.irq_info(index)
                assert not reply.ok and reply.error == errno_value and not reply.payload
            assert c.device_get_info().ok
            c.close()
        finally:
            assert server.stop() == 0


def test_delay_sends_each_connections_first_such_reply_late(tmp_path):
    """--delay COMMAND:SECONDS (client mode's reply-delayed scenario): the first reply to
    COMMAND of a connection comes SECONDS late, a command sent meanwhile is answered
    after it, and the next COMMAND is not delayed."""
    server = RefServer(tmp_path, "--delay=DEVICE_GET_INFO:0.5")
    try:
        c = server.connect()
        started = time.monotonic()
        first = c.send(Command.DEVICE_GET_INFO, DeviceInfo(16))
        meanwhile = c.send(Command.DEVICE_GET_IRQ_INFO, struct.pack("<IIII", 16, 0, 0, 0))
        assert c.recv_reply(first).ok and time.monotonic() - started >= 0.5
        assert c.recv_reply(meanwhile).ok
        started = time.monotonic()
        assert c.device_get_info().ok and time.monotonic() - started < 0.4
        c.close()
    finally:
        assert server.stop() == 0
