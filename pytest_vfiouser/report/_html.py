"""The HTML report: pytest-html 4, with the suite's verdicts (registered when --html is used).

* At the top, above pytest-html's environment and summary (``.vfu-summary``):
  the verdicts by spec section as a chart (``svg#vfu-chart``, _html_chart.py)
  and as a matrix (``table#vfu-matrix``, cells ``td[data-verdict]`` in rows
  ``tr[data-section]``); what was tested (``table#vfu-run``): the target's
  command, negotiated version and capabilities, profile, spec revision, suite
  version, start time; the requirements, not met first, each with its
  parametrizations (``#vfu-requirements-list``, _html_requirements.py).
* A click on a matrix cell, a part of the chart or a requirement's "rows" link
  filters the table to those rows (the page's script, _html_page.py).
* Columns Verdict, Case, Section and Level (sortable: verdicts by severity,
  the most severe first, which is the initial order; levels MUST, SHOULD, MAY)
  beside pytest-html's Test, Duration, Links. Its Result column (pytest's
  outcome: the verdict again, in other words) is hidden, not removed: its
  filters and sorts read it.
* Each row's details: the requirement the case checks; for a case that did
  not pass, the verdict's message (without pytest's assertion clutter; a long
  one keeps its start and its end, where a crash's stderr has the assertion
  that killed the server), links to its log files (wire log, reproducer,
  server stderr, full pytest text; artifacts.py writes them beside the
  report) and a short excerpt of the wire log, instead of the whole logs
  inline: the report stays small however many cases fail.
* A stable anchor per case: its Case cell has ``id="<case key>"``
  (``conformance.html#dma/map-overlap-eexist``, ``...#region_info/mmap-fd[region0]``);
  opening such a link expands the row and scrolls to it.
"""

from __future__ import annotations

import datetime as _dt
import json
from html import escape
from pathlib import Path
from urllib.parse import quote

import pytest

from pytest_vfiouser import __version__
from pytest_vfiouser.verdict import Verdict

from ._artifacts import case_key, html_path, junit_path, relative
from ._html_chart import TOTAL, chart
from ._html_page import FILTER_BAR, SCRIPT, STYLE
from ._html_requirements import group as group_requirements
from ._html_requirements import render as render_requirements
from ._messages import clip_message, plain_message
from ._records import CaseRecord
from ._summary import columns as verdict_columns
from ._summary import combine_targets, result_text, sigterm_text

FAIL, PASS = Verdict.FAIL, Verdict.PASS

__all__ = ["HtmlReport", "href", "sort_key"]

_LEVEL_RANK = {"MUST": 1, "SHOULD": 2, "MAY": 3}
_ARTIFACT_LABELS = (
    ("wire_log", "wire log"),
    ("reproducer", "repro.py"),
    ("stderr", "stderr"),
    ("log", "full log"),
)
LOG_LIMIT = 1200  # characters of each inline log part (its end is kept; the whole: log.txt)
MESSAGE_LIMIT = 600
TITLE_LIMIT = 120
EXCERPT_LINES = 6  # decoded wire log lines, per connection
EXCERPT_WIDTH = 160
_WIRE_SECTION = "vfio-user wire log, connection"
_NO_LOG = "No log output captured."


def href(path: str) -> str:
    """A relative path as an href (each segment percent-encoded)."""
    return quote(path, safe="/")


_TOP_RANK = max(v.rank for v in Verdict)


def sort_key(verdict: Verdict | None) -> str:
    """What orders a Verdict cell: pytest-html sorts by the cell's inner HTML, so a leading
    comment holding how far the verdict is from the most severe one, zero-padded (the sort
    compares text, and "10" must come after "9"): its initial (ascending) sort shows the
    most severe first."""
    return f"<!--{_TOP_RANK - verdict.rank:03d}-->" if verdict else ""


class HtmlReport:
    """pytest-html hook implementations; one instance per run (registered by the plugin)."""

    def __init__(self, config: pytest.Config, state):
        self.config = config
        self.state = state  # the plugin's RunState: settings, records, target summaries
        path = html_path(config)
        self.directory = path.parent if path is not None else Path.cwd()
        self.final: dict[str, CaseRecord] = {}  # nodeid -> its teardown's record (final verdict)
        self.anchored: set[str] = set()
        self.requirements: dict[str, str] = {}  # case id -> requirement text (once: rows share it)

    # -- bookkeeping: runs before pytest-html's own (trylast) logreport, which makes the rows
    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        record = CaseRecord.of(report)
        if report.when == "teardown" and record is not None:
            self.final[report.nodeid] = record
            if record.case_id and record.requirement:
                self.requirements.setdefault(record.case_id, record.requirement)

    def _records(self, report) -> tuple[CaseRecord | None, CaseRecord | None]:
        """The phase's record, and the case's final one (until its teardown: the phase's)."""
        phase = CaseRecord.of(report)
        return phase, self.final.get(report.nodeid, phase)

    # -- pytest-html hooks
    def pytest_html_report_title(self, report) -> None:
        profile = self.state.settings.profile.name
        report.title = (
            "vfio-user conformance report"
            if profile in ("none", "unnamed")
            else f"vfio-user conformance: {profile}"
        )
        # The ini's defaults (``report`` is pytest-html's data): our Verdict column sorts
        # (the most severe first), and UNIMPLEMENTED and NOT-RUN rows (skipped) start
        # collapsed like the passed ones.
        if self.config.getini("initial_sort") == "result":
            report.set_data("initialSort", "verdict")
        if self.config.getini("render_collapsed") == "passed":
            report.set_data("renderCollapsed", ["passed", "skipped"])

    def pytest_html_results_table_header(self, cells: list[str]) -> None:
        cells[1:1] = [
            '<th class="sortable" data-column-type="verdict">Verdict</th>',
            '<th class="sortable" data-column-type="caseid">Case</th>',
            '<th class="sortable" data-column-type="section">Section</th>',
            '<th class="sortable" data-column-type="level">Level</th>',
        ]

    def pytest_html_results_table_row(self, report, cells: list[str]) -> None:
        phase, final = self._records(report)
        verdict = phase.verdict if phase is not None else None
        if verdict is None and final is not None and report.when == "call":
            verdict = final.verdict
        case_id = final.case_id if final is not None else None
        key = case_key(case_id, report.nodeid) if final is not None else ""
        id_attr = ""
        # The anchor goes on the first row pytest-html shows (passed setup/teardown rows are not).
        shown = report.when in ("call", "collect") or report.outcome != "passed"
        if case_id and shown and report.nodeid not in self.anchored:
            self.anchored.add(report.nodeid)
            id_attr = f' id="{escape(key)}"'
        message = phase.message if phase is not None else ""
        if not message and final is not None and verdict == final.verdict:
            message = final.message
        # One line: pytest-html reads a cell's sort value with a regular expression without DOTALL.
        title = escape(_clip(" ".join(plain_message(message).split()), TITLE_LIMIT))
        title = f' title="{title}"' if title else ""
        # The filters go by the case's final verdict (a passing call of a case that crashed
        # at teardown is among the CRASH rows); said only where the row shows another.
        final_verdict = final.verdict if final is not None else None
        final_attr = (
            f" data-final={final_verdict}" if final_verdict and final_verdict != verdict else ""
        )
        level = (final.level if final is not None else None) or ""
        section = (final.section if final is not None else None) or ""
        level_key = f"<!--{_LEVEL_RANK[level]}-->" if level in _LEVEL_RANK else ""
        cells[1:1] = [
            # its colour: the page's script
            f'<td class="col-verdict"{title}{final_attr}>'
            f"{sort_key(verdict)}{escape(verdict or '')}</td>",
            f'<td class="col-caseid"{id_attr}>{escape(key if case_id else "")}</td>',
            f'<td class="col-section">{escape(section)}</td>',
            f'<td class="col-level">{level_key}{escape(level)}</td>',
        ]
        links = self._links(final.artifacts if final is not None else {})
        if links and cells[-1].endswith("</td>"):
            cells[-1] = cells[-1][: -len("</td>")] + links + "</td>"

    def pytest_html_results_table_html(self, report, data: list[str]) -> None:
        """The row's details (``data``: pytest-html's escaped log parts, joined in the log box)."""
        phase, final = self._records(report)
        if final is None:
            return
        artifacts = final.artifacts
        verdict = (phase.verdict if phase is not None else None) or final.verdict
        # The requirement is not repeated here: the page's script shows it from
        # one table (#vfu-requirements) in every row of the case.
        detail = []
        if final.requirement and not final.case_id:
            detail.append(
                '<div class="vfu-req"><span class="vfu-label">Requirement:</span> '
                + _lines(final.requirement)
                + "</div>"
            )
        message = phase.message if phase is not None else ""
        if verdict and verdict != PASS and message:
            detail.append(
                f'<div class="vfu-msg"><span class="vfu-label vfu-v-{escape(verdict)}">'
                f"{escape(verdict)}:</span> "
                f"{_lines(clip_message(plain_message(message), MESSAGE_LIMIT))}</div>"
            )
        # The links to the log files are in the Links column; the wire log's also here.
        excerpt = _wire_excerpt(report) if verdict != PASS else ""
        if excerpt:
            wire = artifacts.get("wire_log")
            whole = (
                f'; <a class="vfu-log" target="_blank" data-log="wire_log" href="'
                f'{escape(href(relative(wire, self.directory)))}">the whole wire log</a>, with hex'
                if wire
                else ""
            )
            detail.append(
                f'<div class="vfu-label">Wire log (its last messages{whole}):</div>'
                f'<pre class="vfu-excerpt">\n{escape(excerpt)}\n</pre>'
            )
        log_href = relative(artifacts["log"], self.directory) if artifacts.get("log") else None
        longrepr = escape(report.longreprtext) + "\n" if report.longreprtext else None
        keep = []
        for part in data:
            if part == _NO_LOG and detail:
                continue
            if part == longrepr and message and verdict != PASS:
                if report.skipped and not hasattr(report, "wasxfail"):
                    continue  # the skip reason: the message above
                # The message above says what failed; the traceback is in log.txt.
                keep.append(_traceback_stub(part, log_href))
                continue
            if _WIRE_SECTION in part[:120] and "wire_log" in artifacts:
                continue  # the excerpt above and the wire.txt file replace it
            keep.append(_clip_log(part, log_href))
        data[:] = ([f'<div class="vfu-detail">{"".join(detail)}</div>'] if detail else []) + keep

    def pytest_html_results_summary(
        self, prefix: list, summary: list, postfix: list, session
    ) -> None:
        state = self.state
        requirements = json.dumps(self.requirements, sort_keys=True, separators=(",", ":"))
        prefix.append(
            STYLE
            + '<script type="application/json" id="vfu-requirements">'
            + requirements.replace("<", "\\u003c")
            + "</script>"
            + SCRIPT
            + self._summary(state, combine_targets(state.target_summaries))
        )
        postfix.append(FILTER_BAR)

    # -- parts
    def _links(self, artifacts: dict) -> str:
        out = []
        for name, label in _ARTIFACT_LABELS:
            if artifacts.get(name):
                path = href(relative(artifacts[name], self.directory))
                out.append(
                    f'<a class="vfu-log" target="_blank" href="{escape(path)}" data-log="{name}">'
                    f"{label}</a>"
                )
        return " ".join(out)

    def _summary(self, state, targets: dict) -> str:
        records = state.records
        sections = records.by_section()
        total = records.counts()
        columns = verdict_columns(total)
        head = "".join(f'<th class="vfu-v-{v}">{v}</th>' for v in columns)
        rows = []
        # A cell that counts some case filters the table to them (the page's script).
        for name, counts in [*sections.items(), (TOTAL, total)]:
            cells = "".join(
                f'<td data-verdict="{v}" class={"vfu-pick" if counts.get(v) else "vfu-zero"}>'
                f"{counts.get(v, 0)}</td>"
                for v in columns
            )
            css = ' class="vfu-total"' if name == TOTAL else ""
            rows.append(
                f'<tr data-section="{escape(name)}"{css}><th>{escape(name)}</th>{cells}'
                f'<td data-verdict="{TOTAL}" class=vfu-pick>{sum(counts.values())}</td></tr>'
            )
        matrix = (
            f'<table id="vfu-matrix" class="vfu-matrix" title="a cell shows its rows">'
            f"<thead><tr><th>section</th>{head}"
            f"<th>total</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )

        settings = state.settings
        profile = settings.profile
        interrupted = getattr(state, "interrupted", None)
        tone = FAIL if records.failing() or interrupted else PASS
        result = f'<span class="vfu-v-{tone}">{escape(result_text(records, interrupted))}</span>'
        negotiated = targets.get("negotiated")
        started = _dt.datetime.fromtimestamp(state.started_at, _dt.timezone.utc).isoformat(
            timespec="seconds"
        )
        facts = [
            ("result", result),
            *([("interrupted", escape(interrupted["reason"]))] if interrupted else []),
            ("target", escape(targets.get("target") or state.manager.describe())),
            (
                "command",
                f"<code>{escape(targets.get('command') or settings.command_text or '')}</code>",
            ),
            (
                "profile",
                escape(profile.name)
                + (f" (<code>{escape(str(profile.path))}</code>)" if profile.path else ""),
            ),
            ("spec revision", escape(settings.spec)),
            (
                "negotiated version",
                escape(f"{negotiated['major']}.{negotiated['minor']}") if negotiated else "(none)",
            ),
            (
                "server capabilities",
                f"<code>{escape(json.dumps(negotiated.get('capabilities'), sort_keys=True))}</code>"
                if negotiated
                else "(none)",
            ),
            ("suite", f"pytest-vfiouser {escape(__version__)}"),
            ("started", escape(started)),
            (
                "settings",
                escape(
                    f"restart {settings.restart}; timeout {settings.timeout:g} s"
                    f"{'; strict' if settings.strict else ''}"
                    + (f"; sections {', '.join(settings.sections)}" if settings.sections else "")
                ),
            ),
        ]
        if settings.socket is None:
            facts.append(("SIGTERM", escape(sigterm_text(targets.get("sigterm", {})))))
        notes = ([targets["persistence_note"]] if targets.get("persistence_note") else []) + list(
            targets.get("notes", [])
        )
        for note in notes:
            facts.append(("note", escape(note.splitlines()[0])))
        reports = []
        if settings.json_path is not None:
            reports.append(
                f'<a href="{escape(href(relative(settings.json_path, self.directory)))}">JSON</a>'
            )
        junit = junit_path(self.config)
        if junit is not None:
            reports.append(
                f'<a href="{escape(href(relative(junit, self.directory)))}">JUnit XML</a>'
            )
        if reports:
            facts.append(("other reports", " · ".join(reports)))
        run = "".join(
            f'<tr data-fact="{escape(k)}"><th>{escape(k)}</th><td>{v}</td></tr>' for k, v in facts
        )
        return (
            '<div class="vfu-summary"><h2>Verdicts by spec section</h2>'
            f'<div class="vfu-picture"><div>{chart(sections, total)}</div>{matrix}</div>'
            f'<h2>What was tested</h2><table id="vfu-run" class="vfu-run">{run}</table>'
            f"<h2>Requirements</h2>{render_requirements(group_requirements(records.cases))}"
            "</div>"
        )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _lines(text: str) -> str:
    return "<br>".join(escape(line) for line in text.splitlines())


def _clip_log(part: str, log_href: str | None) -> str:
    """Keep the end of a long (escaped) log part, cut at a line start."""
    if len(part) <= LOG_LIMIT:
        return part
    cut = part.find("\n", len(part) - LOG_LIMIT)
    cut = cut + 1 if cut >= 0 else len(part) - LOG_LIMIT
    where = (
        f' <a class="vfu-log" target="_blank" href="{escape(href(log_href))}">full log</a>'
        if log_href
        else ""
    )
    return (
        f'<span class="vfu-cut">[{cut} characters before this point omitted;{where}]</span>\n'
        + part[cut:]
    )


def _traceback_stub(part: str, log_href: str | None) -> str:
    """The last line of an (escaped) traceback (where it failed), and a link to all of it."""
    lines = [line for line in part.splitlines() if line.strip()]
    link = (
        f'<a class="vfu-log" target="_blank" href="{escape(href(log_href))}">full log</a>'
        if log_href
        else "not kept"
    )
    return (
        f'<span class="vfu-cut">[traceback ({len(lines)} lines): {link}]</span>\n'
        + (lines[-1] if lines else "")
        + "\n"
    )


def _wire_excerpt(report) -> str:
    """The last decoded lines (no hex) of each connection's wire log section."""
    out = []
    for header, content in getattr(report, "sections", ()):
        if not header.startswith(_WIRE_SECTION):
            continue
        lines = [line for line in content.splitlines() if line and not line.startswith(" ")]
        out.append(
            f"-- {header[len('vfio-user wire log, ') :]}"
            + (f" (last {EXCERPT_LINES} of {len(lines)})" if len(lines) > EXCERPT_LINES else "")
        )
        out += [_clip(line, EXCERPT_WIDTH) for line in lines[-EXCERPT_LINES:]]
    return "\n".join(out)
