"""The HTML report (pytest-html), in a real browser: headless Chromium driven by selenium.

The browser tests are skipped without /usr/bin/chromium and /usr/bin/chromedriver
(Debian: chromium, chromium-driver; .ci/run installs them).
"""

from __future__ import annotations

import html
import json
import re
from types import SimpleNamespace
from urllib.parse import quote

import pytest
from reports_support import (  # noqa: F401 (browser: a fixture)
    browser,
    failing_run,
    profiled_failing_run,
    reference_run,
)
from scriptservers import run, script_server

from pytest_vfiouser.report import CaseRecord, HtmlReport, plain_message
from pytest_vfiouser.report._html_requirements import group as group_requirements
from pytest_vfiouser.report._html_requirements import render as render_requirements
from pytest_vfiouser.report._tones import TONE_COLOURS
from pytest_vfiouser.verdict import Verdict

pytest_plugins = ["pytester"]

_MATRIX_JS = """
const out = {};
for (const tr of document.querySelectorAll('#vfu-matrix tbody tr')) {
  out[tr.dataset.section] = {};
  for (const td of tr.querySelectorAll('td[data-verdict]'))
    out[tr.dataset.section][td.dataset.verdict] = parseInt(td.textContent, 10);
}
return out;
"""
_LEVEL_RANK = {"MUST": 1, "SHOULD": 2, "MAY": 3}


def _blob(text: str) -> dict:
    return json.loads(html.unescape(re.search(r'data-jsonblob="(.*?)"', text, re.S).group(1)))


def _row(driver, case_id: str):
    # The locator strategies by name (selenium's By.ID, By.XPATH): selenium is optional.
    cell = driver.find_element("id", case_id)
    return cell, cell.find_element("xpath", "./ancestor::tbody")


def test_failures_stay_small_inline():
    """The wire logs (hex) and tracebacks of failures live in files, not in the page."""
    run = failing_run()
    text = run.html_path.read_text()
    tests = _blob(text)["tests"]
    logs = "\n".join(row["log"] for rows in tests.values() for row in rows)
    assert "    0000  " not in logs  # no hex dump inline
    assert "vfio-user wire log, connection 0" not in logs  # the section became an excerpt
    assert "&gt;&gt; DEVICE_GET_INFO command" in logs  # ... which is there
    assert "[traceback (" in logs and "full log</a>" in logs
    per_case = (len(text) - 40_000) / len(run.data["cases"])  # pytest-html's page is ~30 KB
    assert per_case < 5_000, f"{len(text)} bytes for {len(run.data['cases'])} cases"
    # The stable anchors: one id a case, its case id with parametrization.
    for case in run.data["cases"]:
        assert text.count(f"id=\\&#34;{html.escape(case['anchor'], quote=False)}\\&#34;") == 1, (
            case["anchor"]
        )


@pytest.mark.parametrize("get_run", [reference_run, failing_run], ids=["reference", "failing"])
def test_summary_matrix_and_run_facts(browser, get_run):  # noqa: F811
    run = get_run()
    browser.get(run.html_path.as_uri())
    matrix = browser.execute_script(_MATRIX_JS)
    summary = run.data["summary"]
    assert set(matrix) == set(summary["sections"]) | {"total"}
    for section, counts in [*summary["sections"].items(), ("total", summary["verdicts"])]:
        shown = matrix[section]
        assert shown.pop("total") == sum(counts.values())
        assert {v: n for v, n in shown.items() if n} == counts, section
        assert {"PASS", "FAIL"} <= set(shown)
    facts = {
        row.get_attribute("data-fact"): row.text
        for row in browser.find_elements("css selector", "#vfu-run tr")
    }
    info = run.data["run"]
    assert info["profile"]["name"] in facts["profile"]
    assert facts["spec revision"].endswith(info["spec"])
    assert info["suite_version"] in facts["suite"]
    assert "max_msg_fds" in facts["server capabilities"]
    assert info["target"]["command"] in facts["command"]
    assert ("FAILED" if info["failed"] else "passed") in facts["result"]
    headers = [
        th.get_attribute("data-column-type")
        for th in browser.find_elements("css selector", "#results-table-head th.sortable")
        if th.is_displayed()
    ]
    # pytest-html's Result column (the verdict in pytest's words) is there, hidden.
    assert headers[:4] == ["verdict", "caseid", "section", "level"] and "result" not in headers
    assert not browser.find_element("css selector", "td.col-result").is_displayed()


def test_failing_row_expanded_with_its_logs(browser):  # noqa: F811
    run = failing_run()
    browser.get(run.html_path.as_uri())
    case = run.case("device_info/pci-num-regions")
    cell, row = _row(browser, case["anchor"])
    assert "failed" in row.get_attribute("class").split()
    assert row.find_element("css selector", ".col-verdict").text == "FAIL"
    assert row.find_element("css selector", ".col-section").text == "device_info"
    assert row.find_element("css selector", ".col-level").text == "MUST"
    assert row.find_element("css selector", ".extras-row").is_displayed()  # failures are open
    requirement = row.find_element("css selector", ".vfu-req").text
    assert " ".join(case["requirement"].split()) in " ".join(requirement.split())
    # The message without pytest's "+ where" lines (those are in the full log).
    assert row.find_element("css selector", ".vfu-msg").text == "FAIL: assert 1 >= 9"
    assert "where" in case["message"]
    assert ">> DEVICE_GET_INFO command" in row.find_element("css selector", ".vfu-excerpt").text
    links = {
        a.get_attribute("data-log"): a.get_attribute("href")
        for a in row.find_elements("css selector", "td.col-links a")
    }
    assert set(links) == {"wire_log", "reproducer", "stderr", "log"}
    browser.get(links["wire_log"])  # follow the link: the file, with decoded messages and hex
    wire = browser.find_element("tag name", "body").text
    assert ">> DEVICE_GET_INFO command" in wire and "<< DEVICE_GET_INFO reply" in wire
    assert "0000  " in wire
    browser.get(links["stderr"])
    assert "import" in browser.find_element("tag name", "body").text

    browser.get(run.html_path.as_uri())  # the crash: its reproducer
    _, row = _row(browser, "device_info/no-reset-flag-reset-refused")
    assert row.find_element("css selector", ".col-verdict").text == "CRASH"
    assert row.find_element("css selector", ".extras-row").is_displayed()
    browser.get(row.find_element("css selector", "a[data-log=reproducer]").get_attribute("href"))
    assert "CONVERSATIONS" in browser.find_element("tag name", "body").text


def test_anchor_opens_a_collapsed_row(browser):  # noqa: F811
    run = reference_run()
    case = run.case("device_info/matches-profile[num_irqs]")
    assert case["verdict"] == "PASS"
    browser.get(run.html_path.as_uri())
    _, row = _row(browser, "device_info/reply-argsz")
    assert not row.find_element("css selector", ".extras-row").is_displayed()  # passed: collapsed
    browser.get(run.html_path.as_uri() + "#" + quote(case["anchor"]))
    browser.refresh()
    cell, row = _row(browser, case["anchor"])
    assert row.find_element("css selector", ".extras-row").is_displayed()
    assert row.find_element("css selector", ".vfu-req").text.startswith("Requirement:")
    assert browser.execute_script(
        "const r = arguments[0].getBoundingClientRect();"
        " return r.top >= 0 && r.bottom <= innerHeight;",
        cell,
    )


def test_level_and_verdict_columns_sort(browser):  # noqa: F811
    run = failing_run()
    browser.get(run.html_path.as_uri())
    for column, rank in (
        ("level", _LEVEL_RANK.get),
        ("verdict", lambda text: Verdict(text).rank),
    ):
        browser.find_element("css selector", f'th[data-column-type="{column}"]').click()
        ranks = [rank(td.text) for td in browser.find_elements("css selector", f"td.col-{column}")]
        assert len(set(ranks)) > 1 and ranks in (sorted(ranks), sorted(ranks, reverse=True)), ranks


# -- the picture, the filter, the requirements

_VISIBLE_ROWS_JS = """
return [...document.querySelectorAll('#results-table tbody.results-table-row')]
  .filter(tb => tb.offsetParent !== null)
  .map(tb => (tb.querySelector('td.col-caseid') || {}).textContent || '');
"""
_CHART_JS = """
const colour = c => { const e = document.createElement('i'); e.style.color = c;
  document.body.appendChild(e); const v = getComputedStyle(e).color; e.remove(); return v; };
const tones = arguments[0], out = [];
for (const g of document.querySelectorAll('#vfu-chart g.vfu-pick')) {
  const r = g.querySelector('rect'), box = r.getBoundingClientRect();
  out.push({section: g.dataset.section, verdict: g.dataset.verdict,
            title: g.querySelector('title').textContent, x: box.x, width: box.width,
            fill: getComputedStyle(r).fill, tones: Object.fromEntries(
              Object.entries(tones).map(([t, c]) => [t, colour(c)]))});
}
return out;
"""


def _visible(driver) -> list[str]:
    return driver.execute_script(_VISIBLE_ROWS_JS)


def _of_verdict(run, verdict: str, section: str | None = None) -> set[str]:
    return {
        c["id"]
        for c in run.data["cases"]
        if c["verdict"] == verdict and section in (None, c["section"])
    }


@pytest.mark.parametrize("get_run", [reference_run, failing_run], ids=["reference", "failing"])
def test_the_chart_comes_first_and_draws_the_counts(browser, get_run):  # noqa: F811
    run = get_run()
    browser.get(run.html_path.as_uri())
    chart = browser.find_element("id", "vfu-chart")
    assert chart.is_displayed() and chart.size["width"] > 400 and chart.size["height"] >= 40
    # A picture first: above pytest-html's environment, its summary and the table.
    for below in ("environment-header", "results-table"):
        assert chart.location["y"] < browser.find_element("id", below).location["y"], below
    assert not browser.find_element("id", "environment").is_displayed()  # folded
    parts = browser.execute_script(_CHART_JS, TONE_COLOURS)
    summary = run.data["summary"]
    for section, counts in [*summary["sections"].items(), ("total", summary["verdicts"])]:
        bar = [p for p in parts if p["section"] == section]
        cases = sum(counts.values())
        assert [p["verdict"] for p in bar] == sorted(counts, key=lambda v: -Verdict(v).rank)
        width = sum(p["width"] for p in bar)
        assert width > 300
        for p in bar:
            n = counts[p["verdict"]]
            assert p["title"].endswith(f": {n} {p['verdict']} of {cases}")
            assert abs(p["width"] / width - n / cases) < 0.01, p
            assert p["fill"] == p["tones"][Verdict(p["verdict"]).tone], p
        for a, b in zip(bar, bar[1:], strict=False):  # left to right, side by side
            assert abs(a["x"] + a["width"] - b["x"]) < 0.5, (a, b)


def test_a_matrix_cell_filters_the_rows(browser):  # noqa: F811
    run = profiled_failing_run()
    browser.get(run.html_path.as_uri())
    every = sorted(_visible(browser))
    assert set(every) == {c["id"] for c in run.data["cases"]}
    bar = browser.find_element("id", "vfu-filter")
    assert not bar.is_displayed()

    cell = browser.find_element(
        "css selector", '#vfu-matrix tr[data-section="device_info"] td[data-verdict="FAIL"]'
    )
    cell.click()
    fails = _of_verdict(run, "FAIL", "device_info")
    assert len(fails) == 3 and set(_visible(browser)) == fails
    assert bar.is_displayed()
    assert bar.text.startswith("Showing the rows of section device_info, FAIL: 3 cases")
    assert "vfu-on" in cell.get_attribute("class").split()
    # pytest-html redraws its table when it sorts: the filter stays.
    browser.find_element("css selector", 'th[data-column-type="caseid"]').click()
    assert set(_visible(browser)) == fails
    cell = browser.find_element(
        "css selector", '#vfu-matrix tr[data-section="device_info"] td[data-verdict="FAIL"]'
    )
    cell.click()  # again: every row
    assert sorted(_visible(browser)) == every and not bar.is_displayed()

    # The total row's cells: a verdict in every section; a part of the chart does as well.
    browser.find_element(
        "css selector", '#vfu-matrix tr[data-section="total"] td[data-verdict="UNIMPLEMENTED"]'
    ).click()
    assert set(_visible(browser)) == _of_verdict(run, "UNIMPLEMENTED")
    browser.find_element(
        "css selector", '#vfu-chart g[data-section="device_info"][data-verdict="CRASH"]'
    ).click()
    assert _visible(browser) == ["device_info/no-reset-flag-reset-refused"]
    bar.find_element("tag name", "button").click()  # "show every row"
    assert sorted(_visible(browser)) == every


def test_requirements_not_met_come_first_with_their_parametrizations(browser):  # noqa: F811
    run = profiled_failing_run()
    browser.get(run.html_path.as_uri())
    listing = browser.find_element("id", "vfu-requirements-list")
    assert listing.location["y"] < browser.find_element("id", "results-table").location["y"]
    assert listing.find_element("tag name", "p").text.startswith(
        "3 of 6 requirements not met (4 cases)"
    )
    entries = listing.find_elements("css selector", "details.vfu-rq")
    # The most severe first: the crash, then the two FAILs in the order they ran.
    assert [e.get_attribute("data-case") for e in entries] == [
        "device_info/no-reset-flag-reset-refused",
        "device_info/pci-num-regions",
        "device_info/matches-profile",
    ]
    entry = entries[2]
    params = [c for c in run.data["cases"] if c["case_id"] == "device_info/matches-profile"]
    head = entry.find_element("css selector", ".vfu-head").text
    assert head.startswith("FAIL device_info/matches-profile MUST")
    assert "3 parametrizations: 2 FAIL · 1 UNIMPLEMENTED" in head
    quote = entry.find_element("css selector", ".vfu-quote").text
    assert " ".join(quote.split()) == " ".join(params[0]["requirement"].split())
    first = next(c for c in params if c["verdict"] == "FAIL")
    assert entry.find_element("css selector", ".vfu-first").text == plain_message(first["message"])
    assert "where" in first["message"] and "where" not in plain_message(first["message"])
    # Its parametrizations, inside: each links to its row.
    items = entry.find_elements("css selector", "ul.vfu-params li")
    assert not items[0].is_displayed()  # closed
    entry.find_element("tag name", "summary").click()
    assert [li.text.split(" ", 1)[0] for li in items] == [c["verdict"] for c in params]
    links = [li.find_element("tag name", "a") for li in items]
    assert [a.text for a in links] == ["[flags]", "[num_regions]", "[num_irqs]"]
    links[1].click()
    target = browser.find_element("id", "device_info/matches-profile[num_regions]")
    assert (
        target.find_element("xpath", "./ancestor::tbody")
        .find_element("css selector", ".extras-row")
        .is_displayed()
    )
    # Its "rows" link filters the table to them.
    entry.find_element("css selector", "a.vfu-pick").click()
    assert sorted(_visible(browser)) == sorted(c["id"] for c in params)
    bar = browser.find_element("id", "vfu-filter")
    assert bar.text.startswith("Showing the rows of device_info/matches-profile: 3 cases")
    # The others, folded, one line each.
    rest = listing.find_element("css selector", "details.vfu-rest")
    assert rest.find_element("tag name", "summary").text == (
        "3 more requirements, every parametrization UNIMPLEMENTED or PASS"
    )
    rest.find_element("tag name", "summary").click()
    rest.find_element("css selector", 'li[data-case="device_info/reply-argsz"]').click()
    assert _visible(browser) == ["device_info/reply-argsz"]


def test_a_crash_shows_the_end_of_its_stderr(browser):  # noqa: F811
    run = failing_run()
    case = run.case("device_info/no-reset-flag-reset-refused")
    stderr = (run.reports / case["artifacts"]["stderr"]).read_text().splitlines()
    last = "scriptserver: assertion failed: command 13 aborts"
    assert stderr[-1] == last
    noise = next(line for line in stderr if line and not line.startswith("#"))
    browser.get(run.html_path.as_uri())
    _, row = _row(browser, case["anchor"])
    message = row.find_element("css selector", ".vfu-msg").text
    assert message.startswith("CRASH: server killed by SIGABRT") and "lines left out" in message
    assert message.splitlines()[-1].strip() == last  # what killed it, not the start-up noise
    assert noise.strip() not in message
    assert last in case["message"]  # the JSON's message keeps its end too


def test_rows_start_in_order_of_severity_and_skips_collapsed(browser):  # noqa: F811
    run = failing_run()
    browser.get(run.html_path.as_uri())
    verdicts = [
        td.text for td in browser.find_elements("css selector", "#results-table td.col-verdict")
    ]
    ranks = [Verdict(v).rank for v in verdicts]
    assert ranks == sorted(ranks, reverse=True) and verdicts[0] == "CRASH", verdicts
    for tbody in browser.find_elements("css selector", "#results-table tbody.results-table-row"):
        verdict = tbody.find_element("css selector", "td.col-verdict").text
        opened = tbody.find_element("css selector", ".extras-row").is_displayed()
        assert opened == (verdict not in ("PASS", "UNIMPLEMENTED")), verdict


# -- without a browser


def _record(case_id: str, verdict: Verdict, params: str = "", **kw) -> CaseRecord:
    name = f"test_{case_id.split('/')[1]}" + (f"[{params}]" if params else "")
    return CaseRecord(
        nodeid=f"conformance/test_x.py::{name}",
        verdict=verdict,
        case_id=case_id,
        section=case_id.split("/")[0],
        level="MUST",
        requirement=f"the words of {case_id}",
        **kw,
    )


def test_requirements_group_the_parametrizations():
    V = Verdict
    cases = [
        _record("s/met", V.PASS, "a"),
        _record(
            "s/params", V.FAIL, "a", message="AssertionError: first\nassert 0\n +  where 0 = x"
        ),
        _record("s/params", V.PASS, "b"),
        _record("s/params", V.FAIL, "c", message="second"),
        _record("s/should", V.NON_STRICT),
        _record("s/unjudged", V.UNIMPLEMENTED, "a"),
        _record("s/unjudged", V.PASS, "b"),
        _record("s/crash", V.CRASH),
        _record("s/fixed", V.FIXED),
        CaseRecord(nodeid="tests/test_other.py::test_not_a_case", verdict=V.FAIL),
    ]
    groups = group_requirements(cases)
    assert [g.case_id for g in groups] == [
        "s/crash",
        "s/params",
        "s/should",
        "s/met",
        "s/unjudged",
        "s/fixed",
    ]
    params = groups[1]
    assert params.verdict is V.FAIL and params.not_met
    assert params.counts() == [(V.FAIL, 2), (V.PASS, 1)]
    assert [g.not_met for g in groups] == [True, True, True, False, False, False]
    page = render_requirements(groups)
    assert "3 of 6 requirements not met (4 cases)" in page
    assert "3 parametrizations: 2 FAIL · 1 PASS" in page
    assert '<div class="vfu-first">first</div>' in page  # its first FAIL's, plain
    assert '<a href="#s/params%5Bc%5D">[c]</a> <span class="vfu-m">second</span>' in page
    assert "3 more requirements, every parametrization UNIMPLEMENTED, FIXED or PASS" in page
    assert "Every one of the 1 requirements judged is met." in render_requirements(
        group_requirements(cases[:1])
    )


def test_a_row_carries_its_case_final_verdict():
    """A case that passed its call and crashed at teardown: both rows are the CRASH's."""
    report = HtmlReport(SimpleNamespace(option=SimpleNamespace(htmlpath=None)), state=None)
    call = _record("s/x", Verdict.PASS)
    final = _record("s/x", Verdict.CRASH, message="server killed by SIGSEGV")
    reports = {}
    for when, rec in (("call", call), ("teardown", final)):
        reports[when] = SimpleNamespace(nodeid=rec.nodeid, when=when, outcome="failed")
        rec.attach(reports[when])
    report.pytest_runtest_logreport(reports["teardown"])  # before pytest-html makes the rows
    cells = {}
    for when in ("call", "teardown"):
        cells[when] = ['<td class="col-result">x</td>', '<td class="col-links"></td>']
        report.pytest_html_results_table_row(reports[when], cells[when])
    assert " data-final=CRASH>" in cells["call"][1] and cells["call"][1].endswith(">PASS</td>")
    assert "data-final" not in cells["teardown"][1]
    assert cells["teardown"][1].endswith(">CRASH</td>")


_SKIPPING_CASES = """
import pytest
from pytest_vfiouser import case, MUST

@case("alpha/skips", MUST)
def test_skips():
    pytest.skip("needs profile: device.flags")

@case("alpha/passes", MUST)
def test_passes():
    pass
"""


def test_under_plain_pytest_too_skips_start_collapsed_and_verdicts_sort(pytester):
    """pytest --html (not vfio-user-conformance, which says so on its command line)."""
    pytester.makepyfile(_SKIPPING_CASES)
    result = run(pytester, "--vfu-server", script_server(pytester.path), "--html=r.html")
    result.assert_outcomes(passed=1, skipped=1)
    blob = _blob((pytester.path / "r.html").read_text())
    assert blob["renderCollapsed"] == ["passed", "skipped"]  # UNIMPLEMENTED, NOT-RUN too
    assert blob["initialSort"] == "verdict"
    # What the user says wins.
    server = script_server(pytester.path)
    ini = ("-o", "initial_sort=duration", "-o", "render_collapsed=failed")
    run(pytester, "--vfu-server", server, "--html=r.html", *ini)
    blob = _blob((pytester.path / "r.html").read_text())
    assert blob["renderCollapsed"] == ["failed"] and blob["initialSort"] == "duration"
