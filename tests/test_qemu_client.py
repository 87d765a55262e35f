"""QEMU's vfio-user client (vfio-user-pci) against the reference server: a real VMM sets
the device up (VERSION, DEVICE_GET_INFO, every region's and IRQ's info, DMA maps of its
guest RAM, SeaBIOS's config space accesses) and must find nothing it refuses.

QEMU comes from ``../shared/third_party/qemu/setup-client.sh``, unpacked into
``.interop-build/qemu`` (``.ci/run`` does this) or wherever ``VFU_QEMU`` names its
``qemu-system-x86_64``; without it the test skips and says how to set it up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from expected_findings import unexpected

from pytest_vfiouser.protocol import REVISIONS
from pytest_vfiouser.target import TargetManager
from reference_server import registers as R

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO.parent / "shared" / "third_party" / "qemu"
SECONDS = 8  # the run: SeaBIOS enumerates the device within about 2 s on TCG


def _qemu() -> Path:
    given = os.environ.get("VFU_QEMU")
    qemu = Path(given) if given else REPO / ".interop-build" / "qemu" / "qemu-system-x86_64"
    if not (SCRIPTS / "run-client.sh").is_file():
        pytest.skip(f"no QEMU client scripts at {SCRIPTS}")
    if not os.access(qemu, os.X_OK):
        pytest.skip(
            f"QEMU's vfio-user client is not set up at {qemu}: run "
            f"{SCRIPTS / 'setup-client.sh'} {qemu.parent} (as .ci/run does), or set VFU_QEMU"
        )
    return qemu


@pytest.mark.parametrize("spec", REVISIONS)
def test_qemu_sets_up_the_reference_device(tmp_path, spec):
    """At both revisions: QEMU's client speaks 0.9.2 (it proposes pgsizes, max_dma_maps,
    write_multiple) and takes a 0.9.1 server's reply as well."""
    qemu = _qemu()
    command = [sys.executable, "-m", "reference_server", "--socket-path={socket}", f"--spec={spec}"]
    manager = TargetManager.standalone(command, base_dir=str(tmp_path))
    try:
        target = manager.acquire("")
        run = subprocess.run(
            ["bash", str(SCRIPTS / "run-client.sh"), str(qemu), target.socket_path, str(SECONDS)],
            capture_output=True,
            text=True,
            timeout=SECONDS + 60,
        )
        alive = target.alive
    finally:
        manager.stop_all()
    trace = run.stderr
    errors = [line for line in trace.splitlines() if not line.startswith("vfio_user")]
    # A device QEMU refuses makes it exit at once, its error naming the failed message.
    assert run.returncode == 0, "\n".join(errors[-20:])
    assert "terminating on signal 15" in trace, "\n".join(errors[-20:])
    regions = {int(m) for m in re.findall(r"vfio_user_get_region_info\s+index (\d+)", trace)}
    # The six BARs and the config space: what vfio-pci sets up for any device.
    assert set(range(6)) | {R.CONFIG_REGION} <= regions, sorted(regions)
    assert "vfio_user_dma_map" in trace and "vfio_user_region_rw" in trace
    assert alive, "the reference server did not survive QEMU's session"


def test_qemu_passes_the_client_cases_but_its_expected_findings(tmp_path):
    """vfio-user-conformance client with QEMU's client at 0.9.2, the sections its setup
    shows (python -m interop runs them all): every client case its session exercises
    passes, but the findings its expectation file records (with the sentences QEMU
    breaks)."""
    qemu = _qemu()
    command = f"bash {SCRIPTS / 'run-client.sh'} {qemu} {{socket}} 5"  # SeaBIOS needs ~2 s
    report = tmp_path / "client.json"
    sections = ["version", "dma_map", "info"]  # the default run and scenario other-major
    subprocess.run(
        [sys.executable, "-m", "pytest_vfiouser.cli", "client", "--vfu-spec", "0.9.2"]
        + ["--vfu-client", command, "--vfu-client-time", "60", f"--vfu-json={report}"]
        + [f"--vfu-section=client/{s}" for s in sections],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SECONDS + 300,
    )
    assert unexpected(report, "qemu-client", "0.9.2") == []
    verdicts = {c["case_id"]: c["verdict"] for c in json.loads(report.read_text())["cases"]}
    # What a VMM's setup always shows: VERSION, DMA maps, info requests, SET_IRQS.
    for case_id in ("client/version/version-first", "client/dma_map/fd-rules"):
        assert verdicts[case_id] == "PASS", verdicts
