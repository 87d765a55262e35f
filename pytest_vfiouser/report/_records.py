"""The record of one judged case, and the run's collection of them.

The judge builds a ``CaseRecord`` for every phase of a case and attaches it
to the phase's report; every reader (records, HTML, log files) takes it back
with ``CaseRecord.of(report)``. On the report it is ``report.vfu``, a dict of
plain values: xdist sends reports from its workers to the controller with
execnet, which serializes neither enums nor dataclasses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import pytest

from pytest_vfiouser.verdict import Verdict

from ._artifacts import case_key

__all__ = ["CaseRecord", "Records"]

# A baselined case passed: INFORMATIONAL is a pass with observations (a baselined case
# that fails a MAY is BASELINE).
_PASSED = frozenset({Verdict.PASS, Verdict.FIXED, Verdict.INFORMATIONAL})

_ATTRIBUTE = "vfu"  # the report's attribute holding the record's dict


# The record's containers: to_dict and from_dict copy them, one level deep.
_CONTAINERS = {"revisions": list, "observations": list, "resources": dict, "artifacts": dict}


@dataclass
class CaseRecord:
    """One case as the reports read it: of one phase, or (at teardown) the final one.

    ``verdict`` is the phase's (None for a phase that decided nothing, such as
    a passing setup) or, at teardown, the worst of all phases; ``message`` is
    that verdict's. ``resources`` (the server's resource counts) are known
    at teardown; ``duration`` (all phases) once the run collects the record.
    """

    nodeid: str
    verdict: Verdict | None
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

    def to_dict(self) -> dict:
        """Plain values only (the verdict as its text), for the wire."""
        # One level of copies, as from_dict makes (asdict's deep copies were a tenth of a
        # run's CPU: a record is attached to each phase's report).
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, copy in _CONTAINERS.items():
            data[name] = copy(data[name])
        data["verdict"] = str(self.verdict) if self.verdict is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> CaseRecord:
        """The record of ``to_dict()``'s dict (copies: the dict stays the report's)."""
        values = {f.name: data[f.name] for f in fields(cls) if data.get(f.name) is not None}
        verdict = values.pop("verdict", None)
        record = cls(verdict=Verdict(verdict) if verdict is not None else None, **values)
        for name, copy in _CONTAINERS.items():
            setattr(record, name, copy(getattr(record, name)))
        return record

    @classmethod
    def of(cls, report: pytest.TestReport) -> CaseRecord | None:
        """The record attached to a phase report; None for a test that is not judged."""
        data = getattr(report, _ATTRIBUTE, None)
        return cls.from_dict(data) if data else None

    def attach(self, report: pytest.TestReport) -> None:
        """Put the record on a phase report (replacing the one it had)."""
        setattr(report, _ATTRIBUTE, self.to_dict())


class Records:
    """Collects the final verdicts from teardown reports (pytest_runtest_logreport)."""

    def __init__(self) -> None:
        self.cases: list[CaseRecord] = []
        self._durations: dict[str, float] = {}
        self.on_case: Callable[[CaseRecord], None] | None = None  # called with each new case

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """As a registered plugin, Records sees every report."""
        self.add(report)

    def add(self, report: pytest.TestReport) -> None:
        nodeid = report.nodeid
        self._durations[nodeid] = self._durations.get(nodeid, 0.0) + (report.duration or 0.0)
        if report.when != "teardown":
            return
        duration = self._durations.pop(nodeid, 0.0)
        record = CaseRecord.of(report)
        if record is not None:
            self.cases.append(replace(record, nodeid=nodeid, duration=round(duration, 6)))
            if self.on_case is not None:
                self.on_case(self.cases[-1])

    @classmethod
    def view(cls, cases: list[CaseRecord]) -> Records:
        """Records of a copy of ``cases`` (a snapshot while the run adds more)."""
        records = cls()
        records.cases = list(cases)
        return records

    def counts(self) -> Counter:
        return Counter(c.verdict for c in self.cases)

    def by_section(self) -> dict[str, Counter]:
        out: dict[str, Counter] = {}
        for c in self.cases:
            out.setdefault(c.section or "(no section)", Counter())[c.verdict] += 1
        return dict(sorted(out.items()))

    def failing(self) -> list[CaseRecord]:
        return [c for c in self.cases if c.verdict.fails_run]

    def with_verdict(self, verdict: str) -> list[CaseRecord]:
        return [c for c in self.cases if c.verdict == verdict]

    def fixed_baselines(
        self, entry_of: Callable[[str], tuple[str, str] | None]
    ) -> list[tuple[str, str, int]]:
        """The baseline entries every case of which passed (entry, reason, how many cases),
        in the order judged. ``entry_of(key)``: the entry naming the case ``key``
        (``section/name[params]``) and its reason, or None (``Profile.baseline_entry``)."""
        named: dict[tuple[str, str], list[CaseRecord]] = {}
        for c in self.cases:
            found = entry_of(case_key(c.case_id, c.nodeid)) if c.case_id else None
            if found is not None:
                named.setdefault(found, []).append(c)
        return [
            (entry, reason, len(cases))
            for (entry, reason), cases in named.items()
            if all(c.verdict in _PASSED for c in cases)
        ]
