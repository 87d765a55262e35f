"""``vfio-user-conformance compare``: the verdicts of several implementations side by side.

    vfio-user-conformance compare a/conformance.json b/conformance.json ... [--html OUT.html]

Reads JSON reports (schema_version 1 and 2, see schema/conformance.schema.json),
prints a plain-text summary (cases, how many differ, per section, the list
of differing cases) and, with --html, writes a matrix of cases by
implementation, grouped by section, the cases that differ first in each
section; each cell links to the case in that implementation's HTML report
(the report named in the JSON's run.reports.html, by its anchor).

A case *differs* when its verdict is not the same in every run, a case
missing from some run (not selected, another spec revision) included;
--common leaves out the cases some run does not have.
An implementation is named by its profile (``[profile] name``), else by its
target's command; equal names get the report's folder appended.

Standard library only, and the verdict vocabulary (``verdict.py``: the order
of the counts, the colour of each verdict). Exit status: 0; 1 with
--fail-on-difference when some case differs; 2 when a file is missing or not
a report.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections import Counter
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from urllib.parse import quote

from pytest_vfiouser.verdict import VERDICTS, Verdict, in_report_order

from ._json import READABLE_VERSIONS
from ._tones import tone_css

__all__ = [
    "Comparison",
    "ReportError",
    "Run",
    "compare",
    "load",
    "main",
    "render_html",
    "render_text",
]

EXIT_OK, EXIT_DIFFERENT, EXIT_ERROR = 0, 1, 2
MISSING = "-"  # a case the run does not have
_GENERIC_PROFILES = {"", "none", "unnamed"}


class ReportError(Exception):
    """A file that cannot be compared: missing, not JSON, not a report, another schema_version."""


@dataclass
class Run:
    path: Path
    data: dict
    name: str = ""
    cases: dict[str, dict] = field(default_factory=dict)  # case id -> case, in report order

    @property
    def html(self) -> Path | None:
        """The run's HTML report (run.reports.html, relative to the JSON), if it names one."""
        rel = ((self.data.get("run") or {}).get("reports") or {}).get("html")
        return (self.path.parent / rel) if rel else None

    def counts(self) -> Counter:
        return Counter(c["verdict"] for c in self.cases.values())

    def counted(self) -> list[tuple[str, int]]:
        """(verdict, number of cases), in report order."""
        counts = self.counts()
        return [(v, counts[v]) for v in in_report_order(counts)]


def _tone(verdict: str) -> str:
    """A verdict's CSS class: its tone ("" for one this version does not know)."""
    return Verdict(verdict).tone if verdict in VERDICTS else ""


def load(path: str | os.PathLike[str]) -> Run:
    """Read and check one JSON report; ReportError says what is wrong with it."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: cannot read it: {e}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ReportError(
            f"{path}: not JSON ({e.msg} at line {e.lineno} column {e.colno})"
        ) from None
    hint = (
        "write one with vfio-user-conformance (reports/conformance.json) or pytest --vfu-json PATH"
    )
    if not isinstance(data, dict) or "schema_version" not in data:
        raise ReportError(
            f"{path}: not a pytest-vfiouser conformance report (no schema_version); {hint}"
        )
    version = data["schema_version"]
    if version not in READABLE_VERSIONS:
        raise ReportError(
            f"{path}: schema_version {version!r} is not supported: this pytest-vfiouser "
            f"reads schema_version {' and '.join(map(str, READABLE_VERSIONS))}"
        )
    cases = data.get("cases")
    if not isinstance(data.get("run"), dict) or not isinstance(cases, list):
        raise ReportError(f"{path}: not a pytest-vfiouser conformance report (no run or cases)")
    run = Run(path, data)
    for n, case in enumerate(cases):
        if not (
            isinstance(case, dict)
            and isinstance(case.get("id"), str)
            and isinstance(case.get("verdict"), str)
        ):
            raise ReportError(f"{path}: cases[{n}] has no string id and verdict")
        run.cases.setdefault(case["id"], case)
    return run


def _base_name(run: Run) -> str:
    info = run.data["run"]
    name = ((info.get("profile") or {}).get("name") or "").strip()
    if name.lower() not in _GENERIC_PROFILES:
        return name
    target = info.get("target") or {}
    if target.get("command_template"):
        return _program(str(target["command_template"]))
    return str(target.get("socket") or target.get("description") or run.path.stem)


def _program(command: str) -> str:
    """The server's program in a command line: its file name (past a Python interpreter)."""
    try:
        words = shlex.split(command)
    except ValueError:
        words = command.split()
    if len(words) > 1 and os.path.basename(words[0]).startswith("python"):
        words = words[1:]
        if words[0] == "-m" and len(words) > 1:
            return words[1]
    return os.path.basename(words[0]) if words else command


def name_runs(runs: list[Run]) -> None:
    """Implementation names: the profile's, else the command; equal names get their folder."""
    names = [_base_name(r) for r in runs]
    dup = {n for n, k in Counter(names).items() if k > 1}
    names = [
        f"{n} ({r.path.resolve().parent.name or r.path})" if n in dup else n
        for n, r in zip(names, runs, strict=True)
    ]
    seen: Counter = Counter()
    totals = Counter(names)
    for run, name in zip(runs, names, strict=True):
        seen[name] += 1
        run.name = f"{name} #{seen[name]}" if totals[name] > 1 else name


@dataclass
class Row:
    id: str
    section: str
    level: str
    requirement: str
    cells: list[dict | None]  # one case (or None) per run

    @property
    def verdicts(self) -> list[str]:
        return [c["verdict"] if c else MISSING for c in self.cells]

    @property
    def differs(self) -> bool:
        return len(set(self.verdicts)) > 1


@dataclass
class Comparison:
    runs: list[Run]
    sections: dict[str, list[Row]]  # section -> rows, the differing ones first

    @property
    def rows(self) -> list[Row]:
        return [row for rows in self.sections.values() for row in rows]

    @property
    def differing(self) -> list[Row]:
        return [row for row in self.rows if row.differs]


def compare(runs: list[Run], common: bool = False) -> Comparison:
    """The rows of every case (with ``common``: of the cases every run has)."""
    order: dict[str, None] = {}
    for run in runs:
        order.update(dict.fromkeys(run.cases))
    if common:
        order = {k: None for k in order if all(k in run.cases for run in runs)}
    by_section: dict[str, list[Row]] = {}
    for case_id in order:
        cells = [run.cases.get(case_id) for run in runs]
        first = next(c for c in cells if c)
        section = first.get("section") or "(no section)"
        row = Row(case_id, section, first.get("level") or "", first.get("requirement") or "", cells)
        by_section.setdefault(section, []).append(row)
    sections = {
        name: sorted(rows, key=lambda r: not r.differs)  # stable: report order otherwise
        for name, rows in sorted(by_section.items())
    }
    return Comparison(runs, sections)


# -- text


def render_text(cmp: Comparison, html_path: Path | None = None) -> str:
    runs = cmp.runs
    labels = [_label(n) for n in range(len(runs))]
    out = [f"vfio-user conformance: {len(runs)} implementations compared"]
    width = max(len(r.name) for r in runs)
    for label, r in zip(labels, runs, strict=True):
        counts = ", ".join(f"{n} {v}" for v, n in r.counted())
        out.append(
            f"  {label}  {r.name:<{width}}  {r.path}  ({len(r.cases)} cases: {counts or 'none'})"
        )
    differing = cmp.differing
    out.append(f"{len(cmp.rows)} cases, {len(differing)} differ")
    sw = max([len("section")] + [len(s) for s in cmp.sections])
    out.append(f"  {'section':<{sw}}  {'cases':>5}  {'differ':>6}")
    for name, rows in cmp.sections.items():
        out.append(f"  {name:<{sw}}  {len(rows):>5}  {sum(r.differs for r in rows):>6}")
    if differing:
        iw = max(len(r.id) for r in differing)
        vw = [
            max([len(labels[n])] + [len(r.verdicts[n]) for r in differing])
            for n in range(len(runs))
        ]
        out.append("differing cases:")
        out.append(
            f"  {'case':<{iw}}  "
            + "  ".join(f"{lab:<{w}}" for lab, w in zip(labels, vw, strict=True)).rstrip()
        )
        for row in differing:
            out.append(
                f"  {row.id:<{iw}}  "
                + "  ".join(f"{v:<{w}}" for v, w in zip(row.verdicts, vw, strict=True)).rstrip()
            )
    if html_path is not None:
        out.append(f"HTML: {html_path}")
    return "\n".join(out) + "\n"


def _label(n: int) -> str:
    """A, B, ..., Z, AA, AB, ..."""
    return _label(n // 26 - 1) + chr(65 + n % 26) if n >= 26 else chr(65 + n)


# -- HTML


_TONE_STYLE = tone_css(lambda tone, verdicts: f".{tone},.{tone} a")


def _href(path: Path, out_dir: Path) -> str:
    """``path`` relative to the directory ``out_dir``, as an href."""
    return quote(Path(os.path.relpath(path.resolve(), out_dir)).as_posix(), safe="/")


def _link(run: Run, case: dict, out_dir: Path) -> str | None:
    report = run.html
    if report is None:
        return None
    anchor = case.get("anchor") or case["id"]
    return _href(report, out_dir) + "#" + quote(anchor, safe="/:@,=+-._~")


def render_html(cmp: Comparison, out_path: Path) -> str:
    out_dir = out_path.resolve().parent
    runs = cmp.runs
    differing = cmp.differing
    e = escape

    run_rows = []
    for r in runs:
        info = r.data["run"]
        target = info.get("target") or {}
        negotiated = info.get("negotiated") or {}
        report = r.html
        report_cell = (
            f'<a href="{e(_href(report, out_dir))}">HTML report</a>'
            if report is not None
            else "(no HTML report)"
        )
        counts = ", ".join(f'<span class="{_tone(v)}">{n} {e(v)}</span>' for v, n in r.counted())
        command = target.get("command_template") or target.get("description") or ""
        profile = (info.get("profile") or {}).get("name") or ""
        started = str(info.get("started") or "")[:19].replace("T", " ")
        version = (
            f"{negotiated['major']}.{negotiated['minor']}" if "major" in negotiated else "(none)"
        )
        run_rows.append(
            f"<tr><th>{e(r.name)}</th>"
            f'<td>{report_cell} · <a href="{e(_href(r.path, out_dir))}">JSON</a></td>'
            f"<td><code>{e(str(command))}</code></td>"
            f"<td>{e(str(profile))}</td><td>{e(str(info.get('spec') or ''))}</td>"
            f"<td>{e(version)}</td><td>{e(str(info.get('suite_version') or ''))}</td>"
            f"<td>{e(started)}</td><td>{counts}</td></tr>"
        )

    section_rows = []
    for name, rows in cmp.sections.items():
        n_diff = sum(r.differs for r in rows)
        section_rows.append(
            f'<tr><th><a href="#section-{e(quote(name))}">{e(name)}</a></th><td>{len(rows)}</td>'
            f'<td class="{"bad" if n_diff else ""}">{n_diff}</td></tr>'
        )

    head = "".join(f'<th class="impl">{e(r.name)}</th>' for r in runs)
    bodies = []
    for name, rows in cmp.sections.items():
        n_diff = sum(r.differs for r in rows)
        lines = [
            f'<tbody id="section-{e(name)}" data-section="{e(name)}">'
            f'<tr class="section"><th colspan="{len(runs) + 2}">{e(name)}: {len(rows)} cases, '
            f"{n_diff} differ</th></tr>"
        ]
        for row in rows:
            cells = []
            for run, case in zip(runs, row.cells, strict=True):
                if case is None:
                    cells.append('<td class="v missing" title="not in this run">—</td>')
                    continue
                verdict = case["verdict"]
                title = (case.get("message") or "").strip()
                title = title if len(title) <= 300 else title[:297] + "..."
                link = _link(run, case, out_dir)
                text = f'<a href="{e(link)}">{e(verdict)}</a>' if link else e(verdict)
                cells.append(
                    f'<td class="v {_tone(verdict)}" data-verdict="{e(verdict)}"'
                    f' title="{e(title)}">{text}</td>'
                )
            css = "diff" if row.differs else "same"
            lines.append(
                f'<tr class="case {css}" data-case="{e(row.id)}">'
                f'<td class="id" title="{e(row.requirement)}">'
                f"{'≠ ' if row.differs else ''}{e(row.id)}</td><td>{e(row.level)}</td>"
                f"{''.join(cells)}</tr>"
            )
        lines.append("</tbody>")
        bodies.append("\n".join(lines))

    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>vfio-user conformance: comparison</title>
<style>
body{{font-family:Helvetica,Arial,sans-serif;font-size:13px;color:#222;margin:16px}}
table{{border-collapse:collapse;margin-bottom:14px}}
th,td{{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}}
thead th{{position:sticky;top:0;background:#f4f4f4}}
tr.section th{{background:#eef;font-size:14px;padding-top:8px}}
tr.diff td.id{{font-weight:bold}}
tr.diff{{background:#fff6e0}}
{_TONE_STYLE}
.missing{{color:#aaa}}
body.only-diff tr.same{{display:none}}
code{{font-size:12px}}
</style></head>
<body>
<h1>vfio-user conformance: {len(runs)} implementations compared</h1>
<p id="totals"><span id="n-cases">{len(cmp.rows)}</span> cases,
<span id="n-differ">{len(differing)}</span> differ
(a case differs when its verdict is not the same in every run; —: not in that run).
<label><input type="checkbox" id="only-diff"> show only the cases that differ</label></p>
<table id="runs"><thead><tr><th>implementation</th><th>reports</th><th>target</th>
<th>profile</th><th>spec</th><th>negotiated</th><th>suite</th><th>started</th><th>verdicts</th>
</tr></thead><tbody>{"".join(run_rows)}</tbody></table>
<table id="sections"><thead><tr><th>section</th><th>cases</th><th>differ</th></tr></thead>
<tbody>{"".join(section_rows)}</tbody></table>
<table id="matrix"><thead><tr><th>case</th><th>level</th>{head}</tr></thead>
{"".join(bodies)}
</table>
<script>
document.getElementById('only-diff').addEventListener('change',function(ev){{
document.body.classList.toggle('only-diff',ev.target.checked)}});
</script>
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vfio-user-conformance compare",
        description="Compare the JSON reports of several vfio-user-conformance runs "
        "(one per implementation): which cases' verdicts differ.",
    )
    parser.add_argument(
        "reports", nargs="+", metavar="REPORT.json", help="JSON reports (--vfu-json)"
    )
    parser.add_argument("--html", metavar="OUT.html", help="write the comparison matrix as HTML")
    parser.add_argument(
        "--common",
        action="store_true",
        help="compare only the cases every run has (leave out the others)",
    )
    parser.add_argument(
        "--fail-on-difference",
        action="store_true",
        help="exit with status 1 when some case differs",
    )
    args = parser.parse_args(argv)
    if len(args.reports) < 2:
        parser.error("give two or more JSON reports to compare")
    runs = []
    errors = []
    for path in args.reports:
        try:
            runs.append(load(path))
        except ReportError as exc:
            errors.append(str(exc))
    if errors:
        for message in errors:
            print(f"vfio-user-conformance compare: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    name_runs(runs)
    result = compare(runs, common=args.common)
    out = None
    if args.html:
        out = Path(args.html)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(render_html(result, out), encoding="utf-8")
        except OSError as exc:
            print(
                f"vfio-user-conformance compare: error: cannot write {out}: {exc}", file=sys.stderr
            )
            return EXIT_ERROR
    sys.stdout.write(render_text(result, out))
    return EXIT_DIFFERENT if args.fail_on_difference and result.differing else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
