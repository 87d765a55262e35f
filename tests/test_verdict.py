"""The verdict vocabulary is the reports' only one: the schema, the HTML report and compare
follow ``Verdict``; the case record crosses to the xdist controller as plain values."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import execnet
import pytest

from pytest_vfiouser.report import CaseRecord, HtmlReport, Records, Run, schema
from pytest_vfiouser.report import _compare as compare
from pytest_vfiouser.report import _html_page as html_page
from pytest_vfiouser.report._summary import result_text
from pytest_vfiouser.report._tones import TONE_FILLS, TONE_STYLES
from pytest_vfiouser.verdict import BY_SEVERITY, FAILING, VERDICTS, Verdict, in_report_order


def record(verdict: Verdict | None, nodeid: str = "t.py::test_x", **kw) -> CaseRecord:
    return CaseRecord(nodeid=nodeid, verdict=verdict, case_id="sec/x", section="sec", **kw)


def phase_report(rec: CaseRecord, when: str = "call") -> SimpleNamespace:
    report = SimpleNamespace(nodeid=rec.nodeid, when=when, outcome="failed", duration=0.5)
    rec.attach(report)
    return report


def test_the_schema_lists_the_verdicts_in_report_order():
    assert schema()["$defs"]["verdict"]["enum"] == [v.value for v in VERDICTS]


def test_severity():
    assert [v.rank for v in BY_SEVERITY] == sorted(v.rank for v in Verdict)
    assert len({v.rank for v in Verdict}) == len(Verdict)  # one order, no ties
    # Whatever fails the run outranks whatever does not; a crash outranks everything.
    assert min(v.rank for v in FAILING) > max(v.rank for v in Verdict if not v.fails_run)
    assert BY_SEVERITY[-1] is Verdict.CRASH and BY_SEVERITY[0] is Verdict.PASS
    assert Verdict.worst(["PASS", "NON-STRICT", Verdict.INFORMATIONAL]) is Verdict.NON_STRICT


def test_a_verdict_is_its_text():
    for v in Verdict:
        assert v == v.value and hash(v) == hash(v.value) and f"{v}" == str(v) == v.value
        assert {v.value: 1}[v] == 1
    assert in_report_order({"CRASH": 1, "ZZZ": 2, "FAIL": 3}) == ["FAIL", "CRASH", "ZZZ"]


def test_the_html_verdict_column_sorts_by_severity():
    report = HtmlReport(SimpleNamespace(option=SimpleNamespace(htmlpath=None)), state=None)
    keys = {}
    for v in reversed(VERDICTS):
        cells = ['<td class="col-result">x</td>', '<td class="col-links"></td>']
        report.pytest_html_results_table_row(phase_report(record(v)), cells)
        cell = cells[1]
        assert cell.startswith('<td class="col-verdict"') and cell.endswith(f">{v}</td>"), cell
        keys[v] = re.search(r">(.*)</td>", cell).group(1)  # pytest-html compares inner HTML text
    # pytest-html's initial sort is ascending: the most severe first.
    assert tuple(sorted(keys, key=keys.get)) == tuple(reversed(BY_SEVERITY))


def _rules(css: str) -> dict[str, str]:
    """selector -> declarations, of every rule of ``css``."""
    out = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        for selector in selectors.split(","):
            out[selector.strip()] = body
    return out


@pytest.mark.parametrize(
    ("css", "selector", "styles"),
    [
        (html_page.STYLE, lambda v: f".vfu-v-{v}", TONE_STYLES),
        (html_page.STYLE, lambda v: f".vfu-f-{v}", TONE_FILLS),  # the chart's shapes
        (compare._TONE_STYLE, lambda v: f".{v.tone}", TONE_STYLES),
    ],
    ids=["html", "html-chart", "compare"],
)
def test_every_verdict_has_its_tone_colour(css, selector, styles):
    rules = _rules(css)
    for v in Verdict:
        assert rules.get(selector(v)) == styles[v.tone], v


def test_compare_counts_in_report_order_and_colours_by_tone(tmp_path: Path):
    verdicts = [*(v.value for v in reversed(VERDICTS)), "SOMETHING-NEW"]  # texts, as in JSON
    cases = [{"id": f"sec/{n}", "section": "sec", "verdict": v} for n, v in enumerate(verdicts)]
    runs = []
    for name in ("a", "b"):
        run = Run(tmp_path / f"{name}.json", {"run": {"profile": {"name": name}}})
        run.cases = {c["id"]: c for c in cases}
        runs.append(run)
    compare.name_runs(runs)
    assert [v for v, _ in runs[0].counted()] == [*VERDICTS, "SOMETHING-NEW"]
    text = compare.render_text(compare.compare(runs))
    shown = ", ".join(f"1 {v}" for v in [*VERDICTS, "SOMETHING-NEW"])
    assert f"({len(cases)} cases: {shown})" in text
    page = compare.render_html(compare.compare(runs), tmp_path / "cmp.html")
    for v in VERDICTS:
        assert f'<td class="v {v.tone}" data-verdict="{v}"' in page
    assert '<td class="v " data-verdict="SOMETHING-NEW"' in page


def test_the_record_crosses_to_the_controller_as_plain_values():
    rec = record(
        Verdict.NON_STRICT,
        level="SHOULD",
        revisions=["0.9.1"],
        message="AssertionError",
        observations=["slow"],
        resources={"vfu_fds_after": 9},
        artifacts={"log": "/x/log.txt"},
    )
    data = rec.to_dict()
    assert type(data["verdict"]) is str
    assert execnet.loads(execnet.dumps(data)) == data  # what xdist's workers send
    back = CaseRecord.from_dict(data)
    assert back == rec and back.verdict is Verdict.NON_STRICT
    back.revisions.append("0.9.2")
    assert data["revisions"] == ["0.9.1"]  # a copy: the report keeps its own
    assert CaseRecord.of(phase_report(rec)) == rec
    assert CaseRecord.of(SimpleNamespace()) is None
    assert CaseRecord.from_dict(record(None).to_dict()).verdict is None


def test_records_collect_the_teardown_records():
    records = Records()
    for n, v in enumerate([Verdict.CRASH, Verdict.PASS, Verdict.FAIL]):
        rec = record(v, nodeid=f"t.py::test_{n}")
        for when in ("setup", "call", "teardown"):
            records.add(phase_report(rec, when))
    assert [c.verdict for c in records.cases] == [Verdict.CRASH, Verdict.PASS, Verdict.FAIL]
    assert [c.duration for c in records.cases] == [1.5, 1.5, 1.5]
    assert [c.nodeid for c in records.failing()] == ["t.py::test_0", "t.py::test_2"]
    assert result_text(records) == "FAILED (1 FAIL, 1 CRASH)"
    records.cases = records.with_verdict("PASS")
    assert result_text(records) == "passed (no FAIL, CRASH, HANG, ERROR among 1 cases)"
