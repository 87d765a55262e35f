"""Reproducers: a recorded conversation replays against a real server."""

from __future__ import annotations

import os
import subprocess
import sys

from test_server_support import RefServer

from pytest_vfiouser.fuzz import conversation_steps, write_reproducer
from pytest_vfiouser.protocol import Command, DmaMapFlags, IrqSetFlags, PciIrq

SERVER_FAULTS = [sys.executable, "-m", "reference_server_faults"]


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


def _replay(script, path: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-I", str(script), path, "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_reproducer_replays_and_judges(tmp_path):
    """Against the server that answered so, the failure reproduces (exit 1); against one
    that answers otherwise (here: a negative errno in the error reply), it does not
    (exit 0), and the first difference is said."""
    server = RefServer(tmp_path)
    try:
        log = _record(server)
        script = write_reproducer(
            tmp_path / "repro.py", [log, log[:2]], "two connections\nof a test"
        )
        proc = _replay(script, server.path)
    finally:
        server.stop()
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "# two connections\n# of a test" in script.read_text()
    assert out.count("== connection") == 2
    assert out.count("\n<< ") == sum(1 for m in log + log[:2] if m["direction"] == "recv")
    assert "ERROR errno=" in out  # the refused REGION_READ
    assert out.rstrip().endswith("== reproduced: the server answered as in the failing run")
    other = RefServer(
        tmp_path, name="other", command=[*SERVER_FAULTS, "--fault", "error-field-negative"]
    )
    try:
        proc = _replay(script, other.path)
    finally:
        other.stop()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    last = proc.stdout.rstrip().splitlines()[-1]
    assert last.startswith("== not reproduced: the server sent cmd=9") and "errno=" in last, last


def test_a_close_is_part_of_what_reproduces(tmp_path):
    """A recording that ends with the server closing the connection reproduces only when
    the server closes it again."""
    steps = conversation_steps(
        [
            {"direction": "send", "raw": "00" * 16, "fds": 0, "header": "x"},
            {"direction": "note", "note": "the peer closed the connection"},
        ]
    )
    assert steps[-1]["end"] == "closed" and steps[-1]["expect"] == []
