"""The verdict vocabulary: what a case can be judged, stated once.

Each verdict knows its rank (which one wins when a test has several: a
passing call and a crash at teardown is a CRASH), whether it fails the run,
and the pytest outcome it is shown as. Everything that orders, colours or
counts verdicts (the judge, the terminal summary, the HTML and JSON reports,
``compare``, the kill matrix) reads it from here.

Pure data: no pytest import, so reports and tools can read it anywhere.
"""

from __future__ import annotations

import enum

__all__ = ["FAILING", "VERDICTS", "Verdict"]


class Verdict(str, enum.Enum):
    """A verdict; its value is the text the reports show (``"NON-STRICT"``).

    Declared in report order (the columns of the summary); ``rank`` is the
    order of severity, lowest first.
    """

    # name = (text, rank, fails the run, pytest outcome)
    PASS = ("PASS", 0, False, "passed")
    FAIL = ("FAIL", 7, True, "failed")
    NON_STRICT = ("NON-STRICT", 5, False, "xfailed")
    INFORMATIONAL = ("INFORMATIONAL", 3, False, "xfailed")
    UNIMPLEMENTED = ("UNIMPLEMENTED", 2, False, "skipped")
    CRASH = ("CRASH", 9, True, "failed")
    HANG = ("HANG", 8, True, "failed")
    BASELINE = ("BASELINE", 4, False, "xfailed")
    FIXED = ("FIXED", 1, False, "passed")
    ERROR = ("ERROR", 6, True, "error")

    rank: int
    fails_run: bool
    outcome: str

    def __new__(cls, text: str, rank: int, fails_run: bool, outcome: str) -> Verdict:
        member = str.__new__(cls, text)
        member._value_ = text
        member.rank = rank
        member.fails_run = fails_run
        member.outcome = outcome
        return member

    # A verdict reads, formats and serializes as its text (JSON, f-strings, HTML classes).
    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def worst(cls, verdicts) -> Verdict | None:
        """The most severe of ``verdicts`` (texts or members); None for none."""
        members = [cls(v) for v in verdicts]
        return max(members, key=lambda v: v.rank) if members else None


VERDICTS: tuple[Verdict, ...] = tuple(Verdict)
FAILING: frozenset[Verdict] = frozenset(v for v in Verdict if v.fails_run)
