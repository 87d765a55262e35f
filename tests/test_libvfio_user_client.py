"""libvfio-user's sample client (samples/client.c, snapshot 7e7a0a6) against the
reference server at vfio-user 0.9.2, with the sample server's device as near as a
description comes (tests/data/libvfio-user-client-device.toml).

The client cannot run to its end against any server but libvfio-user's sample: after
BAR0 it blocks reading its INTx eventfd until the sample's BAR0 timer (the time_t it
wrote) fires, then takes the sample's DMA_WRITE/DMA_READ messages; its migration reads
a fixed 12 and 13 chunks (the sample's 0x3000 + 8 bytes), not "until no more
migration data remains", and resumes the destination with the STOP_COPY chunks only.
So this runs it up to that wait: everything before it (VERSION, a bogus region,
DEVICE_GET_INFO, every region's info, config space, DEVICE_RESET, DMA_MAP, IRQ info,
SET_IRQS, DMA_LOGGING_START, BAR0) must be accepted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from expected_findings import unexpected

from interop import _build

REPO = Path(__file__).resolve().parent.parent
DEVICE = REPO / "tests" / "data" / "libvfio-user-client-device.toml"
SNAPSHOT = "7e7a0a6"
SECONDS = 20


def _client() -> Path:
    source = _build.find_source(None, REPO)
    cache = REPO / ".interop-build"
    if not os.access(_build.samples_dir(cache, SNAPSHOT) / "client", os.X_OK):
        if not _build.has_source(source):
            pytest.skip(_build.skip_message(source))
        try:
            _build.build(source, cache, SNAPSHOT, ["client"])
        except _build.BuildError as e:
            pytest.skip(f"libvfio-user's sample client cannot be built: {e}")
    return _build.samples_dir(cache, SNAPSHOT) / "client"


def _wait_for(path: Path, pattern: str, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + SECONDS
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and re.search(pattern, path.read_text()):
            return True
        time.sleep(0.1)
    return False


def test_the_sample_client_gets_to_its_interrupt_wait(tmp_path):
    client = _client()
    sock, log = tmp_path / "s.sock", tmp_path / "server.log"
    server_cmd = [sys.executable, "-m", "reference_server", f"--socket-path={sock}"]
    server_cmd += ["--spec", "0.9.2", "--device", str(DEVICE), "-v"]
    with open(log, "w") as err:
        server = subprocess.Popen(server_cmd, stderr=err, cwd=REPO)
    run = None
    try:
        assert _wait_for(log, "listening on", server), log.read_text()
        run = subprocess.Popen(
            [str(client), str(sock)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        # Its last request before the wait: reading back BAR0 (region 0, 8 bytes).
        reached = _wait_for(log, r"-> REGION_READ reply .*region=0, count=8", run)
        alive = run.poll() is None
    finally:
        for p in (run, server):
            if p is not None:
                p.kill()
                p.wait(timeout=10)
    out = run.stdout.read().decode(errors="replace")
    run.stdout.close()
    trace = log.read_text()
    assert reached and alive, f"client exited {run.returncode}:\n{out}\n{trace[-3000:]}"
    refused = [line for line in trace.splitlines() if "refused" in line]
    # The one refusal the client asks for: region 0xdeadbeef (it expects EINVAL).
    assert len(refused) == 1 and "EINVAL: no region 3735928559" in refused[0], refused
    assert "DEVICE_FEATURE reply" in trace and "DEVICE_SET_IRQS reply" in trace


# What its session shows (python -m interop runs every section): the default run, and
# scenarios other-major and irqs-raised.
SECTIONS = ("version", "dma_map", "info", "set_irqs", "device_feature", "dma_logging")


def test_the_sample_client_passes_the_client_cases_but_its_expected_findings(tmp_path):
    """vfio-user-conformance client with the sample client (stopped at its interrupt
    wait), the sections its session shows: every client case it exercises passes, but
    the findings its expectation file records."""
    client = _client()
    report = tmp_path / "client.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_vfiouser.cli", "client", "--vfu-spec", "0.9.2"]
        + ["--vfu-device", str(DEVICE), "--vfu-client", f"{client} {{socket}}"]
        + ["--vfu-client-time", "5", f"--vfu-json={report}"]
        + [f"--vfu-section=client/{s}" for s in SECTIONS],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.exists(), proc.stdout[-3000:]
    assert unexpected(report, "libvfio-user-client", "0.9.2") == []
    verdicts = {c["case_id"]: c["verdict"] for c in json.loads(report.read_text())["cases"]}
    assert verdicts["client/set_irqs/within-irq-info"] == "PASS", verdicts
