"""Fds the server sends where no message allows them fail every case that received some,
whatever client it came through (vfu_client, vfu_connect, watch_client), and only those:
against script servers that attach eventfds to every reply."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from scriptservers import cli, load_json, run, script_server

from pytest_vfiouser.plugin._fds import NO_FDS, REGION_INFO

pytest_plugins = ["pytester"]

CASES = """
import pytest
from pytest_vfiouser import MUST, SHOULD, case, watch_client
from pytest_vfiouser.client import Client

@case("s/passes", MUST)
def test_passes(vfu_client):
    assert vfu_client.reset().ok is False  # the script server refuses it: ENOTSUP

@case("s/fails-by-itself", MUST)
def test_fails_by_itself(vfu_client):
    assert vfu_client.reset().ok, "my own finding"

@case("s/should-not-met", SHOULD)
def test_should_not_met(vfu_client):
    assert vfu_client.reset().ok, "a SHOULD of mine"

@case("s/skips-after-talking", MUST)
def test_skips_after_talking(vfu_client):
    vfu_client.reset()
    pytest.skip("cannot judge")

@case("s/own-client", MUST)
def test_own_client(vfu_target):
    with Client.connect(vfu_target.socket_path, timeout=2) as client:
        watch_client(client)
        client.negotiate()

@case("s/no-conversation", MUST)
def test_no_conversation(vfu_target):
    assert vfu_target.alive

@case("s/mmap-region", MUST)
def test_mmap_region(vfu_client):
    vfu_client.region_info(0).close_fds()  # region 0 has the MMAP flag: one fd may come
"""


def _verdicts(pytester: pytest.Pytester, *flags: str) -> dict:
    pytester.makepyfile(CASES)
    run(pytester, "--vfu-server", script_server(pytester.path, *flags), "--vfu-json=vfu.json")
    return load_json(pytester)["by_name"]


def test_without_stray_fds_the_cases_have_their_own_verdicts(pytester: pytest.Pytester):
    cases = _verdicts(pytester)
    assert {name: c["verdict"] for name, c in cases.items()} == {
        "test_passes": "PASS",
        "test_fails_by_itself": "FAIL",
        "test_should_not_met": "NON-STRICT",
        "test_skips_after_talking": "UNIMPLEMENTED",
        "test_own_client": "PASS",
        "test_no_conversation": "PASS",
        "test_mmap_region": "PASS",
    }


def test_one_stray_fd_on_every_reply_fails_every_case_that_got_one(pytester: pytest.Pytester):
    cases = _verdicts(pytester, "--stray-fds", "1")
    assert {name: c["verdict"] for name, c in cases.items()} == {
        "test_passes": "FAIL",
        "test_fails_by_itself": "FAIL",
        "test_should_not_met": "FAIL",
        "test_skips_after_talking": "FAIL",
        "test_own_client": "FAIL",
        "test_no_conversation": "PASS",  # it received nothing
        "test_mmap_region": "FAIL",  # VERSION's fd; the one on REGION_INFO is allowed
    }
    message = cases["test_passes"]["message"]
    assert message.startswith(
        "the server sent 2 fds more than the spec allows, on 2 messages: the VERSION reply "
        "msg_id 0 carried 1 fds (it may carry none); the DEVICE_RESET error reply msg_id 1 "
        "carried 1 fds (it may carry none)\n"
    ), message
    assert f"{NO_FDS} (VERSION)" in message
    assert 'Spec (Header): "If an error occurs, the reply message must only include' in message
    # A case that failed by itself keeps its own verdict: said once, not twice.
    assert cases["test_fails_by_itself"]["message"].startswith("AssertionError: my own finding")
    # A SHOULD it failed too is said after the MUST it broke.
    should = cases["test_should_not_met"]["message"]
    assert should.startswith("the server sent 2 fds more than the spec allows") and (
        "(the case found too, a NON-STRICT: AssertionError: a SHOULD of mine" in should
    )
    assert "the VERSION reply msg_id 0 carried 1 fds" in cases["test_own_client"]["message"]
    assert "on 1 messages: the VERSION reply" in cases["test_mmap_region"]["message"]


def test_two_fds_on_an_mmap_region_break_its_one(pytester: pytest.Pytester):
    cases = _verdicts(pytester, "--stray-fds", "2")
    message = cases["test_mmap_region"]["message"]
    assert "the DEVICE_GET_REGION_INFO reply msg_id 1 carried 2 fds (it may carry 1)" in message, (
        message
    )
    assert REGION_INFO in message


TIMEOUT = 2.0
SELECTION = "test_reply_major or test_device_info or test_dma_maps_gone or test_reply_caps_subset"


def _conformance(directory: Path, *flags: str) -> dict[str, dict]:
    directory.mkdir()
    cli(
        directory,
        "--vfu-server",
        script_server(directory, *flags),
        "--vfu-timeout",
        str(TIMEOUT),
        "-p",
        "no:randomly",
        "-k",
        SELECTION,
        "--vfu-json",
        "out.json",
    )
    return {c["id"]: c for c in json.loads((directory / "out.json").read_text())["cases"]}


def test_250_unsolicited_fds_on_every_reply_leave_no_case_passing(tmp_path: Path):
    """The conformance suite itself, against the script server with and without 250
    eventfds on every reply: no case passes with them, and each that passed without them
    fails naming the message, the count and the sentence it breaks."""
    clean = _conformance(tmp_path / "clean")
    stray = _conformance(tmp_path / "stray", "--stray-fds", "250")
    assert len(stray) >= 15 and set(stray) == set(clean)
    assert [name for name, c in stray.items() if c["verdict"] == "PASS"] == []
    passed = [name for name, c in clean.items() if c["verdict"] == "PASS"]
    assert len(passed) >= 8, clean
    for name in passed:
        message = stray[name]["message"]
        assert stray[name]["verdict"] == "FAIL", stray[name]
        assert message.startswith("the server sent "), message
        assert "the VERSION reply msg_id 0 carried 250 fds (it may carry none)" in message
        assert f"{NO_FDS} (VERSION)" in message
    # Cases that failed by themselves keep their own finding.
    for name, c in clean.items():
        if c["verdict"] == "FAIL":
            assert stray[name]["message"] == c["message"], name
