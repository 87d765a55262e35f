"""The HTML report (pytest-html), in a real browser: headless Chromium driven by selenium.

The browser tests are skipped without /usr/bin/chromium and /usr/bin/chromedriver
(Debian: chromium, chromium-driver; .ci/run installs them).
"""

from __future__ import annotations

import html
import json
import re
from urllib.parse import quote

import pytest
from reports_support import browser, failing_run, reference_run  # noqa: F401 (browser: a fixture)

from pytest_vfiouser.verdict import Verdict

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
    ]
    assert headers[:5] == ["result", "verdict", "caseid", "section", "level"]


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
    assert row.find_element("css selector", ".vfu-msg").text.startswith("FAIL: AssertionError")
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
