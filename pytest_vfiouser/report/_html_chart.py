"""The picture at the top of the HTML report: the verdicts of each spec section as a
stacked bar (inline SVG, no script needed to draw it).

Each bar is one section's cases (the first bar: all of them), split by verdict, the
most severe on the left, each part in its verdict's tone (``Verdict.tone``) with its
count written in it where it fits. A part (``[data-section][data-verdict]``, class
``vfu-pick``) is what the page's script filters the table by when it is clicked; the
legend's keys filter by verdict alone.
"""

from __future__ import annotations

from collections import Counter
from html import escape

from pytest_vfiouser.verdict import BY_SEVERITY

from ._tones import TONE_FILLS, tone_css

__all__ = ["CHART_CSS", "TOTAL", "chart"]

TOTAL = "total"  # the section of the first bar (and of the matrix's last row): every section
LABEL_WIDTH = 130
BAR_WIDTH = 520
COUNT_WIDTH = 60
ROW_HEIGHT = 20
BAR_HEIGHT = 15
DIGIT_WIDTH = 7  # px a digit of the 11 px font takes, about: whether a count fits in its part
_ORDER = tuple(reversed(BY_SEVERITY))  # the most severe first: failures show at the left

CHART_CSS = """.vfu-chart{display:block;margin:4px 0}
.vfu-chart text{font:11px Helvetica,Arial,sans-serif;dominant-baseline:central}
.vfu-chart .vfu-all text.vfu-name{font-weight:bold}
.vfu-chart g.vfu-pick rect{stroke:#fff;stroke-width:1}
.vfu-chart g.vfu-pick text{fill:#fff;text-anchor:middle;pointer-events:none}
.vfu-chart g.vfu-pick:hover rect{opacity:.8}
.vfu-chart text.vfu-count{fill:#666}
.vfu-legend{margin:2px 0 8px;font-size:12px}
.vfu-legend .vfu-key{margin-right:12px;white-space:nowrap}
.vfu-legend svg{vertical-align:-1px;margin-right:3px}
""" + tone_css(lambda tone, verdicts: ",".join(f".vfu-f-{v}" for v in verdicts), TONE_FILLS)


def chart(sections: dict[str, Counter], total: Counter) -> str:
    """The SVG chart (one bar for ``total``, then one a section) and its legend."""
    rows = [(TOTAL, "all sections", total), *((name, name, c) for name, c in sections.items())]
    height = ROW_HEIGHT * len(rows)
    width = LABEL_WIDTH + BAR_WIDTH + COUNT_WIDTH
    bars = "".join(_bar(i, *row) for i, row in enumerate(rows))
    svg = (
        f'<svg id="vfu-chart" class="vfu-chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" aria-label="verdicts by spec section">{bars}</svg>'
    )
    keys = "".join(
        f'<span class="vfu-key vfu-pick" data-section="{TOTAL}" data-verdict="{v}" '
        f'title="show the rows of every {v}">'
        f'<svg width="10" height="10"><rect class="vfu-f-{v}" width="10" height="10"/></svg>'
        f"{v} {total[v]}</span>"
        for v in _ORDER
        if total[v]
    )
    return svg + f'<div class="vfu-legend">{keys}</div>'


def _bar(row: int, section: str, label: str, counts: Counter) -> str:
    y = row * ROW_HEIGHT
    middle = y + ROW_HEIGHT / 2
    cases = sum(counts.values())
    parts = []
    x = float(LABEL_WIDTH)
    for verdict in _ORDER:
        n = counts.get(verdict, 0)
        if not n:
            continue
        w = BAR_WIDTH * n / cases
        text = (
            f'<text x="{x + w / 2:.1f}" y="{middle:.1f}">{n}</text>'
            if w >= DIGIT_WIDTH * len(str(n)) + 4
            else ""
        )
        where = "all sections" if section == TOTAL else escape(section)
        parts.append(
            f'<g class="vfu-pick" data-section="{escape(section)}" data-verdict="{verdict}">'
            f"<title>{where}: {n} {verdict} of {cases}</title>"
            f'<rect class="vfu-f-{verdict}" x="{x:.1f}" y="{y + (ROW_HEIGHT - BAR_HEIGHT) / 2:.1f}"'
            f' width="{w:.1f}" height="{BAR_HEIGHT}"/>{text}</g>'
        )
        x += w
    css = ' class="vfu-all"' if section == TOTAL else ""
    return (
        f'<g{css} data-section="{escape(section)}">'
        f'<text class="vfu-name" x="0" y="{middle:.1f}">{escape(label)}</text>{"".join(parts)}'
        f'<text class="vfu-count" x="{LABEL_WIDTH + BAR_WIDTH + 6}" y="{middle:.1f}">{cases}</text>'
        "</g>"
    )
