"""The matrices: the README's table of implementations by section, and compare's HTML.

The README block (between ``BEGIN`` and ``END``) has one table per spec
revision: a row per implementation, a column per section; a cell is "✓" when
every case of the section passed (PASS, FIXED, INFORMATIONAL; UNIMPLEMENTED ones
aside), "–" when all were UNIMPLEMENTED, else the counts of the other verdicts
("3 FAIL, 1 NON-STRICT"); the cases whose findings vary from run to run (``unstable``
in the expectations) are not counted but said ("(2 varying)"): the table is the same
after every run. The HTML matrix is ``vfio-user-conformance compare``'s,
over copies of the JSON reports laid out so that compare names each run
"<implementation> (<revision>)".
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pytest_vfiouser.verdict import Verdict, in_report_order

__all__ = [
    "BEGIN",
    "CLIENT_MARKERS",
    "END",
    "MARKERS",
    "Row",
    "ReadmeError",
    "cell",
    "render_block",
    "replace_block",
    "write_html",
]

BEGIN = "<!-- interop-matrix:begin -->"
END = "<!-- interop-matrix:end -->"
MARKERS = (BEGIN, END)
CLIENT_MARKERS = ("<!-- client-matrix:begin -->", "<!-- client-matrix:end -->")
PASSED = frozenset({Verdict.PASS, Verdict.FIXED, Verdict.INFORMATIONAL})
ALL_PASSED, NONE_IMPLEMENTED = "✓", "–"


class ReadmeError(Exception):
    """The README has no (or a broken) pair of markers."""


@dataclass(frozen=True)
class Row:
    """One implementation at one revision: its cases (case id -> case), None without a report."""

    label: str  # Markdown: the name, linked to its expectations
    revision: str
    cases: Mapping[str, Mapping] | None
    # case ids whose findings vary from run to run (``unstable`` in the expectations):
    # not counted, but said ("2 varying"), so the table is the same after every run
    varying: frozenset[str] = frozenset()


def cell(verdicts: Counter, varying: int = 0) -> str:
    """One section of one run (``varying``: its cases whose findings vary, not counted)."""
    more = f" ({varying} varying)" if varying else ""
    if not verdicts:
        return more.strip(" ()")
    if set(verdicts) == {Verdict.UNIMPLEMENTED}:
        return NONE_IMPLEMENTED + more
    bad = {v: n for v, n in verdicts.items() if v not in PASSED and v != Verdict.UNIMPLEMENTED}
    if not bad:
        return ALL_PASSED + more
    return ", ".join(f"{bad[v]} {v}" for v in in_report_order(bad)) + more


def _sections(cases: Mapping[str, Mapping], varying: frozenset[str]) -> dict[str, Counter]:
    out: dict[str, Counter] = {}
    for case_id, case in cases.items():
        counted = out.setdefault(case.get("section") or "(none)", Counter())
        if case_id not in varying:
            counted[case.get("verdict", "")] += 1
    return out


def _varying(row: Row) -> Counter:
    return Counter(case_id.split("[", 1)[0].rsplit("/", 1)[0] for case_id in row.varying)


def render_block(
    rows: Sequence[Row], revisions: Sequence[str], note: str, markers: tuple[str, str] = MARKERS
) -> str:
    """The Markdown between the markers (markers included)."""
    out = [markers[0], f"<!-- {note} -->"]
    for revision in revisions:
        mine = [r for r in rows if r.revision == revision]
        counted = [
            (r, _sections(r.cases, r.varying) if r.cases is not None else None) for r in mine
        ]
        sections = sorted({s for _, c in counted if c for s in c})
        out += ["", f"Spec {revision}:", ""]
        out.append("| implementation | " + " | ".join(sections) + " |")
        out.append("| --- |" + " --- |" * len(sections))
        for row, by_section in counted:
            if by_section is None:
                cells = ["no report"] + [""] * (len(sections) - 1)
            else:
                varying = _varying(row)
                cells = [cell(by_section.get(s, Counter()), varying[s]) for s in sections]
            out.append(f"| {row.label} | " + " | ".join(cells) + " |")
    out += ["", markers[1]]
    return "\n".join(out)


def replace_block(text: str, block: str, markers: tuple[str, str] = MARKERS) -> str:
    """``text`` (the README) with the block between its markers replaced."""
    begin, end_mark = markers
    start, end = text.find(begin), text.find(end_mark)
    if start < 0 or end < start or text.count(begin) != 1 or text.count(end_mark) != 1:
        raise ReadmeError(f"no single pair of markers {begin} ... {end_mark}")
    return text[:start] + block + text[end + len(end_mark) :]


def write_html(
    runs: Sequence[tuple[str, str, Path]], out: Path, suite: Sequence[str]
) -> tuple[int, str]:
    """compare's matrix of ``runs`` ((name, revision, JSON report)) written to ``out``; the
    exit status of compare and its text. Each report is copied to
    ``<out stem>/<revision>/<name>.json`` (with its HTML link made relative to the copy),
    which compare names "<name> (<revision>)"."""
    folder = out.parent / out.stem
    copies = []
    for name, revision, report in runs:
        data = json.loads(report.read_text(encoding="utf-8"))
        copy = folder / revision / f"{name}.json"
        copy.parent.mkdir(parents=True, exist_ok=True)
        links = (data.get("run") or {}).get("reports") or {}
        if links.get("html"):
            target = report.parent / links["html"]
            links["html"] = Path(os.path.relpath(target, copy.parent)).as_posix()
        copy.write_text(json.dumps(data), encoding="utf-8")
        copies.append(str(copy))
    if len(copies) < 2:
        return 0, "fewer than two reports: no matrix"
    done = subprocess.run(
        [*suite, "compare", *copies, "--html", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr
