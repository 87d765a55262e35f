"""Adaptive polling before a blocking receive (pytest_vfiouser/client/busy_poll.py),
as the raw client and the reference server use it.

Over real sockets: a poll catches bytes (and fds) that arrive within the
window, burning CPU meanwhile; a closed window blocks and burns none; the
window grows after short gaps and closes after long ones; a server whose
client slows down stops spinning; the client's replies and timeouts are
what they are without polling.
"""

from __future__ import annotations

import array
import os
import signal
import socket
import threading
import time

import pytest
from test_client_peer import client_and_peer
from test_server_cli import run
from test_server_support import RefServer

from pytest_vfiouser import protocol as P
from pytest_vfiouser._unix import GROW_START_NS, MIN_NS, BusyPoll, RunQueue, runnable_tasks
from pytest_vfiouser.client import Timeout

ANC = socket.CMSG_SPACE(4 * 4)


def send_later(sock: socket.socket, delay: float, data: bytes, fds=()) -> threading.Timer:
    def send():
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        sock.sendmsg([data], anc)

    t = threading.Timer(delay, send)
    t.start()
    return t


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    with a, b:
        yield a, b


def idle() -> bool:
    """A machine with a CPU to spare, whatever this one's load while the tests run."""
    return False


def receive(poll: BusyPoll, sock: socket.socket):
    """poll.recvmsg_into; (bytes, ancillary data, CPU seconds, wall seconds)."""
    buf = bytearray(64)
    cpu, wall = time.process_time(), time.monotonic()
    n, anc, _, _ = poll.recvmsg_into(sock, [buf], ANC, 0)
    return bytes(buf[:n]), anc, time.process_time() - cpu, time.monotonic() - wall


def test_a_poll_catches_bytes_and_fds_within_the_window(pair):
    a, b = pair
    poll = BusyPoll(ceiling_ns=2_000_000_000, crowded=idle)
    poll.window_ns = 1_000_000_000
    efd = os.eventfd(0)
    try:
        t = send_later(b, 0.05, b"ping", [efd])
        data, anc, cpu, wall = receive(poll, a)
        t.join()
    finally:
        os.close(efd)
    assert data == b"ping"
    fds = array.array("i", anc[0][2]) if anc else []
    assert len(fds) == 1
    os.close(fds[0])
    assert wall >= 0.04
    assert (poll.caught, poll.blocked) == (1, 0), "the wait should have been spent polling"
    assert poll.window_ns == 1_000_000_000  # caught within the window: unchanged


@pytest.mark.parametrize(
    "ceiling, window, crowded",
    [(0, 0, False), (2_000_000_000, 1_000_000_000, True)],
    ids=["closed-window", "crowded-machine"],
)
def test_a_receive_that_does_not_poll_blocks_without_burning_cpu(pair, ceiling, window, crowded):
    """A closed window (a ceiling of 0 never opens it), or an open one on a crowded
    machine: the receive blocks, and the window stays as it was (for when the machine
    is idle again)."""
    a, b = pair
    poll = BusyPoll(ceiling_ns=ceiling, crowded=lambda: crowded)
    assert poll.window_ns == min(ceiling, GROW_START_NS)
    poll.window_ns = window
    t = send_later(b, 0.1, b"ping")
    data, _, cpu, wall = receive(poll, a)
    t.join()
    assert data == b"ping" and wall >= 0.09
    assert (poll.caught, poll.blocked) == (0, 1)
    assert cpu < wall / 4
    assert poll.window_ns == window


@pytest.mark.parametrize(
    "runnable, crowded", [(1, False), (2, False), (3, True), (40, True)], ids=str
)
def test_the_run_queue_is_crowded_with_more_runnable_tasks_than_cpus(tmp_path, runnable, crowded):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text(f"3.10 2.87 2.51 {runnable}/412 17330\n")
    queue = RunQueue(str(loadavg))
    queue.cpus = 2
    assert queue.crowded() is crowded


def test_the_run_queue_is_looked_at_once_per_check_period(tmp_path):
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.00 0.00 0.00 9/100 1\n")
    queue = RunQueue(str(loadavg), check_ns=3_600 * 10**9)
    queue.cpus = 2
    assert queue.crowded()
    loadavg.write_text("0.00 0.00 0.00 1/100 1\n")
    assert queue.crowded(), "read again within the period"
    queue.check_ns = 0
    assert not queue.crowded()


def test_the_run_queue_is_opened_once_at_the_start():
    """The suite counts a server's fds (leaks): the reference server's looks must not
    show as one fd more now and then, so its file is open from the start, and only then."""
    fds = lambda: len(os.listdir("/proc/self/fd"))  # noqa: E731
    before = fds()
    queue = RunQueue(check_ns=0)
    assert fds() == before + 1
    for _ in range(50):
        queue.crowded()
    assert fds() == before + 1


def test_without_a_run_queue_to_read_the_machine_counts_as_idle(tmp_path):
    assert not RunQueue(str(tmp_path / "missing")).crowded()
    (tmp_path / "garbled").write_text("nothing like loadavg")
    assert not RunQueue(str(tmp_path / "garbled")).crowded()


def test_this_machines_run_queue_is_read():
    with open("/proc/loadavg") as f:
        assert runnable_tasks(f.read()) >= 1  # this process runs as it reads


def test_bytes_already_there_come_back_at_once(pair):
    a, b = pair
    b.send(b"ready")
    assert receive(BusyPoll(), a)[0] == b"ready"


def test_a_long_wait_shrinks_the_window_to_closed(pair):
    a, b = pair
    poll = BusyPoll(ceiling_ns=200_000, crowded=idle)
    assert poll.window_ns == GROW_START_NS
    windows = []
    # 0.2 s: a loaded machine may run the sender before the receive polls (a byte already
    # there is caught and leaves the window as it was: such a round is not counted).
    for _ in range(20):
        t = send_later(b, 0.2, b"x")
        blocked = poll.blocked
        receive(poll, a)
        t.join()
        if poll.blocked > blocked:  # a long wait (a byte already there leaves the window)
            windows.append(poll.window_ns)
        if len(windows) == 4:
            break
    assert windows == [GROW_START_NS // 2, GROW_START_NS // 4, 0, 0]
    assert GROW_START_NS // 4 >= MIN_NS > GROW_START_NS // 8


@pytest.mark.parametrize(
    "window, waited, after",
    [
        (0, 30_000, GROW_START_NS),  # a gap a poll would have caught: open
        (50_000, 80_000, 100_000),  # longer than the window, within the ceiling: double
        (100_000, 150_000, 200_000),
        (200_000, 199_000, 200_000),  # never beyond the ceiling
        (100_000, 90_000, 100_000),  # within the window (the poll ran out just before): keep
        (200_000, 250_000, 100_000),  # beyond the ceiling: halve
        (12_000, 1_000_000, 0),  # halved below MIN_NS: closed
        (0, 1_000_000, 0),
    ],
)
def test_window_adjustment(window, waited, after):
    poll = BusyPoll(ceiling_ns=200_000)
    poll.window_ns = window
    poll._adjust(waited)
    assert poll.window_ns == after


@pytest.mark.parametrize("poll_ns, polled", [(2_000_000_000, True), (0, False)])
def test_client_reply_with_and_without_polling(poll_ns, polled):
    with client_and_peer(busy_poll_ns=poll_ns) as (client, peer):
        client.busy_poll.window_ns = poll_ns // 2
        client.busy_poll.crowded = idle
        reply = P.encode_reply(0, P.Command.DEVICE_RESET)
        wall = time.monotonic()  # before the sender starts: it sleeps 0.05 s from then on
        t = send_later(peer.sock, 0.05, reply)
        assert client.reset().ok
        wall = time.monotonic() - wall
        t.join()
        assert wall >= 0.04
        assert (client.busy_poll.caught, client.busy_poll.blocked) == (int(polled), int(not polled))


def test_client_timeout_is_kept_while_polling():
    with client_and_peer(timeout=1.0) as (client, peer):
        client.busy_poll.window_ns = client.busy_poll.ceiling_ns
        client.busy_poll.crowded = idle
        start = time.monotonic()
        with pytest.raises(Timeout):
            client.reset()
        # Not a second wait after the poll (2 s), with room for a loaded machine.
        assert 0.99 <= time.monotonic() - start < 1.9


def test_a_client_that_slows_down_does_not_make_the_server_spin(tmp_path):
    """Requests a few hundred microseconds apart open the window to its ceiling
    (1 ms here); then requests 2 ms apart, longer than any window: after a few
    halvings the server blocks, so its CPU time is its work, not polling."""
    srv = RefServer(tmp_path, "--busy-poll-us=1000")
    try:
        with srv.connect() as c:
            for _ in range(100):
                c.region_read(0, 0x10, 4).check()
                time.sleep(0.0003)
            before = _cpu_seconds(srv.pid)
            start = time.monotonic()
            for _ in range(200):
                c.region_read(0, 0x10, 4).check()
                time.sleep(0.002)
            wall = time.monotonic() - start
            used = _cpu_seconds(srv.pid) - before
        # A window that stayed open would poll about 1 ms in every 2 (half the wall
        # time); the work itself is a few percent.
        assert used < wall / 5, f"server CPU {used:.3f}s over {wall:.3f}s"
    finally:
        srv.stop()


def test_sigterm_right_after_a_burst(tmp_path):
    """A signal that lands while the server polls ends it as promptly as one
    that lands while it blocks."""
    srv = RefServer(tmp_path)
    try:
        with srv.connect() as c:
            for _ in range(300):
                c.region_read(0, 0x10, 4)
            srv.proc.send_signal(signal.SIGTERM)
            assert srv.proc.wait(3) == 0
        assert not os.path.exists(srv.path)
    finally:
        srv.stop()


def test_polling_off_still_serves(tmp_path):
    srv = RefServer(tmp_path, "--busy-poll-us=0")
    try:
        with srv.connect() as c:
            assert [c.region_read(0, 0x10, 4).check().body.count for _ in range(3)] == [4] * 3
    finally:
        srv.stop()


@pytest.mark.parametrize("value", ["-1", "1000001", "abc"])
def test_bad_busy_poll_values_are_usage_errors(value):
    r = run("--socket-path=/tmp/x.sock", f"--busy-poll-us={value}")
    assert r.returncode == 2 and "--busy-poll-us" in r.stderr, r


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
