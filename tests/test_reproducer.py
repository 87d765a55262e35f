"""Reproducers: a recorded conversation replays against a real server."""

from __future__ import annotations

import os
import subprocess
import sys

from test_server_support import RefServer

from pytest_vfiouser.fuzz import conversation_steps, write_reproducer
from pytest_vfiouser.protocol import Command, DmaMapFlags, IrqSetFlags, PciIrq


def _record(server: RefServer) -> list[dict]:
    """A conversation with fds both kinds of way, an error reply and pipelining."""
    client = server.connect()
    try:
        memfd = client.memory.create_memfd_region(0x10000, 0x2000)
        client.dma_map(0x10000, 0x2000, DmaMapFlags.READ | DmaMapFlags.WRITE, fd=memfd).check()
        efd = os.eventfd(0)
        try:
            client.set_irqs(
                PciIrq.MSIX, IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER, 0, 1, fds=[efd]
            ).check()
        finally:
            os.close(efd)
        assert not client.region_read(99, 0, 4).ok  # an error reply
        client.pipeline([(Command.DEVICE_GET_INFO, b"\x10" + bytes(15))] * 3)
        return client.wire_log.to_dicts()
    finally:
        client.close()


def test_steps_count_replies_and_fds(tmp_path):
    server = RefServer(tmp_path)
    try:
        steps = conversation_steps(_record(server))
    finally:
        server.stop()
    assert steps[0]["what"].startswith("VERSION command")
    assert all(s["replies"] == 1 for s in steps[:-3])
    dma_map = next(s for s in steps if s["what"].startswith("DMA_MAP"))
    assert dma_map["fds"] == [["memfd", 0x2000]]
    set_irqs = next(s for s in steps if s["what"].startswith("DEVICE_SET_IRQS"))
    assert set_irqs["fds"] == [["eventfd", 0]]


def test_reproducer_replays_against_a_server(tmp_path):
    server = RefServer(tmp_path)
    try:
        log = _record(server)
        script = write_reproducer(
            tmp_path / "repro.py", [log, log[:2]], "two connections\nof a test"
        )
        proc = subprocess.run(
            [sys.executable, "-I", str(script), server.path, "--timeout", "3"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        server.stop()
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "# two connections\n# of a test" in script.read_text()
    assert out.count("== connection") == 2
    assert out.count("\n<< ") == sum(1 for m in log if m["direction"] == "recv") + 1
    assert "ERROR errno=" in out  # the refused REGION_READ
    assert "!!" not in out
    assert out.rstrip().endswith("the server still accepts connections")
