"""Fault injection: every conformance case can fail, every kind of defect is detected.

The conformance suite runs (``vfio-user-conformance`` in a subprocess) against
the reference server started with each fault of reference_server_faults,
and once without any:

* ``test_fault_free``: without faults nothing fails.
* ``test_fault_detected[NAME]``: a case kills the fault with a verdict the
  catalogue expects, in the section it names.
* ``test_kill_matrix``: every case kills some fault or is listed, with its
  reason, in tests/unkillable.toml; writes reports/kill-matrix.json and
  reports/kill-matrix.md.

A run under a fault covers only the sections of its ``runs`` (those it must show
in, and its ``also``) at its revision; the fault-free run of each revision covers what
that revision's faults need (0.9.1: the whole suite). The runs (about 120, a few
seconds each alone) go on in the background, VFU_FAULT_RUNS (default: twice the
CPUs, at most 8) at a time in all: each test waits for the run it needs. Under
pytest-xdist the workers share one directory of runs, claim each run once and share
the VFU_FAULT_RUNS slots (a worker whose other tests are done keeps every slot busy).
"""

from __future__ import annotations

import os
from pathlib import Path

import kill_matrix as km
import pytest

from reference_server_faults import CATALOGUE

pytest_plugins = ["pytester"]
pytestmark = pytest.mark.timeout(3600)  # a test may wait for runs queued before its own

# Runs at once, in all: they mostly wait on their servers (4 on 2 CPUs: ~5.5 min in all).
CONCURRENT = int(os.environ.get("VFU_FAULT_RUNS", min(8, 2 * (os.cpu_count() or 1))))


def _needed(session: pytest.Session) -> list[str | None]:
    """The runs the selected tests of this module need (the fault-free ones first)."""
    names: list[str] = []
    for item in session.items:
        if item.module is None or item.module.__name__ != __name__:
            continue
        if item.originalname == "test_kill_matrix":
            return [*km.clean_runs_for(CATALOGUE), *CATALOGUE]
        if item.originalname == "test_fault_detected":
            names.append(item.callspec.params["name"])
    return [*km.clean_runs_for(CATALOGUE), *names]


@pytest.fixture(scope="session")
def fault_runs(request, tmp_path_factory):
    shared = km.shared_runs(tmp_path_factory.getbasetemp())
    unkillable = km.load_unkillable()
    runner = km.Runner(
        shared, _needed(request.session), CONCURRENT, km.excluded_sections(unkillable)
    )
    runner.start()
    yield runner
    runner.close()


def _load(runner: km.Runner, name: str | None) -> km.Run:
    done = runner.result(name)
    path = runner.json_path(name)
    if not path.exists():
        pytest.fail(
            f"the suite wrote no JSON report (exit status {done['status']}):\n{done['output_tail']}"
        )
    run = km.Run.load(path, name, done["seconds"])
    if not run.cases or "error during collection" in done["output_tail"]:
        pytest.fail(
            f"the suite did not run its cases (exit status {done['status']}):\n"
            f"{done['output_tail']}"
        )
    return run


def _line(c: km.CaseRun) -> str:
    first = c.message.strip().splitlines()[0][:200] if c.message.strip() else ""
    return f"{c.nodeid}: {c.verdict}: {first}"


@pytest.mark.parametrize("spec", list(km.CLEAN_RUNS))
def test_fault_free(fault_runs, spec):
    """Without faults the reference server fails nothing (the whole suite at the default
    revision, the sections only the other has at that one)."""
    run = _load(fault_runs, km.CLEAN_RUNS[spec])
    least = 500 if km.CLEAN_RUNS[spec] is None else 40
    assert len(run.cases) > least, f"only {len(run.cases)} cases ran"
    bad = [_line(c) for c in run.cases.values() if c.verdict in km.FAILING]
    assert not bad, "the fault-free reference server fails:\n" + "\n".join(bad)


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_fault_detected(fault_runs, name):
    """The fault makes a case of the expected section fail with an expected verdict."""
    fault = CATALOGUE[name]
    clean = _load(fault_runs, km.CLEAN_RUNS[fault.spec])
    run = _load(fault_runs, name)
    killed = km.killing(clean, run)
    if km.evidence(fault, killed):
        return
    expected = ", ".join(f"{s} {'/'.join(v)}" for s, v in fault.detect)
    shown = "\n".join(_line(c) for c in killed[:20]) or "(no case fails that passed without it)"
    pytest.fail(
        f"fault {name} ({fault.description}) is not detected as expected ({expected}); "
        f"the cases it kills:\n{shown}"
    )


def test_kill_matrix(fault_runs, request):
    """Every case kills a fault (or is listed with its reason); the matrix is written."""
    clean, runs = km.collect(fault_runs, list(CATALOGUE))
    matrix = km.build(clean, runs, km.load_unkillable())
    jpath, mpath = km.write(matrix, request.config.rootpath / "reports")
    print(f"\nkill matrix: {jpath}, {mpath}\n{km.figures_line(matrix)}")
    assert not matrix["unkilled"], (
        "these conformance cases kill no fault and are not listed in "
        "tests/unkillable.toml (add a fault that they catch, or list them with the "
        "reason):\n" + "\n".join(matrix["unkilled"])
    )
    assert not matrix["stale_unkillable"], (
        "listed in tests/unkillable.toml, yet they kill a fault (remove them):\n"
        + "\n".join(matrix["stale_unkillable"])
    )


def test_runners_on_one_directory_share_their_slots(tmp_path):
    """Two processes' runners (as two xdist workers have) hold at most ``workers`` slots
    between them, and a slot one frees is the other's."""
    first, second = km.Runner(tmp_path, [], 2), km.Runner(tmp_path, [], 2)
    held = [first._slot(), first._slot()]
    assert None not in held and second._slot() is None
    os.close(held.pop())
    again = second._slot()
    assert again is not None and first._slot() is None
    for fd in (*held, again):
        os.close(fd)


def test_the_progress_line_says_what_is_done_and_under_way(tmp_path):
    assert km.progress(tmp_path) is None  # nothing claimed yet
    for name in ("fault-free", "a", "b", "c", "d", "e"):
        (tmp_path / f"{name}.claim").write_text("1")
    (tmp_path / "fault-free.done").write_text("{}")
    assert km.progress(tmp_path) == (
        "kill matrix: 1 fault runs done, 5 under way (a, b, c and 2 more)"
    )


def test_a_session_prints_the_progress_of_the_fault_runs(pytester, monkeypatch):
    """The project's conftest prints the line while the runs go on, from the process that
    owns the terminal."""
    monkeypatch.setenv("VFU_PROGRESS_SECONDS", "0.1")
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)  # this may run in a worker
    pytester.syspathinsert(Path(__file__).parent)  # kill_matrix
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(
        """
        import time

        def test_runs(tmp_path_factory):
            out = tmp_path_factory.getbasetemp() / "fault-runs"
            out.mkdir()
            (out / "msg-id-8bit.claim").write_text("1")
            time.sleep(0.6)
        """
    )
    result = pytester.runpytest("-p", "no:vfiouser")
    result.stdout.fnmatch_lines(["kill matrix: 0 fault runs done, 1 under way (msg-id-8bit)"])
    assert result.ret == 0
