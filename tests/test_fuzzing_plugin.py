"""The fuzz cases inside the plugin: --vfu-fuzz, the summary's counts (also under
xdist), and a crash found by fuzzing reported as CRASH with a reproducer."""

from __future__ import annotations

import fnmatch
import shlex

import pytest
from scriptservers import load_json, run
from test_fuzzing_engine import server_command

from pytest_vfiouser.fuzz import fuzz_settings

pytest_plugins = ["pytester"]


def test_unknown_fuzz_effort_is_a_usage_error(pytester: pytest.Pytester):
    pytester.makepyfile("def test_x(): pass")
    result = run(pytester, "--vfu-fuzz=thorough")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--vfu-fuzz: unknown fuzz effort 'thorough'; use one of ci, campaign*"]
    )


def test_summary_counts_the_fuzzing(pytester: pytest.Pytester):
    result = run(
        pytester,
        "--pyargs",
        "conformance.test_fuzz_messages",
        "-k",
        "garbage",
        "--vfu-json=vfu.json",
    )
    result.assert_outcomes(passed=1)
    examples = fuzz_settings("ci", 0.6).max_examples  # fuzz/garbage's share
    flat = " ".join(result.stdout.str().split())  # the summary wraps at 80 columns
    assert fnmatch.fnmatch(
        flat,
        f"* fuzzing (ci): 1 cases, {examples} examples, * messages in * s "
        "(* examples/s, * messages/s) *",
    )
    assert load_json(pytester)["run"]["counts"] == {"PASS": 1}


def test_summary_counts_under_xdist(pytester: pytest.Pytester):
    result = run(
        pytester,
        "-n",
        "2",
        "--pyargs",
        "conformance.test_fuzz_messages",
        "-k",
        "garbage or split",
        subprocess=True,
    )
    result.assert_outcomes(passed=2)
    examples = fuzz_settings("ci", 0.6).max_examples + fuzz_settings("ci", 0.5).max_examples
    flat = " ".join(result.stdout.str().split())  # the summary wraps at 80 columns
    assert f" fuzzing (ci): 2 cases, {examples} examples, " in flat


def test_a_crash_found_by_fuzzing(pytester: pytest.Pytester):
    """The reference server with msg_size trusted (below 16: SIGSEGV) meets garbage."""
    server = shlex.join(server_command("framing-unchecked"))
    result = run(
        pytester,
        "--pyargs",
        "conformance.test_fuzz_messages",
        "-k",
        "garbage",
        "--vfu-server",
        server,
        "--vfu-fuzz-dir=repro",
        "--vfu-json=vfu.json",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["fuzzing: reproducer *repro/fuzz-garbage.py", "result: FAILED (1 CRASH)"]
    )
    case = load_json(pytester)["by_name"]["test_garbage"]
    assert case["verdict"] == "CRASH" and "killed by SIG" in case["message"]
    assert (pytester.path / "repro" / "fuzz-garbage.py").exists()
