"""A client's run checked against its findings in interop/expectations/ (those of
``python -m interop``), for the tests that run a real client on their own."""

from __future__ import annotations

from pathlib import Path

from interop import _expectations
from pytest_vfiouser.report import load as load_report

EXPECTATIONS = Path(__file__).resolve().parent.parent / "interop" / "expectations"


def unexpected(report: Path, name: str, revision: str) -> list[str]:
    """How the report differs from ``name``'s expectation file at ``revision`` (a new
    finding, one gone, a changed verdict, an ERROR), one line each; the expected findings
    of cases the run left out (--vfu-section) aside."""
    expected = _expectations.load(EXPECTATIONS / f"{name}.toml", ("0.9.1", "0.9.2"))
    cases = load_report(report).cases
    expected.entries = [e for e in expected.entries if e.case in cases]
    differences = _expectations.check(name, revision, cases, expected)
    return ["\n".join(d.lines()) for d in differences] + expected.errors
