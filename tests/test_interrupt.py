"""A run stopped before its end: SIGINT, SIGTERM (with and without pytest-xdist), SIGKILL,
during cases and during a server start.

Each run is a pytest subprocess in a session of its own (a signal to its process group
reaches it and its xdist workers, not this test). After it: the reports hold the cases
judged before the signal and say the run was interrupted (SIGKILL: the JSON written while
the run went on, marked not finished), and no process of the server (found by a tag in
its command line, which every fork keeps), no socket and no directory of it is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from scriptservers import INNER_ARGS, script_server

from pytest_vfiouser.target import (
    Interrupted,
    deferred_signals,
    handle_signals,
    restore_signals,
    signal_received,
    signals_ending,
)

pytest_plugins = ["pytester"]

CASES = """
import pytest
from pytest_vfiouser import case, MUST

@pytest.mark.parametrize("n", range(300))
@case("dev/info", MUST)
def test_info(vfu_client, n):
    assert vfu_client.device_get_info().ok
"""

# The fourth case makes every later server start hang (--slow-start-if slow).
START_CASES = """
import pytest
from pytest_vfiouser import case, MUST

@pytest.mark.parametrize("n", range(3))
@case("dev/info", MUST)
def test_info(vfu_client, n):
    assert vfu_client.device_get_info().ok

def test_slow_from_now_on():
    open("slow", "w").close()

@case("dev/after", MUST)
def test_after(vfu_client):
    assert vfu_client.device_get_info().ok
"""


class Run:
    """One pytest subprocess against a tagged script server, restarted for every case."""

    def __init__(self, path: Path, cases: str, *args: str):
        self.path = path
        (path / "test_cases.py").write_text(cases)
        self.tag = f"vfu-test-{uuid.uuid4().hex}"
        self.basetemp = path / "bt"
        server = script_server(path, "--slow-start-if", str(path / "slow"), "--tag", self.tag)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                *INNER_ARGS,
                "-p",
                "no:randomly",
                "test_cases.py",
                "--vfu-server",
                server,
                "--vfu-restart=per-test",
                "--vfu-json=vfu.json",
                "--junitxml=junit.xml",
                "--html=report.html",
                f"--basetemp={self.basetemp}",
                *args,
            ],
            cwd=path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output = ""

    def judged(self) -> int:
        """Cases in the JSON report written so far (0 before the first write)."""
        try:
            return len(json.loads((self.path / "vfu.json").read_text())["cases"])
        except FileNotFoundError:
            return 0

    def wait_for(self, what, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not what():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the run ended or took too long:\n{self.finish()}")
            time.sleep(0.05)

    def signal(self, signum: int, group: bool = False) -> None:
        if group:  # as Ctrl-C, timeout(1) or a CI runner: the workers get it too
            os.killpg(self.proc.pid, signum)
        else:
            self.proc.send_signal(signum)

    def finish(self) -> str:
        self.output = self.proc.communicate(timeout=90)[0]
        return self.output

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def report(self) -> dict:
        return json.loads((self.path / "vfu.json").read_text())

    # -- what is left behind
    def processes(self) -> list[int]:
        found = []
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if self.tag.encode() in f.read():
                        found.append(int(name))
            except (OSError, ValueError):
                pass
        return found

    def files(self) -> list[Path]:
        """The servers' directories (vfu-<pid>-<n>-*) and any socket file of the run."""
        return [
            p
            for p in self.basetemp.rglob("*")
            if (p.is_dir() and p.name.startswith("vfu-") and p.name != "vfu-targets")
            or p.is_socket()
        ]

    def assert_nothing_left(self) -> None:
        """Nothing within a few seconds (after SIGKILL the watchdog does it)."""
        deadline = time.monotonic() + 10
        while (self.processes() or self.files()) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = self.processes()
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"server processes left: {left}"
        assert not self.files(), f"left: {self.files()}"


@pytest.fixture
def start_run(pytester: pytest.Pytester):
    runs: list[Run] = []

    def start(cases: str, *args: str) -> Run:
        run = Run(pytester.path, cases, *args)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()
        for pid in run.processes():
            os.kill(pid, signal.SIGKILL)


def assert_interrupted(run: Run, name: str, judged: int) -> dict:
    """The final reports of a run interrupted by signal ``name`` after ``judged`` cases."""
    assert run.proc.returncode == pytest.ExitCode.INTERRUPTED, run.output
    data = run.report()
    info = data["run"]
    assert info["interrupted"] == {"reason": f"interrupted by {name}", "signal": name}
    assert info["finished"] is True and info["failed"] is True
    cases = data["cases"]
    assert len(cases) >= judged and data["summary"]["cases"] == len(cases)
    assert all(c["verdict"] == "PASS" for c in cases)
    assert f"result: INTERRUPTED by {name} after {len(cases)} cases" in run.output, run.output
    assert "passed (no FAIL" not in run.output
    html = (run.path / "report.html").read_text()
    assert f"INTERRUPTED by {name} after {len(cases)} cases" in html
    props = {
        p.get("name"): p.get("value")
        for p in ET.parse(run.path / "junit.xml").getroot().iter("property")
    }
    assert props["vfu_interrupted"] == f"interrupted by {name}"
    return data


@pytest.mark.parametrize(
    "signum, group, workers",
    [
        (signal.SIGINT, True, 0),  # Ctrl-C
        (signal.SIGTERM, False, 0),  # kill PID
        (signal.SIGTERM, True, 2),  # timeout(1), a CI cancellation: controller and workers
        (signal.SIGTERM, False, 2),  # the controller alone
        (signal.SIGINT, True, 2),
    ],
    ids=["SIGINT", "SIGTERM", "SIGTERM-group-n2", "SIGTERM-controller-n2", "SIGINT-group-n2"],
)
def test_signal_during_cases(start_run, signum, group, workers):
    run = start_run(CASES, *(["-n", str(workers)] if workers else []))
    run.wait_for(lambda: run.judged() >= 3)
    judged = run.judged()
    run.signal(signum, group)
    run.finish()
    assert_interrupted(run, signal.Signals(signum).name, judged)
    run.assert_nothing_left()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_a_server_start(start_run, signum):
    run = start_run(START_CASES)
    started = run.path / "slow.started"
    run.wait_for(started.exists)  # the server of test_after is being started: it sleeps
    run.signal(signum)
    run.finish()
    data = assert_interrupted(run, signal.Signals(signum).name, 3)
    assert [c["case_id"] for c in data["cases"]] == ["dev/info"] * 3
    run.assert_nothing_left()


@pytest.mark.parametrize("during", ["cases", "start"])
def test_sigkill_leaves_the_cases_judged_and_nothing_else(start_run, during):
    if during == "cases":
        run = start_run(CASES)
        run.wait_for(lambda: run.judged() >= 3)
    else:
        run = start_run(START_CASES)
        run.wait_for(lambda: (run.path / "slow.started").exists() and run.judged() >= 3)
    judged = run.judged()
    run.signal(signal.SIGKILL)
    run.finish()
    assert run.proc.returncode == -signal.SIGKILL
    data = run.report()  # as last written while the run went on: whole, valid JSON
    info = data["run"]
    assert info["finished"] is False and info["interrupted"] is None and info["failed"] is True
    assert len(data["cases"]) >= judged and data["summary"]["cases"] == len(data["cases"])
    run.assert_nothing_left()


def test_sigkill_to_the_whole_group_under_xdist(start_run):
    run = start_run(CASES, "-n", "2")
    run.wait_for(lambda: run.judged() >= 3)
    judged = run.judged()
    run.signal(signal.SIGKILL, group=True)
    run.finish()
    data = run.report()
    assert data["run"]["finished"] is False and len(data["cases"]) >= judged
    run.assert_nothing_left()


@pytest.fixture
def default_signals():
    """SIGINT, SIGTERM, SIGHUP at their defaults (another test may have left a handler)."""
    previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def test_signals_become_an_exception_held_back_during_a_step(default_signals):
    assert handle_signals()
    assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
    try:
        with pytest.raises(Interrupted) as info:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
        assert info.value.signal == "SIGTERM" and signal_received() == "SIGTERM"
        steps = []
        with pytest.raises(Interrupted, match="interrupted by SIGINT"):
            with deferred_signals():  # e.g. between fork() and recording the child
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                steps.append("done")
        assert steps == ["done"]
        signals_ending()  # the session ends: noted, not raised
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(0.05)
    finally:
        restore_signals()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored(default_signals):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        assert handle_signals()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN)
    finally:
        restore_signals()
    assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
