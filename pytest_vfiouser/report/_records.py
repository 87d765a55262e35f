"""The record of one judged case, and the run's collection of them."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

import pytest

from pytest_vfiouser.verdict import FAILING

__all__ = ["CaseRecord", "Records"]


@dataclass
class CaseRecord:
    nodeid: str
    verdict: str
    case_id: str | None = None
    section: str | None = None
    level: str | None = None
    revisions: list[str] = field(default_factory=list)
    requirement: str = ""
    message: str = ""
    observations: list[str] = field(default_factory=list)
    resources: dict = field(default_factory=dict)
    duration: float = 0.0
    artifacts: dict = field(default_factory=dict)  # log files written (artifacts.py): name -> path

    def to_json(self) -> dict:
        return asdict(self)


class Records:
    """Collects the final verdicts from teardown reports (pytest_runtest_logreport)."""

    def __init__(self) -> None:
        self.cases: list[CaseRecord] = []
        self._durations: dict[str, float] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """As a registered plugin, Records sees every report."""
        self.add(report)

    def add(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        self._durations[nodeid] = self._durations.get(nodeid, 0.0) + (report.duration or 0.0)
        data = getattr(report, "vfu", None)
        if report.when != "teardown":
            return
        duration = self._durations.pop(nodeid, 0.0)
        if not data:
            return
        self.cases.append(
            CaseRecord(
                nodeid=nodeid,
                verdict=data["verdict"],
                case_id=data.get("case_id"),
                section=data.get("section"),
                level=data.get("level"),
                revisions=list(data.get("revisions") or []),
                requirement=data.get("requirement") or "",
                message=data.get("message") or "",
                observations=list(data.get("observations") or []),
                resources=dict(data.get("resources") or {}),
                duration=round(duration, 6),
                artifacts=dict(data.get("artifacts") or {}),
            )
        )

    def counts(self) -> Counter:
        return Counter(c.verdict for c in self.cases)

    def by_section(self) -> dict[str, Counter]:
        out: dict[str, Counter] = {}
        for c in self.cases:
            out.setdefault(c.section or "(no section)", Counter())[c.verdict] += 1
        return dict(sorted(out.items()))

    def failing(self) -> list[CaseRecord]:
        return [c for c in self.cases if c.verdict in FAILING]

    def with_verdict(self, verdict: str) -> list[CaseRecord]:
        return [c for c in self.cases if c.verdict == verdict]
