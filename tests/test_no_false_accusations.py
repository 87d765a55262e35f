"""Behaviour the spec allows, met in real servers (libvfio-user's samples), that the
suite once judged a failure. Each test runs the suite against a script server that
behaves that way and expects the verdict the spec supports."""

from __future__ import annotations

import json
from pathlib import Path

from scriptservers import cli, script_server


def verdicts(tmp_path: Path, *args: str) -> dict[str, str]:
    proc = cli(tmp_path, *args, "--vfu-json", "out.json")
    report = tmp_path / "out.json"
    assert report.exists(), proc.stdout + proc.stderr
    return {c["id"]: c["verdict"] for c in json.loads(report.read_text())["cases"]}


def test_a_server_that_closes_and_exits_is_not_asked_for_another_client(tmp_path):
    """libvfio-user closes the connection on a header it cannot frame, and its samples
    exit once their client is gone ("the server can automatically exit"). The refusal
    is judged; the exit is not a failure to accept a new connection."""
    got = verdicts(
        tmp_path,
        "--vfu-server",
        script_server(tmp_path, "--close-on-bad-size", "--once"),
        "--vfu-section",
        "header",
        "-k",
        "msg_size_below_header or msg_size_huge",
    )
    assert got and set(got.values()) == {"PASS"}, got
