"""The verdict vocabulary: what a case can be judged, and what a run exits with, stated once.

Each verdict knows its rank (which one wins when a test has several: a
passing call and a crash at teardown is a CRASH), whether it fails the run,
the pytest outcome it is shown as, and its tone (the colour the reports give
it). Everything that orders, colours or counts verdicts (the judge, the
terminal summary, the HTML and JSON reports, ``compare``) reads it from here.

Pure data: no pytest import, so reports and tools can read it anywhere.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

__all__ = [
    "BY_SEVERITY",
    "FAILING",
    "VERDICTS",
    "ExitStatus",
    "Unmet",
    "Verdict",
    "in_report_order",
]


class Verdict(str, enum.Enum):
    """A verdict; its value is the text the reports show (``"NON-STRICT"``).

    Declared in report order (the columns of the summary, the schema's
    enum); ``rank`` is the order of severity, lowest first.
    """

    # name = (text, rank, fails the run, pytest outcome, tone); the tones: pass (passed),
    # bad (fails the run), warn (a requirement not met, not failing the run), info, skip.
    PASS = ("PASS", 0, False, "passed", "pass")
    FAIL = ("FAIL", 8, True, "failed", "bad")
    NON_STRICT = ("NON-STRICT", 6, False, "xfailed", "warn")
    INFORMATIONAL = ("INFORMATIONAL", 4, False, "xfailed", "info")
    UNIMPLEMENTED = ("UNIMPLEMENTED", 3, False, "skipped", "skip")
    CRASH = ("CRASH", 10, True, "failed", "bad")
    HANG = ("HANG", 9, True, "failed", "bad")
    BASELINE = ("BASELINE", 5, False, "xfailed", "warn")
    FIXED = ("FIXED", 1, False, "passed", "pass")
    ERROR = ("ERROR", 7, True, "error", "bad")
    # not run because of a root cause another case was judged for (the target could not
    # start, or stopped answering): that case fails the run, this one does not
    NOT_RUN = ("NOT-RUN", 2, False, "skipped", "skip")

    rank: int
    fails_run: bool
    outcome: str
    tone: str

    def __new__(cls, text: str, rank: int, fails_run: bool, outcome: str, tone: str) -> Verdict:
        member = str.__new__(cls, text)
        member._value_ = text
        member.rank = rank
        member.fails_run = fails_run
        member.outcome = outcome
        member.tone = tone
        return member

    # A verdict reads, formats, hashes and serializes as its text (JSON, f-strings, HTML
    # classes, dict keys shared with plain texts).
    __str__ = str.__str__
    __format__ = str.__format__
    __hash__ = str.__hash__

    @classmethod
    def worst(cls, verdicts) -> Verdict | None:
        """The most severe of ``verdicts`` (texts or members); None for none."""
        members = [cls(v) for v in verdicts]
        return max(members, key=lambda v: v.rank) if members else None


VERDICTS: tuple[Verdict, ...] = tuple(Verdict)
BY_SEVERITY: tuple[Verdict, ...] = tuple(sorted(Verdict, key=lambda v: v.rank))
FAILING: frozenset[Verdict] = frozenset(v for v in Verdict if v.fails_run)


def in_report_order(counts: Mapping[str, int] | Iterable[str]) -> list[str]:
    """The verdicts of ``counts`` (a mapping or texts) in report order; texts that are no
    verdict (a newer report's) after them, alphabetically."""
    known = [v for v in VERDICTS if v in counts]
    return known + sorted(str(v) for v in counts if v not in VERDICTS)


class Unmet(AssertionError):
    """A requirement found not met. ``level`` ("should" or "may"; a ``Level`` will do)
    names the level of the sentence the failure rests on, when that is weaker than the
    case's own: a MUST case that finds only a SHOULD broken is NON-STRICT, not FAIL. A
    failure never rests on a stronger level than its case's."""

    level: str | None = None

    def __init__(self, message: str = "", level: str | None = None):
        super().__init__(message)
        if level is not None:
            self.level = str(getattr(level, "value", level))


class ExitStatus(enum.IntEnum):
    """The exit status of a conformance run (``vfio-user-conformance``; under plain pytest,
    pytest's, which has the same numbers for 0 to 5, and 6 from the plugin). ``text``
    says when, for --help and the README."""

    OK = 0
    FAILED = 1
    INTERRUPTED = 2
    INTERNAL_ERROR = 3
    USAGE_ERROR = 4
    NO_CASES = 5
    TARGET_NOT_STARTED = 6

    @property
    def text(self) -> str:
        return _EXIT_TEXTS[self]


# pytest's statuses where they mean the same (CI scripts that know pytest's keep working);
# 6 is the one pytest has not: the run could not judge the server at all.
_EXIT_TEXTS = {
    ExitStatus.OK: "no case failed the run",
    ExitStatus.FAILED: "conformance failures: some case is FAIL, CRASH, HANG or ERROR "
    "(NON-STRICT too with --vfu-strict)",
    ExitStatus.INTERRUPTED: "interrupted (Ctrl-C, SIGTERM, SIGHUP); the reports hold what "
    "was judged until then",
    ExitStatus.INTERNAL_ERROR: "an internal error of the suite (a bug; the reports say where "
    "it stopped)",
    ExitStatus.USAGE_ERROR: "usage error: a wrong option, ini value, path or selection; "
    "nothing ran",
    ExitStatus.NO_CASES: "nothing to judge: no case collected or selected (-k, -m, "
    "--vfu-section); the last run's reports are kept",
    ExitStatus.TARGET_NOT_STARTED: "the target could not start (or no server answered at "
    "--vfu-socket): the first case is the ERROR, the others NOT-RUN",
}
