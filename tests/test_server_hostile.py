"""Clients that attack the reference server: memory that vanishes under its DMA. The
server must survive each and serve the next client.

Spec (Security Considerations): "Standard tools and mechanisms should be used on both
sides to validate input and prevent against denial of service scenarios"
"""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest
from test_server_support import RefServer, read32, write32, write64

from pytest_vfiouser.client import Client
from pytest_vfiouser.protocol import Command, DmaMap, DmaUnmap, RegionWrite
from reference_server import registers as R

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
