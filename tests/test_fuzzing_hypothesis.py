"""Hypothesis's own options and files in a conformance run: --hypothesis-profile selects
the fuzz profile, --hypothesis-show-statistics shows the fuzz cases' statistics, and no
.hypothesis/ folder is left where the suite runs."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

MODE_CASE = """
def test_mode(vfu_settings):
    print("fuzz mode:", vfu_settings.fuzz)
"""


# Where Hypothesis would write its files during a case: whether it writes any depends on
# whether the code under test is installed in site-packages (it skips that code's constants).
STORAGE_PROBE = """
from hypothesis.configuration import storage_directory

def pytest_runtest_teardown(item):
    print("hypothesis storage:", storage_directory("constants", intent_to_write=False).path)
"""


def _run_probed(pytester: pytest.Pytester, *args: str):
    """The garbage fuzz case, with STORAGE_PROBE printing where Hypothesis keeps its files."""
    pytester.makepyfile(storage_probe=STORAGE_PROBE)
    pytester.syspathinsert()
    pyargs = ("--pyargs", "conformance.test_fuzz_messages", "-k", "garbage")
    return _run(pytester, "-s", "-p", "storage_probe", *pyargs, *args)


def _run(pytester: pytest.Pytester, *args: str):
    # Hypothesis's pytest plugin stays loaded: its options are under test.
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)


def test_hypothesis_profile_selects_the_fuzz_profile(pytester: pytest.Pytester):
    pytester.makepyfile(MODE_CASE)
    result = _run(pytester, "-s", "--hypothesis-profile", "vfu-fuzz-campaign")
    result.stdout.fnmatch_lines(["*fuzz mode: campaign*"])
    assert result.ret == 0
    result = _run(pytester, "-s", "--hypothesis-profile", "vfu-fuzz-ci")
    result.stdout.fnmatch_lines(["*fuzz mode: ci*"])


def test_hypothesis_profile_and_vfu_fuzz_must_agree(pytester: pytest.Pytester):
    pytester.makepyfile(MODE_CASE)
    result = _run(pytester, "--hypothesis-profile", "vfu-fuzz-campaign", "--vfu-fuzz", "ci")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["*--vfu-fuzz ci and --hypothesis-profile vfu-fuzz-campaign choose different*"]
    )
    result = _run(
        pytester, "-s", "--hypothesis-profile", "vfu-fuzz-campaign", "--vfu-fuzz=campaign"
    )
    assert result.ret == 0


def test_an_example_database_needs_the_campaign_profile(pytester: pytest.Pytester):
    """Hypothesis keeps no database for a derandomized run (the ci profile)."""
    pytester.makepyfile(MODE_CASE)
    result = _run(pytester, "--hypothesis-profile", "vfu-fuzz-ci", "--vfu-fuzz-db", "db")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vfu-fuzz-db: the ci fuzz effort is derandomized*"])
    result = _run(pytester, "-s", "--hypothesis-profile", "vfu-fuzz-campaign", "--vfu-fuzz-db=db")
    result.stdout.fnmatch_lines(["*fuzz mode: campaign*"])
    assert result.ret == 0


def test_statistics_and_no_hypothesis_folder(pytester: pytest.Pytester):
    """A fuzz case against the embedded reference server: Hypothesis's statistics of its
    examples are shown, and Hypothesis's files (its constants cache) are not left here."""
    result = _run_probed(pytester, "--hypothesis-show-statistics")
    assert result.ret == 0, result.stdout.str()[-2000:]
    result.stdout.fnmatch_lines(
        [
            "*= Hypothesis Statistics =*",
            "*::test_garbage:",
            "  - during generate phase *",
            "*passing, 0 failing, and * invalid test cases",
        ]
    )
    result.stdout.fnmatch_lines(["*hypothesis storage: */vfu-hypothesis-*/constants"])
    assert not (pytester.path / ".hypothesis").exists()


def test_hypothesis_storage_directory_is_respected(pytester: pytest.Pytester, monkeypatch):
    """HYPOTHESIS_STORAGE_DIRECTORY still says where Hypothesis keeps its files."""
    storage = pytester.path / "hypothesis-files"
    monkeypatch.setenv("HYPOTHESIS_STORAGE_DIRECTORY", str(storage))
    result = _run_probed(pytester)
    assert result.ret == 0
    result.stdout.fnmatch_lines([f"*hypothesis storage: {storage}/constants"])
    assert not (pytester.path / ".hypothesis").exists()
