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
