"""The fault overlay itself (reference_server_faults): --fault, --list-faults, the
catalogue, and a few faults checked to change exactly the behaviour they name (raw
client)."""

from __future__ import annotations

import errno
import re
import signal
import subprocess
import sys
import time

import pytest
from kill_matrix import CaseRun, Run, build, kills
from test_server_support import SERVER, RefServer

from conformance import ONLY_AT, SECTIONS
from pytest_vfiouser.client import Client
from pytest_vfiouser.protocol import (
    FLAG_ERROR,
    HEADER_SIZE,
    REVISIONS,
    TYPE_MASK,
    Command,
    DeviceInfo,
    MsgType,
    RegionInfo,
)
from pytest_vfiouser.target import listening_inodes, wait_listening
from pytest_vfiouser.verdict import Verdict
from reference_server_faults import CATALOGUE, enable

FAULTY = [sys.executable, "-m", "reference_server_faults"]

NO_SUCH_REGION = 0xFFFF


def run(*args, timeout=10, command=FAULTY):
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


@pytest.fixture
def server(tmp_path):
    started = []

    def start(*fault_names: str) -> RefServer:
        """The overlay with the faults named; without any, the reference server itself."""
        args = [a for name in fault_names for a in ("--fault", name)]
        command = FAULTY if fault_names else SERVER
        srv = RefServer(tmp_path, *args, name=f"server{len(started)}", command=command)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


# ---- the command line


def test_unknown_fault_is_a_usage_error_listing_the_catalogue():
    r = run("--socket-path=/tmp/never.sock", "--fault", "no-such-fault")
    assert r.returncode == 2, r
    assert "unknown fault no-such-fault" in r.stderr
    for name in CATALOGUE:
        assert name in r.stderr


def test_list_faults_prints_the_catalogue_one_line_each():
    r = run("--list-faults")
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert len(lines) == len(CATALOGUE)
    for line, (name, fault) in zip(lines, CATALOGUE.items(), strict=True):
        assert line.startswith(f"{name}: {fault.description} (detected by: ")


def test_socket_path_unsupported_refuses_the_option():
    r = run("--socket-path=/tmp/never.sock", "--fault", "socket-path-unsupported")
    assert r.returncode == 2 and "unrecognized arguments: --socket-path" in r.stderr, r


@pytest.mark.parametrize("option", ["--list-faults", "--fault=msg-id-8bit"])
def test_the_reference_server_has_no_fault_options(option):
    r = run("--socket-path=/tmp/never.sock", option, command=SERVER)
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr, r


# ---- the catalogue


def _sections() -> set[str]:
    """The suite's sections (tests/test_plugin_cli.py checks them against the cases)."""
    return set(SECTIONS)


def test_catalogue():
    sections = _sections()
    assert len(CATALOGUE) >= 30
    verdicts = {"FAIL", "CRASH", "HANG", "NON-STRICT", "INFORMATIONAL", "ERROR"}
    for name, fault in CATALOGUE.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", name), name
        assert fault.description and "\n" not in fault.description, name
        assert fault.detect, name
        for section, expected in fault.detect:
            assert section in sections, f"{name}: no conformance section {section!r}"
            assert set(expected) <= verdicts, f"{name}: {expected}"
        assert set(fault.scope) <= sections, name
        assert set(fault.also) <= sections, name
        assert "{socket}" in fault.option or "{fd}" in fault.option, name
    # Every section of the spec the suite covers has a fault that it must detect, a fault
    # whose run is at the section's revision.
    covered = {s for f in CATALOGUE.values() for s, _ in f.detect}
    assert sections - covered <= {"fuzz"}, sorted(sections - covered)
    for name, fault in CATALOGUE.items():
        assert fault.spec in REVISIONS, name
        for section in fault.runs:
            assert ONLY_AT.get(section, fault.spec) == fault.spec, (name, section)


def test_enable_refuses_unknown_names():
    with pytest.raises(ValueError, match="unknown fault nope"):
        enable(["nope"])


# ---- a few faults change exactly what they name


def _error_request(client: Client, msg_id: int) -> None:
    client.send(Command.DEVICE_GET_REGION_INFO, RegionInfo(32, index=NO_SUCH_REGION), msg_id=msg_id)


def test_msg_id_8bit(server):
    c = server("msg-id-8bit").connect()
    for sent, echoed in ((0x12, 0x12), (0x1234, 0x34), (0xFF00, 0x00)):
        c.send(Command.DEVICE_GET_INFO, DeviceInfo(DeviceInfo.SIZE), msg_id=sent)
        reply = c.recv_message(5.0)
        assert (reply.msg_id, reply.command) == (echoed, Command.DEVICE_GET_INFO)
        assert reply.ok and reply.body == DeviceInfo(16, reply.body.flags, 10, 5)
    c.close()


def test_error_reply_payload(server):
    c = server("error-reply-payload").connect()
    assert len(c.device_get_info().check().payload) == DeviceInfo.SIZE  # successes unchanged
    _error_request(c, 7)
    reply = c.recv_message(5.0)
    assert reply.flags & FLAG_ERROR and reply.flags & TYPE_MASK == MsgType.REPLY
    assert (reply.msg_id, reply.command, reply.errno) == (
        7,
        Command.DEVICE_GET_REGION_INFO,
        errno.EINVAL,
    )
    assert reply.msg_size == HEADER_SIZE + 4 and reply.payload == errno.EINVAL.to_bytes(4, "little")
    c.close()


def test_error_reply_zeroed_header(server):
    c = server("error-reply-zeroed-header").connect()
    _error_request(c, 9)
    reply = c.recv_message(5.0)
    assert (reply.msg_id, reply.command, reply.flags, reply.errno) == (9, 0, FLAG_ERROR, 0)
    assert c.device_get_info().check().body.num_regions == 10  # successes unchanged
    c.close()


def test_dma_table_keyed_by_address(server):
    size = 0x4000
    c = server("dma-table-keyed-by-address").connect()
    c.dma_map(0x10000, size).check()
    assert c.dma_map(0x12000, size).ok  # overlapping, another start: accepted
    assert c.dma_map(0x10000, 2 * size).ok  # the same start: replaces the first
    assert c.dma_unmap(0x10000, 0x1000).ok  # the address alone matches
    assert c.dma_unmap(0x12000, size).ok
    c.close()
    fine = server().connect()  # the fault-free server refuses all of it
    fine.dma_map(0x10000, size).check()
    assert fine.dma_map(0x12000, size).error == errno.EEXIST
    assert fine.dma_unmap(0x10000, 0x1000).error == errno.ENOENT
    fine.close()


def test_dispatch_table_wrong_crashes_on_a_command_past_the_table(server):
    srv = server("dispatch-table-wrong")
    c = srv.connect()
    assert c.device_get_info().ok  # known commands are served
    c.send(0xFFFF, b"")
    assert srv.proc.wait(5) == -signal.SIGSEGV
    c.close()


def test_faults_apply_only_when_named(server):
    """A server started with one fault behaves correctly elsewhere."""
    c = server("dma-map-reply-payload").connect()
    _error_request(c, 0x1234)
    reply = c.recv_message(5.0)
    assert (reply.msg_id, reply.msg_size, reply.errno) == (0x1234, HEADER_SIZE, errno.EINVAL)
    assert c.dma_map(0x40000, 0x1000).check().payload  # the fault: a payload on DMA_MAP
    c.close()


def test_daemonize_leaves_no_process_behind(tmp_path):
    """The daemonized copy exits once its stdin is closed (the suite closes it at stop)."""
    path = str(tmp_path / "d.sock")
    proc = subprocess.Popen(
        [*FAULTY, f"--socket-path={path}", "--fault", "daemonize"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_listening(path, 10.0)
        assert proc.wait(5) == 0  # the process started is gone ...
        assert listening_inodes(path)  # ... and its copy listens
        with Client.connect(path, timeout=5.0) as c:
            c.negotiate()
            assert c.device_get_info().ok
    finally:
        proc.stdin.close()
    deadline = time.monotonic() + 5
    while listening_inodes(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not listening_inodes(path), "the daemonized copy still runs"


def test_kill_matrix_keeps_the_worst_verdict_in_the_order_it_always_had():
    """The matrix notes each case's worst killing verdict by Verdict.rank; the harness's
    own table ranked them in this order, above PASS (the default)."""
    order = ["INFORMATIONAL", "NON-STRICT", "ERROR", "FAIL", "HANG", "CRASH"]
    ranks = [Verdict(v).rank for v in order]
    assert ranks == sorted(set(ranks)), ranks
    assert Verdict("PASS").rank < ranks[0]


def test_kill_rules():
    assert kills("PASS", "FAIL") and kills("PASS", "NON-STRICT") and kills("PASS", "INFORMATIONAL")
    assert kills("UNIMPLEMENTED", "FAIL") and kills("INFORMATIONAL", "CRASH")
    assert not kills("INFORMATIONAL", "INFORMATIONAL") and not kills(
        "UNIMPLEMENTED", "INFORMATIONAL"
    )
    assert not kills("PASS", "UNIMPLEMENTED") and not kills("PASS", "PASS")
    assert not kills(None, "FAIL") and not kills("PASS", None)


def test_kills_of_a_fault_the_suite_catches_in_every_case_do_not_count():
    """A case killed only by a fault the judge's check of every case catches (by_judge:
    unsolicited fds) kills nothing of its own: it is unkilled (or stays listed)."""
    catalogue = {name: CATALOGUE[name] for name in ("unsolicited-fds", "msg-id-8bit")}
    assert catalogue["unsolicited-fds"].by_judge and not catalogue["msg-id-8bit"].by_judge

    def run(fault, **verdicts):
        cases = {
            f"x::{case}": CaseRun(f"x::{case}", f"s/{case}", "s", "MUST", verdict)
            for case, verdict in verdicts.items()
        }
        return Run(fault, cases)

    clean = run(None, a="PASS", b="PASS", c="UNIMPLEMENTED")
    runs = {
        "unsolicited-fds": run("unsolicited-fds", a="FAIL", b="FAIL", c="FAIL"),
        "msg-id-8bit": run("msg-id-8bit", a="FAIL", b="PASS", c="UNIMPLEMENTED"),
    }
    matrix = build({"0.9.1": clean}, runs, {"s/c": "cannot judge here"}, catalogue)
    assert matrix["unkilled"] == ["s/b"]
    assert matrix["unkillable"] == {"s/c": "cannot judge here"}
    assert matrix["stale_unkillable"] == []
    assert matrix["figures"]["cases_killing"] == 1
    assert matrix["faults"]["unsolicited-fds"]["killed"] == 3  # shown, all the same
