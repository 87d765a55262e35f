"""The fuzzing engine against the reference server, healthy and with injected faults.

A fault is one of the ``--fault`` defects of the fault overlay
(reference_server_faults): a crash, a hang, an error reply with a payload, overlapping DMA
maps accepted. The engine must report each (the right exception, so that the
plugin's verdict is right: CRASH, HANG, FAIL), write a reproducer that replays
against a server, and stay quiet on the healthy server. A fault the server
does not offer (any more) skips its test.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from hypothesis import strategies as st
from scriptservers import script_server

from pytest_vfiouser import fuzz as fuzzing
from pytest_vfiouser import strategies as s
from pytest_vfiouser.client import Client, Timeout
from pytest_vfiouser.device import Profile, discover
from pytest_vfiouser.fuzz import Fuzzer, FuzzFailure, Hang, TargetLost
from pytest_vfiouser.fuzz._engine import _chain
from pytest_vfiouser.protocol import Command, DeviceInfo, DmaMap, RegionRead, encode
from pytest_vfiouser.target import TargetManager

SETTINGS = dict(max_examples=150)


def faults() -> set[str]:
    """The fault names the fault overlay offers."""
    out = subprocess.run(
        [sys.executable, "-m", "reference_server_faults", "--list-faults"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {line.split(":", 1)[0] for line in out.stdout.splitlines() if ":" in line}


def server_command(fault: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "reference_server", "--socket-path={socket}"]
    if fault is not None:
        if fault not in faults():
            pytest.skip(f"the fault overlay offers no fault {fault!r}")
        command[2] = "reference_server_faults"
        command += ["--fault", fault]
    return command


@pytest.fixture
def server(request, tmp_path):
    """The reference server (with the fault of the parametrization) as the plugin's
    vfu_target gives it: a TargetHandle."""
    manager = TargetManager.standalone(
        server_command(getattr(request, "param", None)), base_dir=str(tmp_path)
    )
    yield manager.acquire("")
    manager.stop_all()


def _device(target):
    with Client.connect(target.socket_path) as c:
        return discover(c, spec="0.9.1", profile=Profile.empty())


def _fuzzer(target, tmp_path, **kwargs) -> Fuzzer:
    kwargs.setdefault("timeout", 1.0)
    kwargs.setdefault("case_id", "fuzz/test")
    return Fuzzer(target, device_info=_device(target).info, repro_dir=tmp_path / "repro", **kwargs)


def _tx(*raw: bytes, cuts=()) -> s.Transmission:
    return s.Transmission(tuple(s.RawBytes(r) for r in raw), tuple(cuts))


def _info(msg_id: int = 1) -> bytes:
    return encode(msg_id, Command.DEVICE_GET_INFO, DeviceInfo(16).pack())


def test_endings_against_a_healthy_server(server, tmp_path):
    f = _fuzzer(server, tmp_path)
    f.begin()
    assert f.transmit(_tx(_info(1), _info(2))) == "framed"
    assert [r.msg_id for _, r in f.replies] == [1, 2]
    f.begin()
    assert f.transmit(_tx(_info(3), cuts=(1, 15, 17))) == "framed"
    f.begin()
    short = _info(4)[:-3]  # msg_size says 3 more bytes: completed with zeros, then answered
    assert f.transmit(_tx(short)) == "framed" and f.replies[0][1].msg_id == 4
    f.begin()
    assert f.transmit(_tx(encode(5, 4, b"", 0)[:4] + b"\x00" * 12)) == "unframeable"
    f.begin()
    huge = bytearray(_info(6))
    huge[4:8] = (0xFFFFFFF0).to_bytes(4, "little")
    assert f.transmit(_tx(_info(7), bytes(huge))) == "oversized"
    f.begin()
    same_id = encode(8, Command.DMA_MAP, bytes(32), 0x10) + encode(8, Command.DMA_MAP, bytes(32))
    assert f.transmit(_tx(same_id)) == "framed", "answers match messages sharing a msg_id"
    assert f.messages >= 10
    assert f.finish() == 0, "no fd growth"


def test_an_error_reply_to_bytes_that_cannot_be_framed_is_accepted(tmp_path):
    """libvfio-user answers a header of msg_size 0 (16 zero bytes: msg_id 0, command 0)
    with an error reply echoing them; the spec says nothing of such bytes, and the reply
    is well formed: not a failure (it was, as "answers none of the messages sent")."""
    manager = TargetManager.standalone(script_server(tmp_path), base_dir=str(tmp_path))
    try:
        f = _fuzzer(manager.acquire(""), tmp_path)
        f.begin()
        assert f.transmit(_tx(_info(1), bytes(16))) == "unframeable"
        assert [r.msg_id for _, r in f.replies] == [1]
        f.begin()
        assert f.transmit(_tx(b"\x00", cuts=())) == "unframeable", "one byte, padded to a header"
    finally:
        manager.stop_all()


def test_a_server_out_of_step_that_stops_reading_fails_rather_than_hangs(tmp_path):
    """A server that reads a refused message's payload as headers answers each 16 bytes
    of it; while we still write, its answers fill the socket and it stops reading. The
    answers it sent are judged (out of step: a FAIL), not the stall they caused (HANG)."""
    manager = TargetManager.standalone(
        script_server(tmp_path, "--reject-unread", str(int(Command.DMA_UNMAP))),
        base_dir=str(tmp_path),
    )
    try:
        f = _fuzzer(manager.acquire(""), tmp_path)
        f.begin()
        with pytest.raises(FuzzFailure, match="answers none of the messages sent") as failed:
            f.transmit(_tx(encode(1, Command.DMA_UNMAP, bytes(4 << 20))))
        # Out of step after a refusal: the spec does not say what a server does with the
        # rest of a message it refused (it defines where the message ends): a SHOULD.
        assert failed.value.level == "should"
    finally:
        manager.stop_all()


def test_run_examples_passes_on_the_reference_server(server, tmp_path):
    f = _fuzzer(server, tmp_path)
    device = _device(server)
    fuzzing.run_examples(
        f,
        s.transmissions(s.mutated_requests(device), 3),
        f.transmit,
        fuzzing.fuzz_settings("ci", **SETTINGS),
    )
    assert f.examples >= 150 and f.failure is None and f.fatal is None
    assert f.finish() == 0


@pytest.mark.parametrize("server", ["error-reply-payload"], indirect=True)
def test_a_malformed_error_reply_is_shrunk_and_reproduced(server, tmp_path):
    f = _fuzzer(server, tmp_path)
    device = _device(server)
    with pytest.raises(FuzzFailure) as info:
        fuzzing.run_examples(
            f,
            s.transmissions(s.requests(device), 3, split=False),
            f.transmit,
            fuzzing.fuzz_settings("ci", **SETTINGS),
        )
    text = str(info.value)
    assert "the error reply to" in text and "must only include the reply header" in text
    assert "shrunk by Hypothesis" in text and "Its wire log" in text
    assert not f.shrink_cut and "shrunk by Hypothesis for its" not in text
    script = f.reproducer_path()
    assert script.exists() and str(script) in text
    # The reproducer replays the example against the server, shows the bad reply and
    # says the failure reproduces (exit 1).
    out = subprocess.run(
        [sys.executable, "-I", str(script), server.socket_path, "--timeout", "3"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert " reply id=" in out.stdout and "ERROR errno=" in out.stdout and "size=20" in out.stdout
    assert "== reproduced" in out.stdout


@pytest.mark.parametrize("server", ["error-reply-payload"], indirect=True)
def test_shrinking_stops_after_its_seconds(server, tmp_path):
    """Each attempt costs 50 ms (as a server restarted per connection would): after the
    0.3 s of shrink_seconds the attempts are rejected unrun, and the failing example
    found so far is replayed, reported and written as a reproducer."""
    f = _fuzzer(server, tmp_path, shrink_seconds=0.3)
    device = _device(server)

    def slow_transmit(tx):
        time.sleep(0.05)
        return f.transmit(tx)

    with pytest.raises(FuzzFailure) as info:
        fuzzing.run_examples(
            f,
            s.transmissions(s.requests(device), 3, split=False),
            slow_transmit,
            fuzzing.fuzz_settings("ci", **SETTINGS),
        )
    text = str(info.value)
    assert f.shrink_cut and "(shrunk by Hypothesis for its 0.3 s)" in text, text[:2000]
    assert "must only include the reply header" in text
    assert f.reproducer_path().exists()


@pytest.mark.parametrize("server", ["error-reply-payload"], indirect=True)
def test_an_example_database_replays_the_failure_found_before(server, tmp_path):
    """With a database (--vfu-fuzz-db), a campaign replays the failing example it kept
    first: the second run of a case fails at once, where the first had to find it;
    another case's examples are kept under a key of their own."""
    db = tmp_path / "db"
    device = _device(server)

    def campaign(case_id: str) -> Fuzzer:
        f = _fuzzer(server, tmp_path, case_id=case_id)
        with pytest.raises(FuzzFailure, match="must only include the reply header"):
            fuzzing.run_examples(
                f,
                s.transmissions(s.requests(device), 3, split=False),
                f.transmit,
                fuzzing.fuzz_settings("campaign", database=str(db), max_examples=300),
            )
        return f

    first = campaign("fuzz/a")
    keys = {p.name for p in db.iterdir()}
    second = campaign("fuzz/a")
    # The kept example first: the second run's first example fails (then Hypothesis checks
    # that it cannot shrink it further), where the first run searched for one.
    failing = first.first_failing, second.first_failing
    assert failing[0] >= 1 and failing[1] == 1, failing
    assert {p.name for p in db.iterdir()} == keys  # the same case, the same keys
    campaign("fuzz/b")
    assert {p.name for p in db.iterdir()} > keys


def test_distinct_failures_of_one_run_are_each_reported(tmp_path):
    """Two bugs (a DMA_MAP reply with a payload; error replies with one), each met by an
    example of the run: the final error reports both, each with its reproducer."""
    command = server_command("error-reply-payload") + ["--fault", "dma-map-reply-payload"]
    manager = TargetManager.standalone(command, base_dir=str(tmp_path))
    try:
        f = _fuzzer(manager.acquire(""), tmp_path)
        dma_map = encode(1, Command.DMA_MAP, DmaMap(32, 3, 0, 0x1_0000_0000, 0x1000).pack())
        no_region = encode(2, Command.REGION_READ, RegionRead(0, 0xFFFF, 4).pack())
        raised = []
        for raw in (dma_map, no_region):
            with pytest.raises(FuzzFailure) as info:
                f.example(f.transmit, _tx(raw))
            raised.append(info.value)
        text = str(f.final_error(raised[0]))  # Hypothesis ends on the example it shrank
    finally:
        manager.stop_all()
    assert "does not decode" in text.splitlines()[0], text[:2000]
    assert "Another failure this run found (2 of 2; not shrunk)" in text, text[:2000]
    assert "must only include the reply header" in text, text[:2000]
    assert f.reproducer_path().exists() and f.reproducer_path(2).exists()


@pytest.mark.parametrize("server", ["dispatch-table-wrong"], indirect=True)
def test_a_crash_stops_the_run_and_is_reported_as_found(server, tmp_path):
    f = _fuzzer(server, tmp_path)
    device = _device(server)
    with pytest.raises(TargetLost) as info:
        fuzzing.run_examples(
            f,
            s.transmissions(s.mutated_requests(device, ops=["command"]), 1),
            f.transmit,
            fuzzing.fuzz_settings("ci", **SETTINGS),
        )
    text = str(info.value)
    assert "the server crashed: server killed by SIG" in text
    assert "as found" in text and "[command=" in text
    assert f.reproducer_path().exists()
    assert server.crash() is not None and not server.alive, "not restarted: the verdict is CRASH"


@pytest.mark.parametrize("server", ["short-region-access-hang"], indirect=True)
def test_a_hang_is_reported_with_the_clients_timeout(server, tmp_path):
    f = _fuzzer(server, tmp_path, timeout=0.5)
    short_read = encode(1, Command.REGION_READ, RegionRead(0x10, 0, 4).pack()[:8])
    with pytest.raises(Hang) as info:
        fuzzing.run_examples(
            f, st.just(_tx(short_read)), f.transmit, fuzzing.fuzz_settings("ci", max_examples=5)
        )
    assert isinstance(info.value.__cause__, Hang)
    assert any(isinstance(e, Timeout) for e in _chain(info.value)), (
        "a Timeout in the chain: the plugin's verdict is HANG"
    )
    assert "REGION_READ" in str(info.value)


def test_request(server, tmp_path):
    """Fuzzer.request, the state machines' way to the server."""
    f = _fuzzer(server, tmp_path)
    f.begin()
    payload = DmaMap(32, 3, 0, 0x1000000, 0x1000).pack()
    assert f.request(Command.DMA_MAP, payload).ok
    assert f.request(Command.DMA_MAP, payload).error == 17  # EEXIST
    reply = f.request(Command.REGION_READ, RegionRead(0, 99, 4).pack())
    assert not reply.ok and not reply.payload
    assert f.conversations() and f.messages == 3


def test_stats_lines():
    stats = fuzzing.FuzzStats()
    assert stats.lines("ci") == []
    stats.add(100, 300, 0.5)
    stats.merge(
        {
            "examples": 100,
            "messages": 300,
            "seconds": 0.5,
            "cases": 1,
            "reproducers": ["reports/fuzz-repro/x.py"],
        }
    )
    lines = stats.lines("ci", workers=2)
    assert lines[0].startswith("fuzzing (ci): 2 cases, 200 examples, 600 messages in 1.0 s")
    assert "summed over 2 workers" in lines[0] and "(200 examples/s, 600 messages/s)" in lines[0]
    assert lines[-1] == "fuzzing: reproducer reports/fuzz-repro/x.py"


def test_the_padding_that_completes_a_message_goes_with_it(tmp_path):
    """An example that stops short of its msg_size is completed with zero bytes; they go in
    the message's own write, so a server that reads each message part with one recv
    (libvfio-user) meets no split the example did not make (it once met one: a finding
    of split-writes charged to other cases). A split example is split where it says."""
    manager = TargetManager.standalone(
        script_server(tmp_path, "--recv-once", "0.02"), base_dir=str(tmp_path)
    )
    try:
        f = _fuzzer(manager.acquire(""), tmp_path)
        f.begin()
        truncated = _info(1)[:-4]  # msg_size says 32: 4 bytes of padding complete it
        assert f.transmit(_tx(truncated)) == "framed"
        assert [(r.msg_id, r.ok) for _, r in f.replies] == [(1, True)]
        assert f.transmit(_tx(_info(2), cuts=(8,))) == "closed", "a split example is split"
    finally:
        manager.stop_all()
