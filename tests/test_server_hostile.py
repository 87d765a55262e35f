"""Clients that attack the reference server: memory that vanishes under its DMA, floods
while it waits, clients that trickle, idle or stop reading. The server must survive
each, bound what the client costs it (reference_server/limits.py), and serve the next
client.

Spec (Security Considerations): "Standard tools and mechanisms should be used on both
sides to validate input and prevent against denial of service scenarios"
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time

import pytest
from test_server_support import RefServer, read32, write32, write64

from pytest_vfiouser.client import Client, ConnectionClosed
from pytest_vfiouser.protocol import (
    Command,
    DmaMap,
    DmaReadReply,
    DmaUnmap,
    Header,
    RegionRead,
    RegionWrite,
    encode,
)
from reference_server import registers as R

MARGIN = 1.0  # seconds a drop may come late on a loaded machine (CI: 2 cores)
DMA_ADDRESS = 0x100000


@pytest.fixture
def start(tmp_path):
    """start(*args): a reference server of this test's own; it must be alive and have
    logged no internal error at the end."""
    started = []

    def start(*args: str) -> RefServer:
        started.append(RefServer(tmp_path, *args))
        return started[-1]

    yield start
    for srv in started:
        alive = srv.proc.poll() is None
        rc = srv.stop()
        log = srv.log()
        assert alive, f"the server died (status {rc}):\n{log[-3000:]}"
        assert "internal error" not in log and "Traceback" not in log, log[-3000:]


def program_dma(c: Client, address: int, length: int, direction: int) -> None:
    write64(c, R.REG_DMA_DEV_OFFSET, 0).check()
    write64(c, R.REG_DMA_CLIENT_ADDR, address).check()
    write32(c, R.REG_DMA_LENGTH, length).check()
    write32(c, R.REG_DMA_DIRECTION, direction).check()


def ring(c: Client) -> int:
    """Ring the DMA doorbell without waiting for its reply: the msg_id."""
    return c.send(Command.REGION_WRITE, RegionWrite(R.REG_DMA_DOORBELL, 0, 4, b"\1\0\0\0"))


def closed_within(c: Client, timeout: float) -> float | None:
    """Seconds until the server closes ``c`` (None: it did not within ``timeout``)."""
    start = time.monotonic()
    try:
        c.recv_message(timeout)
    except ConnectionClosed:
        return time.monotonic() - start
    except Exception:  # a timeout, or a message: not closed
        return None
    return None


# ---- memory that changes under the device's DMA


def test_truncating_dma_memory_mid_transfer_cannot_crash_the_server(start):
    """The client truncates the memfd it mapped while the device copies into and out
    of it: each copy succeeds or fails with EFAULT, and the server lives (it died of
    SIGBUS within two seconds when it accessed a mapping of the file)."""
    server = start()
    size = R.DMA_RAM_SIZE
    fd = os.memfd_create("shrinking", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    stop = threading.Event()

    def truncate():
        while not stop.is_set():
            os.ftruncate(fd, 0)
            os.ftruncate(fd, size)

    errors = set()
    copies = 0
    with server.connect() as c:
        c.request(Command.DMA_MAP, DmaMap(32, 3, 0, DMA_ADDRESS, size), [fd]).check()
        program_dma(c, DMA_ADDRESS, size, R.DMA_TO_CLIENT)
        shrinker = threading.Thread(target=truncate)
        shrinker.start()
        try:
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                write32(c, R.REG_DMA_DIRECTION, copies % 2).check()
                errors.add(write32(c, R.REG_DMA_DOORBELL, R.DMA_START).error)
                copies += 1
        finally:
            stop.set()
            shrinker.join()
            os.close(fd)
        assert errors <= {0, errno.EFAULT}, errors
        assert errno.EFAULT in errors, "the truncations never met a copy: the test proves nothing"
        c.request(Command.DMA_UNMAP, DmaUnmap(24, 0, DMA_ADDRESS, size)).check()
    assert server.proc.poll() is None
    with server.connect() as c:
        assert read32(c, R.REG_ID) == R.ID_VALUE


# ---- floods while the server waits for a DMA reply


def wait_for_dma_read(c: Client):
    """Map client memory without an fd, start a DMA from it: the server's DMA_READ,
    left unanswered (the server now waits for its reply), and the doorbell's msg_id."""
    c.dma_map(DMA_ADDRESS, 0x1000).check()
    program_dma(c, DMA_ADDRESS, 8, R.DMA_FROM_CLIENT)
    bell = ring(c)
    req = c.recv_message()
    assert req.command == Command.DMA_READ and not req.is_reply
    return req, bell


def write_of(n: int, msg_id: int) -> bytes:
    return encode(msg_id, Command.REGION_WRITE, RegionWrite(0, R.RAM_REGION, n, bytes(n)).pack())


def test_commands_sent_during_a_dma_wait_are_held_up_to_a_byte_bound(start):
    server = start("--max-queued-bytes=1048576")
    chunk = R.RAM_SIZE  # 64 KiB writes: 16 of them fill the bound
    with server.connect() as c:  # under the bound: held, then served after the DMA
        req, bell = wait_for_dma_read(c)
        c.send_raw(b"".join(write_of(chunk, 100 + i) for i in range(8)))
        time.sleep(0.1)  # the server reads (and holds) them while it waits
        c.send_raw(
            Header(req.msg_id, Command.DMA_READ, 16 + 24, 1, 0).pack()
            + DmaReadReply(DMA_ADDRESS, 8, b"8 bytes!").pack()
        )
        assert c.recv_reply(bell).ok
        for i in range(8):
            assert c.recv_reply(100 + i).ok
        assert c.region_read(R.DMA_RAM_REGION, 0, 8).check().body.data == b"8 bytes!"
    server.wait_idle()
    with server.connect() as c:  # 64 x 64 KiB: over the bound, the client is dropped
        wait_for_dma_read(c)
        try:
            c.send_raw(b"".join(write_of(chunk, 100 + i) for i in range(64)))
        except ConnectionClosed:
            pass  # dropped while we still sent
        assert closed_within(c, 5.0) is not None
    with server.connect() as c:  # served once the server has logged why it dropped the last
        assert read32(c, R.REG_ID) == R.ID_VALUE
    assert "bytes of them sent while the server waited for a DMA reply" in server.log()


# ---- clients that hold the server up


def trickle(path: str, data: bytes, every: float, stop: threading.Event) -> socket.socket:
    """Connect and send ``data`` a byte every ``every`` seconds from a thread."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)

    def run():
        for i in range(len(data)):
            if stop.wait(every):
                return
            try:
                s.send(data[i : i + 1], socket.MSG_NOSIGNAL)
            except OSError:
                return  # dropped

    threading.Thread(target=run, daemon=True).start()
    return s


def test_a_message_trickled_a_byte_at_a_time_is_cut_off(start):
    server = start("--message-timeout=0.5")
    raw = write_of(0x1000, 1)  # a 4 KiB write, a byte every 100 ms: 7 minutes
    stop = threading.Event()
    began = time.monotonic()
    slow = trickle(server.path, raw, 0.1, stop)
    try:
        with Client.connect(server.path, timeout=10) as later:  # waits behind the slow one
            later.negotiate()
            elapsed = time.monotonic() - began
    finally:
        stop.set()
        slow.close()
    assert 0.5 <= elapsed < 0.5 + MARGIN, elapsed
    assert "a message took over 0.5 s to arrive" in server.log()


def test_an_idle_client_is_closed_only_while_another_waits(start):
    server = start("--idle-timeout=0.5")
    with server.connect() as idle:
        time.sleep(1.0)  # idle, nobody waiting: kept
        assert read32(idle, R.REG_ID) == R.ID_VALUE
        began = time.monotonic()
        with Client.connect(server.path, timeout=10) as waiting:
            waiting.negotiate()  # served once the idle client is dropped
            elapsed = time.monotonic() - began
            assert closed_within(idle, 1.0) is not None
            assert read32(waiting, R.REG_ID) == R.ID_VALUE
    assert 0.5 <= elapsed < 0.5 + MARGIN, elapsed
    assert "no whole message for 0.5 s while another client waited" in server.log()


def test_a_client_that_stops_reading_is_dropped_after_the_send_timeout(start):
    """The timeout bounds the whole send: SO_SNDTIMEO bounded each send() call, and a
    reply bigger than the socket buffer took two (twice the timeout)."""
    server = start("--send-timeout=1")
    read = RegionRead(0, R.RAM_REGION, R.RAM_SIZE).pack()
    with server.connect() as deaf:
        deaf.send_raw(b"".join(encode(i, Command.REGION_READ, read) for i in range(64)))
        began = time.monotonic()
        with Client.connect(server.path, timeout=10) as later:
            later.negotiate()
            elapsed = time.monotonic() - began
    assert 1.0 <= elapsed < 1.6, elapsed  # 2 s and more before
    assert "could not be sent in 1 s" in server.log()
