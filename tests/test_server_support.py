"""Shared helpers for the reference server tests (no tests here).

``RefServer`` runs ``python -m reference_server`` as a subprocess on a socket
in a temporary directory, logging to a file; ``ref_server`` (module scope)
and ``client`` (a negotiated pytest_vfiouser.client.Client per test) are the
fixtures the test modules import. At module teardown the server must still
be running, hold no more fds than before the first client, and have logged
no internal error.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pytest_vfiouser.client import Client
from pytest_vfiouser.target import fd_count, wait_listening

SERVER = [sys.executable, "-m", "reference_server"]


class RefServer:
    def __init__(self, tmp: Path, *args: str, name: str = "server", command: list[str] = SERVER):
        self.tmp = Path(tmp)
        self.path = str(self.tmp / f"{name}.sock")
        self.log_path = self.tmp / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [*command, f"--socket-path={self.path}", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
        )
        if not wait_listening(self.path, 10.0, lambda: self.proc.poll() is None):
            self.stop()
            raise RuntimeError(f"reference server did not listen: {self.log()}")
        self.baseline_fds = self.fds()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fds(self) -> int:
        return fd_count(self.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def connect(self, negotiate: bool = True, capabilities: dict | None = None, **kwargs) -> Client:
        c = Client.connect(self.path, timeout=5.0, **kwargs)
        if negotiate:
            c.negotiate(capabilities=capabilities)
        return c

    def wait_fds(self, expected: int, timeout: float = 3.0) -> int:
        """Poll the fd count until it is ``expected`` (the server may still be cleaning up)."""
        deadline = time.monotonic() + timeout
        while True:
            n = self.fds()
            if n == expected or time.monotonic() > deadline:
                return n
            time.sleep(0.01)

    def wait_idle(self) -> None:
        """Wait until the server has dropped every client (fds back to baseline)."""
        assert self.wait_fds(self.baseline_fds) == self.baseline_fds, self.log()[-2000:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="module")
def ref_server(tmp_path_factory):
    srv = RefServer(tmp_path_factory.mktemp("refsrv"))
    yield srv
    alive = srv.proc.poll() is None
    leaked = srv.wait_fds(srv.baseline_fds) if alive else None
    rc = srv.stop()
    log = srv.log()
    assert alive, f"the server died (status {rc}):\n{log[-3000:]}"
    assert leaked == srv.baseline_fds, f"fds: {leaked}, baseline {srv.baseline_fds}"
    assert "internal error" not in log and "Traceback" not in log, log[-3000:]
    assert rc == 0


@pytest.fixture
def client(ref_server):
    c = ref_server.connect()
    yield c
    c.close()


def eventfd() -> int:
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def eventfd_value(fd: int) -> int:
    """The counter (and reset it); 0 when nothing was signalled."""
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


def u32(data: bytes) -> int:
    return int.from_bytes(data[:4], "little")


def read32(c: Client, offset: int, region: int = 0) -> int:
    return u32(c.region_read(region, offset, 4).check().body.data)


def write32(c: Client, offset: int, value: int, region: int = 0):
    return c.region_write(region, offset, value.to_bytes(4, "little"))


def write64(c: Client, offset: int, value: int, region: int = 0):
    return c.region_write(region, offset, value.to_bytes(8, "little"))
