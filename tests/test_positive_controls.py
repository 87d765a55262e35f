"""Negative cases whose positive control the default reference device cannot meet (a
region that holds max_data_xfer_size + 1 bytes; an IRQ type with room for max_msg_fds + 1
eventfds) can still pass and fail: against a reference device described to meet them,
they PASS, and against the faults they are meant to find, they do not."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from scriptservers import cli

PROFILE = Path(__file__).resolve().parents[1] / "reference_server" / "profiles" / "default.toml"
DEVICE = """
[server]
max_data_xfer_size = 4096
[[irqs]]
index = 2
count = 32
flags = ["eventfd", "maskable"]
"""
CASES = "test_count_above_max or test_excess_fds"


def verdicts(tmp_path: Path, *fault: str) -> dict[str, str]:
    (tmp_path / "device.toml").write_text(DEVICE)
    module = "reference_server_faults" if fault else "reference_server"
    server = f"{sys.executable} -m {module} --socket-path={{socket}} --device device.toml"
    for name in fault:
        server += f" --fault {name}"
    cli(tmp_path, "--vfu-server", server, "--vfu-profile", str(PROFILE), "-k", CASES,
        "--vfu-json", "out.json")  # fmt: skip
    return {c["id"]: c["verdict"] for c in json.loads((tmp_path / "out.json").read_text())["cases"]}


def test_the_controls_met_the_cases_pass(tmp_path):
    got = verdicts(tmp_path)
    assert got == {
        "region_rw/count-above-max[read]": "PASS",
        "region_rw/count-above-max[write]": "PASS",
        "version/excess-fds-refused": "PASS",
        "version/excess-fds-closed": "PASS",
    }, got


@pytest.mark.parametrize(
    "fault, case",
    [
        ("region-access-unchecked", "region_rw/count-above-max[read]"),
        ("max-msg-fds-ignored", "version/excess-fds-refused"),
        ("refused-fds-leaked", "version/excess-fds-closed"),
    ],
)
def test_the_controls_met_the_cases_find_their_fault(tmp_path, fault, case):
    got = verdicts(tmp_path, fault)
    assert got[case] in ("FAIL", "NON-STRICT"), got
