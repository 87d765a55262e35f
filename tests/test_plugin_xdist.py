"""Under pytest-xdist each worker owns its servers; the controller gathers the verdicts and the
bookkeeping."""

from __future__ import annotations

import pytest
from scriptservers import load_json, run, script_server

from pytest_vfiouser.verdict import ExitStatus

pytest_plugins = ["pytester"]

CASES = """
import os
from pytest_vfiouser import case, MUST, SHOULD

@case("a/pass-{n}", MUST)
def test_pass_{n}(vfu_target, vfu_client):
    with open("pids-%s.txt" % os.environ.get("PYTEST_XDIST_WORKER", "-"), "a") as f:
        f.write("%d %s\\n" % (vfu_target.pid, vfu_target.socket_path))

@case("b/should-{n}", SHOULD)
def test_should_{n}(vfu_client):
    assert vfu_client.reset().ok
"""


def test_two_workers(pytester: pytest.Pytester):
    pytester.makepyfile(**{f"test_{n}": CASES.format(n=n) for n in range(4)})
    pytester.makepyfile(
        test_crash="""
        from pytest_vfiouser import case, MUST

        @case("c/crash", MUST)
        def test_crash(vfu_client):
            vfu_client.send(99)
            vfu_client.recv_reply()
    """
    )
    result = run(
        pytester,
        "-n",
        "2",
        "--vfu-server",
        script_server(pytester.path, "--abort-on", "99"),
        "--vfu-json=vfu.json",
    )
    result.assert_outcomes(passed=4, xfailed=4, failed=1)
    result.stdout.fnmatch_lines(
        ["SIGTERM honoured: yes (* of * stops)", "result: FAILED (1 CRASH)"]
    )
    data = load_json(pytester)
    assert data["run"]["counts"] == {"PASS": 4, "NON-STRICT": 4, "CRASH": 1}
    assert data["run"]["negotiated"] is not None
    # Each worker started its own servers, on its own socket paths.
    workers = {}
    for f in pytester.path.glob("pids-gw*.txt"):
        workers[f.name] = {tuple(line.split()) for line in f.read_text().splitlines()}
    assert len(workers) == 2
    a, b = workers.values()
    assert not {pid for pid, _ in a} & {pid for pid, _ in b}
    assert not {path for _, path in a} & {path for _, path in b}


def test_unknown_section_under_xdist_is_a_usage_error(pytester: pytest.Pytester):
    pytester.makepyfile(CASES.format(n=0))
    result = run(pytester, "-n", "2", "--vfu-section", "zzz")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(
        ["ERROR: --vfu-section: unknown section 'zzz'; known sections: a, b"]
    )


def test_a_target_that_could_not_start_on_the_workers_is_the_runs_exit_status(pytester):
    """The controller learns it from the workers' notes: exit status 6, not 1."""
    pytester.makepyfile(CASES.format(n=0))
    result = run(pytester, "-n", "2", "--vfu-server", script_server(pytester.path, "--fail-start"))
    assert result.ret == ExitStatus.TARGET_NOT_STARTED, result.stdout.str()
