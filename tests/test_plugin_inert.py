"""The plugin in a pytest run that is not a conformance run: it costs little and changes
nothing (no markers that collide, no report of its own, no Hypothesis import)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from scriptservers import INNER_ARGS

pytest_plugins = ["pytester"]


def test_loading_the_plugin_does_not_import_hypothesis():
    code = (
        "import sys, pytest_vfiouser.plugin, pytest_vfiouser.fuzz as f\n"
        "assert 'hypothesis' not in sys.modules, 'imported with the plugin'\n"
        "f.Fuzzer\n"
        "assert 'hypothesis' in sys.modules, 'the engine is imported on first use'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


OWN_MARKS = """
import pytest

@pytest.mark.requires("network")
@pytest.mark.section("billing")
@pytest.mark.must
def test_own_marks():
    pass

def test_unmarked():
    pass
"""


def test_marks_of_another_project_keep_their_meaning(pytester: pytest.Pytester):
    """A project with marks named like the suite's once were (must, requires, section...)
    keeps them: the suite's carry the prefix vfu_, and its fixtures ignore the others."""
    pytester.makeini(
        "[pytest]\nmarkers =\n    requires(what): ours\n    section(name): ours\n    must: ours\n"
    )
    pytester.makepyfile(OWN_MARKS)
    result = pytester.runpytest(*INNER_ARGS, "--strict-markers", "-m", "must")
    result.assert_outcomes(passed=1, deselected=1)
    result = pytester.runpytest(*INNER_ARGS, "--markers")
    markers = [line for line in result.stdout.lines if line.startswith("@pytest.mark.")]
    suites = [m for m in markers if "vfio-user" in m]
    assert suites and all(m.startswith("@pytest.mark.vfu_") for m in suites), markers


def test_another_projects_html_report_is_its_own(pytester: pytest.Pytester):
    """No verdict columns, matrix or title in the HTML report of a session without cases,
    nor a summary: the failing test fails as pytest says."""
    pytester.makepyfile("def test_fails():\n    assert 0\n\ndef test_passes():\n    pass\n")
    result = pytester.runpytest(*INNER_ARGS, "--html=r.html")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.no_fnmatch_line("*vfio-user*")
    text = (pytester.path / "r.html").read_text()
    assert "vfio-user" not in text and "Verdict" not in text
    assert '<title id="head-title">r.html</title>' in text


def test_a_session_with_cases_gets_the_verdict_columns_without_options(pytester):
    """Without any vfu option, the collection tells a conformance session: the HTML
    report still gets its title, columns and matrix (asked for before collection)."""
    pytester.makepyfile(
        "from pytest_vfiouser import case, MUST\n\n"
        '@case("alpha/one", MUST)\ndef test_one(vfu_spec):\n    assert vfu_spec\n'
    )
    result = pytester.runpytest(*INNER_ARGS, "--html=r.html")
    result.assert_outcomes(passed=1)
    text = (pytester.path / "r.html").read_text()
    assert '<title id="head-title">vfio-user conformance: reference</title>' in text
    assert 'data-column-type="verdict">Verdict</th>' in text
    assert "alpha/one" in text
