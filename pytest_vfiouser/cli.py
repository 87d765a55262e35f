"""``vfio-user-conformance``: run the installed conformance suite against a server.

    vfio-user-conformance                                  # the embedded reference server
    vfio-user-conformance --vfu-server "my-server --socket {socket}" --vfu-profile dev.toml
    vfio-user-conformance --vfu-socket /run/my-server.sock --vfu-section device_info -x
    vfio-user-conformance compare a/conformance.json b/conformance.json --html compare.html

A thin front to ``pytest <the installed conformance package>``: every argument is passed to
pytest (the --vfu-* options, -k, -x, -n 4, ...).  It does not depend on the
current directory's pytest configuration; reports go to ``reports/`` under
the current directory unless --html, --junitxml or --vfu-json say otherwise:

    reports/conformance.html   self-contained HTML (pytest-html)
    reports/conformance-logs/  wire logs, reproducers, stderr of the cases that did not pass
    reports/conformance.json   verdicts and run metadata
    reports/junit.xml          JUnit XML, verdicts as testcase properties

Exit status: 0 when no case FAILed, CRASHed, HUNG or ERRORed (SHOULDs count
only with --vfu-strict), 4 on a usage error, 1 otherwise (including a run
in which no case ran, and one interrupted: Ctrl-C, SIGTERM, SIGHUP).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import conformance
from pytest_vfiouser.plugin import get_state
from pytest_vfiouser.report import compare_main

__all__ = ["DEFAULT_ARGS", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = int(pytest.ExitCode.USAGE_ERROR)

DEFAULT_ARGS = (
    "--html=reports/conformance.html",
    "--self-contained-html",
    "--junitxml=reports/junit.xml",
    "--vfu-json=reports/conformance.json",
    "-o",
    "timeout=300",  # pytest-timeout: a backstop; replies are bounded by --vfu-timeout
    "-o",
    "junit_suite_name=vfio-user-conformance",
    "-o",
    "render_collapsed=passed,skipped",  # pytest-html: failures (and xfails) open
    "-rfE",
    # This module imported pytest_vfiouser before pytest could mark it for rewriting.
    "-W",
    "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning",
)


class _Outcome:
    """Reads the verdicts at the end of the run (on the xdist controller)."""

    def __init__(self) -> None:
        self.ran = False  # False for --help, --version, --collect-only, --fixtures ...
        self.cases = 0
        self.failing = 0

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        self.ran = not (
            config.option.collectonly
            or getattr(config.option, "showfixtures", False)
            or getattr(config.option, "show_fixtures_per_test", False)
        )
        try:
            records = get_state(session.config).records
        except RuntimeError:
            return
        self.cases = len(records.cases)
        self.failing = len(records.failing())


def _suite_root() -> Path:
    return Path(conformance.__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["compare"]:  # vfio-user-conformance compare A.json B.json ... (compare.py)
        return compare_main(args[1:])
    base = [
        "-c",
        os.devnull,  # no ini file of the current directory applies
        f"--rootdir={_suite_root()}",
        "-p",
        "no:cacheprovider",  # never write into the installed package
        *DEFAULT_ARGS,
        # The installed suite by its path, not ``--pyargs conformance``: pytest would
        # first take a ``conformance/`` folder of the current directory (a checkout of
        # this project) for it and load that one's conftest.py too.
        str(_suite_root() / "conformance"),
    ]
    outcome = _Outcome()
    status = pytest.main(base + args, plugins=[outcome])
    if status == pytest.ExitCode.USAGE_ERROR:
        return EXIT_USAGE
    if status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return EXIT_FAILED
    if not outcome.ran:
        return int(status)
    return EXIT_OK if outcome.cases and not outcome.failing else EXIT_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
