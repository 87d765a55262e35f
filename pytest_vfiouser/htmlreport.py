"""Verdict and case id columns in pytest-html's results table (registered when --html is used)."""

from __future__ import annotations

from html import escape


def pytest_html_results_table_header(cells: list[str]) -> None:
    cells.insert(1, '<th class="sortable" data-column-type="verdict">Verdict</th>')
    cells.insert(2, '<th class="sortable" data-column-type="caseid">Case</th>')


def pytest_html_results_table_row(report, cells: list[str]) -> None:
    data = getattr(report, "vfu", None) or {}
    title = escape(data.get("message") or "", quote=True)
    cells.insert(1, f'<td class="col-verdict" title="{title}">{escape(data.get("verdict") or "")}</td>')
    cells.insert(2, f'<td class="col-caseid">{escape(data.get("case_id") or "")}</td>')
