"""The client suite (vfio-user-conformance client) proved on a client of our own:
tests/defective_client.py is clean at both revisions, each of its defects is caught by
the client case named for it, and every client case catches some defect."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import kill_matrix as km
import pytest
from defective_client import DEFECTS
from scriptservers import cli

import conformance_client
from pytest_vfiouser.clientcheck import ClientRunError, client_argv, read_transcript, run_client

HERE = Path(__file__).resolve().parent
FAILING = {"FAIL", "NON-STRICT", "INFORMATIONAL"}  # INFORMATIONAL: a MAY case not met
# The server gives up a DMA request after 0.5 s (dma-request-ignored is quick to see).
DEVICE = "[server]\ndma_reply_timeout = 0.5\n"


def _client(spec: str, *defects: str) -> str:
    words = [sys.executable, str(HERE / "defective_client.py"), "{socket}", "--spec", spec]
    for d in defects:
        words += ["--defect", d]
    return shlex.join(words)


@pytest.fixture(scope="module")
def forks(tmp_path_factory):
    """The kill matrix's fork server: each run below a child of a process that has the
    suite imported (about half a second of CPU spared a run)."""
    where = tmp_path_factory.mktemp("forks")
    server = km.ForkServer(km.run_env(), where)
    yield server
    server.close()


def _run(
    forks, tmp_path: Path, spec: str, *defects: str, section: str = "", only: str = ""
) -> dict:
    """vfio-user-conformance client on the defective client (the cases of ``section``,
    and of those the test function ``only``, if given): case id -> its verdicts."""
    device = tmp_path / "device.toml"
    device.write_text(DEVICE)
    report, output = tmp_path / "client.json", tmp_path / "output.txt"
    args = ["client", "--vfu-client", _client(spec, *defects), "--vfu-spec", spec]
    args += ["--vfu-device", str(device), f"--vfu-json={report}", "-p", "no:randomly"]
    if section:
        args += ["--vfu-section", section]
    if only:  # the scenarios of the other cases are not run
        args += ["-k", only]
    run = forks.start(args, tmp_path, output, km.run_env())
    status = forks.wait(run, 120.0)
    text = output.read_text(errors="replace")
    assert status is not None and report.exists(), text[-3000:]
    assert "peer: the reference server" in text, text[-2000:]
    verdicts: dict[str, list[str]] = {}
    for c in json.loads(report.read_text())["cases"]:
        verdicts.setdefault(c["case_id"], []).append(c["verdict"])
    return verdicts


@pytest.mark.parametrize("spec", ["0.9.1", "0.9.2"])
def test_the_clean_client_passes(forks, tmp_path, spec):
    verdicts = _run(forks, tmp_path, spec)
    failing = {k: v for k, v in verdicts.items() if set(v) - {"PASS"}}
    assert not failing, failing
    assert len(verdicts) >= (42 if spec == "0.9.2" else 30)


def _cases() -> dict[str, tuple[tuple[str, ...], str]]:
    """The client cases: id -> (the revisions it is marked for (() for both), its test
    function's name)."""
    out = {}
    for path in sorted(Path(conformance_client.__file__).parent.glob("test_*.py")):
        module = importlib.import_module(f"conformance_client.{path.stem}")
        for name in dir(module):
            marks = getattr(getattr(module, name), "pytestmark", [])
            ids = [m.args[0] for m in marks if m.name == "vfu_requirement"]
            if ids:
                revisions = [r for m in marks if m.name == "vfu_revision" for r in m.args]
                out[ids[0]] = (tuple(revisions), name)
    return out


@pytest.mark.parametrize("defect", sorted(DEFECTS))
def test_each_defect_is_caught_by_its_case(forks, tmp_path, defect):
    case = DEFECTS[defect]
    revisions, function = _cases()[case]
    spec = revisions[0] if revisions else "0.9.1"
    verdicts = _run(forks, tmp_path, spec, defect, section=case.rsplit("/", 1)[0], only=function)
    assert set(verdicts.get(case, [])) & FAILING, (defect, case, verdicts.get(case))


def test_every_client_case_catches_a_defect():
    """The client cases (their ids, from the modules) are the cases DEFECTS names, and
    the package's SECTIONS are theirs."""
    ids = set(_cases())
    assert ids == set(DEFECTS.values())
    assert len(ids) >= 45
    assert {i.rsplit("/", 1)[0] for i in ids} == set(conformance_client.SECTIONS)


def test_a_client_that_cannot_start_is_a_clear_error(tmp_path):
    with pytest.raises(ClientRunError, match="cannot start the client /nonexistent"):
        run_client("/nonexistent/client {socket}", tmp_path, spec="0.9.1", seconds=5)


def test_a_client_that_runs_on_is_stopped_at_its_time(tmp_path):
    run = run_client(
        f"{sys.executable} -c 'import time; time.sleep(60)' {{socket}}",
        tmp_path,
        spec="0.9.1",
        seconds=0.5,
    )
    assert run.status is None and run.seconds < 5 and "stopped" in run.describe()
    assert run.transcript.sessions == []


def test_the_client_command_gets_the_socket_path():
    assert client_argv("qemu -device vfio-user-pci,socket={socket} -x", "/tmp/s") == [
        "qemu",
        "-device",
        "vfio-user-pci,socket=/tmp/s",
        "-x",
    ]
    with pytest.raises(ValueError, match="empty"):
        client_argv("  ", "/tmp/s")


def test_a_record_line_that_is_not_one_is_named(tmp_path):
    from pytest_vfiouser.clientcheck import TranscriptError  # noqa: PLC0415

    record = tmp_path / "r.jsonl"
    record.write_text('{"conn": 1, "t": 0, "event": "connect"}\n{"conn": 1, "dir": "c2s"}\n')
    with pytest.raises(TranscriptError, match="line 2"):
        read_transcript(record)


def test_a_recorded_session_is_judged_as_a_run(tmp_path):
    """--vfu-transcript: the same verdicts from the record of a run (the defect shows)."""
    run = run_client(_client("0.9.1", "dma-map-argsz"), tmp_path / "run", spec="0.9.1", seconds=30)
    record = tmp_path / "session.jsonl"
    record.write_bytes((tmp_path / "run" / "record.jsonl").read_bytes())
    assert run.status == 0 and run.transcript.sessions
    proc = cli(tmp_path, "client", "--vfu-transcript", str(record), "--vfu-json=t.json")
    assert proc.returncode == 1, proc.stdout[-2000:]  # a FAIL
    verdicts = {
        c["case_id"]: c["verdict"] for c in json.loads((tmp_path / "t.json").read_text())["cases"]
    }
    assert verdicts["client/dma_map/structure"] == "FAIL"
    assert verdicts["client/version/version-first"] == "PASS"
    assert f"client: transcript {record}" in " ".join(proc.stdout.split())


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--vfu-client", "my-vmm --socket /tmp/x"],
            'must name the server\'s socket as "{socket}"',
        ),
        (["--vfu-client", "a {socket}", "--vfu-transcript", "r.jsonl"], "give one"),
        (["--vfu-transcript", "/nonexistent.jsonl"], "is not a file"),
        (["--vfu-client", "a {socket}", "--vfu-device", "/nonexistent.toml"], "is not a file"),
        (["--vfu-client", "a {socket}", "--vfu-client-time", "0"], "positive number of seconds"),
        (["--vfu-client", "a {socket}", "--vfu-section", "client/nope"], "unknown section"),
    ],
)
def test_client_mode_usage_errors(tmp_path, args, message):
    proc = cli(tmp_path, "client", *args)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert message in proc.stderr, proc.stderr


def test_a_client_that_dies_is_a_crash(forks, tmp_path):
    """A client killed by SIGABRT: every case its run was to show is CRASH, and says so."""
    report, output = tmp_path / "client.json", tmp_path / "output.txt"
    client = f"{_client('0.9.1')} --abort"
    args = ["client", "--vfu-client", client, f"--vfu-json={report}", "-p", "no:randomly"]
    run = forks.start(args, tmp_path, output, km.run_env())
    assert forks.wait(run, 120.0) == 1, output.read_text()[-3000:]
    cases = json.loads(report.read_text())["cases"]
    assert {c["verdict"] for c in cases} == {"CRASH"}
    assert "killed by SIGABRT" in cases[0]["message"]


def test_a_client_that_stops_talking_is_a_hang(forks, tmp_path):
    """A client that leaves the server's DMA request unanswered and says nothing more
    until its time is up: every case its run was to show is HANG, and says where."""
    report, output = tmp_path / "client.json", tmp_path / "output.txt"
    device = tmp_path / "device.toml"
    device.write_text(DEVICE)
    args = ["client", "--vfu-client", f"{_client('0.9.1')} --hang", "--vfu-client-time", "12"]
    args += ["--vfu-device", str(device), f"--vfu-json={report}", "-p", "no:randomly"]
    args += ["--vfu-section", "client/dma_map"]  # the default run's cases only: one run
    run = forks.start(args, tmp_path, output, km.run_env())
    assert forks.wait(run, 120.0) == 1, output.read_text()[-3000:]
    verdicts = {c["case_id"]: c for c in json.loads(report.read_text())["cases"]}
    assert {c["verdict"] for c in verdicts.values()} == {"HANG"}, output.read_text()[-3000:]
    first = verdicts["client/dma_map/structure"]
    assert "neither answered the server's DMA_READ command" in first["message"]


def test_client_runs_compare_by_the_clients_name(forks, tmp_path):
    """vfio-user-conformance compare on two client runs: named by the client's program,
    the defect's case among those that differ."""
    reports = []
    for name, defects in (("clean", ()), ("defect", ("dma-map-argsz",))):
        where = tmp_path / name
        where.mkdir()
        _run(forks, where, "0.9.1", *defects, section="client/dma_map")
        reports.append(str(where / "client.json"))
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_vfiouser.cli", "compare", *reports],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "defective_client.py" in proc.stdout, proc.stdout
    assert re.search(r"client/dma_map/structure\s+PASS\s+FAIL", proc.stdout), proc.stdout


def test_a_dead_clients_message_keeps_the_line_that_says_why():
    """QEMU's hw_error prints a register dump after its reason: the reason is kept."""
    from types import SimpleNamespace  # noqa: PLC0415

    from pytest_vfiouser.plugin._client_session import _last_words  # noqa: PLC0415

    dump = [f"XMM{n:02}=0000000000000000 0000000000000000" for n in range(20)]
    output = "\n".join(["trace 1", "qemu: hardware error: vfio: DMA mapping failed", *dump])
    words = _last_words(SimpleNamespace(output=output)).splitlines()
    assert words[0] == "qemu: hardware error: vfio: DMA mapping failed"
    assert words[1] == "..." and words[2:] == dump[-8:]
    assert _last_words(SimpleNamespace(output="a\nb")) == "a\nb"
