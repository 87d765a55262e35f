"""The terminal of a conformance session: progress in place of the dots, no tracebacks of
the suite's internals unless --tb asks, and the verdict summary last, at most 80 columns,
coloured, with one line per failing requirement and per cause of cases not run."""

from __future__ import annotations

import os
import pty
import select
import shlex
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import pytest
from scriptservers import cli, run, script_server

from pytest_vfiouser.report import CaseRecord, Records, summary_lines
from pytest_vfiouser.verdict import VERDICTS, Verdict

pytest_plugins = ["pytester"]

CASES = """
import pytest
from pytest_vfiouser import case, MUST, SHOULD

@case("alpha/answers", MUST)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_answers(vfu_client, n):
    assert vfu_client.device_get_info().ok

@case("alpha/reset", MUST)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_reset(vfu_client, n):
    if n > 1:
        assert vfu_client.reset().ok, f"reset refused ({n})\\nsecond line"

@case("beta/reset-should", SHOULD)
def test_reset_should(vfu_client):
    assert vfu_client.reset().ok, "reset refused"
"""


@pytest.fixture
def server(pytester: pytest.Pytester) -> str:
    return script_server(pytester.path)


def _too_wide(lines: list[str]) -> list[str]:
    """Lines wider than 80 columns, but for one word alone (a path) and the quoted lines of
    a start failure's note (indented by 4: a command to copy, the server's stderr)."""
    return [
        line
        for line in lines
        if len(line) > 80 and " " in line.strip() and not line.startswith("    ")
    ]


def _summary(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = max(i for i, line in enumerate(lines) if "vfio-user conformance" in line)
    return lines[start:]


def test_progress_replaces_the_dots(pytester: pytest.Pytester, server):
    """Not a terminal: a line per section done, with its verdicts; no dots, no paths."""
    pytester.makepyfile(test_cases=CASES)
    result = run(pytester, "--vfu-server", server)
    result.stdout.fnmatch_lines(
        [
            "collected 7 items",
            "?6/7 *? alpha: 6 cases in * s: 4 PASS, 2 FAIL",
            "?7/7 *? beta: 1 cases in * s: 1 NON-STRICT",
            "7/7 cases judged in 0:0? (2 FAIL)",
        ]
    )
    assert "test_cases.py" not in result.stdout.str().split("collected 7 items")[1].split("==")[0]
    assert "\r" not in result.stdout.str()


def test_verbose_keeps_pytest_lines(pytester: pytest.Pytester, server):
    pytester.makepyfile(test_cases=CASES)
    result = run(pytester, "--vfu-server", server, "-v")
    result.stdout.fnmatch_lines(["test_cases.py::test_answers?1? PASSED*"])
    assert "cases judged" not in result.stdout.str()


def test_other_sessions_keep_the_dots(pytester: pytest.Pytester):
    pytester.makepyfile("def test_a(): pass\ndef test_b(): pass\n")
    result = run(pytester)
    result.stdout.fnmatch_lines(["test_*.py .. *?100%?"])


def test_progress_on_a_terminal_is_one_line(tmp_path):
    """On a terminal: one line rewritten in place (carriage returns), then the total."""
    parent, child = pty.openpty()
    os.set_inheritable(child, True)
    env = dict(os.environ, COLUMNS="80", LINES="24")
    proc = subprocess.Popen(
        [sys.executable, "-P", "-m", "pytest_vfiouser.cli", "-p", "no:hypothesispytest"]
        + ["--vfu-section", "version", "--vfu-section", "backend"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        env=env,
    )
    os.close(child)
    out = b""
    while True:
        ready, _, _ = select.select([parent], [], [], 120)
        if not ready:
            proc.kill()
            break
        try:
            chunk = os.read(parent, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        out += chunk
    os.close(parent)
    assert proc.wait(timeout=30) == 0
    text = out.decode(errors="replace")
    progress = text.split("collected", 1)[1].split("cases judged", 1)[0]
    assert progress.count("\r") > 10  # redrawn in place, case by case
    assert "version/" in progress and "backend" in progress
    assert progress.count("\n") <= 2  # no line per case: one line, redrawn
    assert "test_version.py" not in progress


def test_failures_are_one_line_each_and_the_summary_comes_last(pytester: pytest.Pytester, server):
    pytester.makepyfile(test_cases=CASES)
    result = run(pytester, "--vfu-server", server, "-rfE")
    out = result.stdout.str()
    assert "= FAILURES =" not in out and "Traceback" not in out
    summary = _summary(out)
    assert summary[-1] == "result: FAILED (2 FAIL)"
    assert "FAIL  alpha/reset [2 of 3]: reset refused (2)" in summary
    assert not _too_wide(summary)
    lines = out.splitlines()
    # after pytest's own summary: the -r lines and the counts
    first = lines.index(summary[0])
    assert first > max(i for i, line in enumerate(lines) if line.startswith("FAILED"))
    assert first > max(i for i, line in enumerate(lines) if " failed" in line)


def test_tb_long_still_shows_tracebacks(pytester: pytest.Pytester, server):
    pytester.makepyfile(test_cases=CASES)
    result = run(pytester, "--vfu-server", server, "--tb=long")
    result.stdout.fnmatch_lines(["*= FAILURES =*", "*assert vfu_client.reset().ok*"])


def test_summary_is_coloured(pytester: pytest.Pytester, server):
    pytester.makepyfile(test_cases=CASES)
    result = run(pytester, "--vfu-server", server, "--color=yes")
    out = result.stdout.str()
    red_bold = "\x1b[31m\x1b[1m"
    assert f"{red_bold}FAIL \x1b[0m alpha/reset" in out
    assert f"result: {red_bold}FAILED (2 FAIL)" in out


def test_start_failure_is_repeated_and_its_not_run_cases_are_one_line(tmp_path):
    server = shlex.join(
        [sys.executable, "-c", "import sys; print('no /dev/vfio', file=sys.stderr); sys.exit(3)"]
        + ["{socket}"]
    )
    result = cli(tmp_path, "--vfu-server", server, "--vfu-section", "version")
    assert result.returncode == 6  # the target could not start (verdict.ExitStatus)
    assert "= ERRORS =" not in result.stdout
    summary = _summary(result.stdout)
    assert "note: the target could not start: exited with status 3" in summary
    assert any(line.strip() == "no /dev/vfio" for line in summary)  # the stderr tail
    assert any(line.strip().startswith("hint:") for line in summary)
    not_run = [line for line in summary if line.startswith("NOT-RUN")]
    assert len(not_run) == 1
    assert not_run[0].startswith("NOT-RUN ") and " cases: the target could not start" in not_run[0]
    assert not _too_wide(summary)


# -- the summary's text, from records


def _state(records: list[CaseRecord], **target) -> SimpleNamespace:
    profile = SimpleNamespace(
        name="my-very-long-profile-name", path=None, baseline_entry=lambda key: None
    )
    settings = SimpleNamespace(
        spec="0.9.1",
        profile=profile,
        restart="per-module",
        timeout=5.0,
        strict=False,
        socket=None,
        fuzz="ci",
        client_mode=False,
    )
    return SimpleNamespace(
        records=Records.view(records),
        settings=settings,
        manager=SimpleNamespace(describe=lambda: "my-server {socket}"),
        unknown_baselines=[],
        interrupted=None,
        config=None,
    )


def test_summary_fits_80_columns_whatever_the_verdicts():
    records = [
        CaseRecord(
            nodeid=f"n{i}-{v}",
            verdict=v,
            case_id=f"{section}/case-{v.value.lower()}",
            section=section,
            message=f"{v}: " + "a long message " * 20,
        )
        for i, section in enumerate(["a-rather-long-section-name-indeed", "dma"])
        for v in VERDICTS
        for _ in range(1 if v is not Verdict.PASS else 1234)
    ]
    targets = {
        "target": "my-server --socket-path={socket} " + "--option " * 20,
        "negotiated": {
            "major": 0,
            "minor": 1,
            "capabilities": {"max_msg_fds": 8, "migration": {"pgsize": 4096}},
        },
        "sigterm": {"honoured": 1, "killed": 0},
        "notes": [],
    }
    lines = summary_lines(_state(records), targets)
    assert all(len(line) <= 80 for line in lines), [line for line in lines if len(line) > 80]
    assert len(lines[0]) > 70  # the table uses the width it has
    header = lines[0].split()
    assert header[:3] == ["section", "PASS", "FAIL"] and "N-STR" in header
    assert any(line.startswith("(N-STR NON-STRICT") for line in lines)  # the legend
    assert any("max_msg_fds=8 migration.pgsize=4096" in line for line in lines)
    assert not any("{'" in line for line in lines)
    assert lines[-1].startswith("result: FAILED (")


def test_summary_counts_parametrizations_and_causes():
    records = [
        CaseRecord(f"t{i}", Verdict.FAIL if i else Verdict.PASS, "s/c", "s", message="bad\nmore")
        for i in range(3)
    ] + [
        CaseRecord(f"u{i}", Verdict.NOT_RUN, f"s/u{i}", "s", message="not run: gone (see s/c)")
        for i in range(5)
    ]
    lines = summary_lines(_state(records), {})
    assert "FAIL  s/c [2 of 3]: bad" in lines
    assert "NOT-RUN 5 cases: gone (see s/c)" in lines
    assert (
        Counter(line.split()[0] for line in lines if line.startswith(("FAIL", "NOT-RUN")))["FAIL"]
        == 1
    )
