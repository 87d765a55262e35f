"""The HTML report's list of requirements: the cases grouped by their case id.

pytest-html's table has a row a test; a requirement (one case id, ``CaseRecord.case_id``)
often has several parametrizations, and 82 failing rows may be 33 requirements. This
list, above the table, has one entry a requirement:

* first those with a parametrization not met (a verdict in the tone ``bad``, ``warn`` or
  ``info``: it fails the run, or a SHOULD or MAY is not met, or a baseline expects it),
  the most severe first, each with its verdict (its parametrizations' worst), their
  count by verdict, the spec's words it rests on, the first message of that verdict,
  and (opened) its parametrizations, each linking to its row;
* then, folded, the others (every parametrization PASS, FIXED, UNIMPLEMENTED, NOT-RUN),
  one line each, in the order they ran.

A requirement's "rows" link, or its line (``[data-case]``, class ``vfu-pick``), makes
the page's script filter the table to its rows; the script also writes the spec's
words (``.vfu-quote``) from the table every row's details read them from.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from html import escape
from urllib.parse import quote

from pytest_vfiouser.verdict import BY_SEVERITY, Verdict

from ._artifacts import case_key
from ._messages import clip_message, plain_message
from ._records import CaseRecord

__all__ = ["NOT_MET", "REQUIREMENTS_CSS", "Requirement", "group", "render"]

NOT_MET = frozenset(v for v in Verdict if v.tone in ("bad", "warn", "info"))
FIRST_MESSAGE_LIMIT = 400
ROW_MESSAGE_LIMIT = 120
_ANCHOR_SAFE = "/:@,=+-._~"  # a case key's characters that stay as they are in a link

REQUIREMENTS_CSS = """.vfu-reqs{margin:4px 0 10px}
.vfu-reqs details.vfu-rq{border-top:1px solid #eee;padding:2px 0}
.vfu-reqs summary{cursor:pointer;list-style-position:outside;margin-left:14px}
.vfu-rq .vfu-head b{font-weight:bold}
.vfu-reqs .vfu-n,.vfu-reqs .vfu-lvl{color:#666}
.vfu-rq .vfu-quote,.vfu-rq .vfu-first{white-space:nowrap;overflow:hidden;text-overflow:ellipsis;
max-width:1200px;font-size:12px}
.vfu-rq .vfu-quote{color:#555;font-style:italic}
.vfu-rq[open] .vfu-quote,.vfu-rq[open] .vfu-first{white-space:pre-wrap}
.vfu-rq ul,.vfu-rest ul{margin:2px 0 4px;padding-left:28px;font-size:12px}
.vfu-rq li .vfu-m{color:#555}
a.vfu-pick{color:#36c;cursor:pointer;font-size:12px}
.vfu-rest{margin-top:6px}
.vfu-rest summary{cursor:pointer;color:#444}
.vfu-rest li.vfu-pick:hover{background:#eef3ff}
"""


@dataclass
class Requirement:
    """The cases of one case id, in the order they ran."""

    case_id: str
    section: str
    level: str
    text: str  # the spec's words (the case's requirement)
    cases: list[CaseRecord] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        """The worst of its cases'."""
        return Verdict.worst(c.verdict for c in self.cases)

    @property
    def not_met(self) -> bool:
        return any(c.verdict in NOT_MET for c in self.cases)

    def counts(self) -> list[tuple[Verdict, int]]:
        """(verdict, how many of its cases), the most severe first."""
        counts = Counter(c.verdict for c in self.cases)
        return [(v, counts[v]) for v in reversed(BY_SEVERITY) if counts[v]]


def group(cases: list[CaseRecord]) -> list[Requirement]:
    """The requirements of ``cases`` (those with a case id): those not met first, the most
    severe first; each verdict's, and the others, in the order they ran."""
    by_id: dict[str, Requirement] = {}
    for c in cases:
        if not c.case_id:
            continue
        req = by_id.get(c.case_id)
        if req is None:
            req = by_id[c.case_id] = Requirement(
                c.case_id, c.section or "", c.level or "", c.requirement
            )
        req.cases.append(c)
    return sorted(by_id.values(), key=lambda r: (0, -r.verdict.rank) if r.not_met else (1, 0))


def render(requirements: list[Requirement]) -> str:
    """The list's HTML (``div#vfu-requirements-list``)."""
    not_met = [r for r in requirements if r.not_met]
    others = [r for r in requirements if not r.not_met]
    rows = sum(sum(1 for c in r.cases if c.verdict in NOT_MET) for r in not_met)
    if not_met:
        head = (
            f"{len(not_met)} of {len(requirements)} requirements not met "
            f"({rows} {'case' if rows == 1 else 'cases'}), the most severe first; "
            "open one for its parametrizations."
        )
    else:
        head = f"Every one of the {len(requirements)} requirements judged is met."
    out = [f'<div id="vfu-requirements-list" class="vfu-reqs"><p>{escape(head)}</p>']
    out += [_entry(r) for r in not_met]
    if others:
        verdicts = sorted({c.verdict for r in others for c in r.cases}, key=lambda v: -v.rank)
        out.append(
            f'<details class="vfu-rest"><summary>{len(others)} more requirements, '
            f"every parametrization {escape(_or(verdicts))}</summary><ul>"
            + "".join(_line(r) for r in others)
            + "</ul></details>"
        )
    return "".join(out) + "</div>"


def _entry(req: Requirement) -> str:
    verdict = req.verdict
    first = next(c for c in req.cases if c.verdict == verdict)
    # Its first paragraph (a fuzzing failure's example and wire log follow in the row).
    message = clip_message(plain_message(first.message).split("\n\n", 1)[0], FIRST_MESSAGE_LIMIT)
    counts = " · ".join(f"{n} {v}" for v, n in req.counts())
    n = len(req.cases)
    counted = f"{n} parametrizations: {counts}" if n > 1 else ""
    params = "".join(_param(c) for c in req.cases)
    return (
        f'<details class="vfu-rq" data-case="{escape(req.case_id)}"><summary>'
        f'<span class="vfu-head"><span class="vfu-v-{verdict}">{verdict}</span> '
        f'<b>{escape(req.case_id)}</b> <span class="vfu-lvl">{escape(req.level)}</span> '
        + (f'<span class="vfu-n">{escape(counted)}</span> ' if counted else "")
        + _rows_link(req)
        + "</span>"
        # The spec's words: the page's script, from #vfu-requirements (the rows' too).
        + ('<div class="vfu-quote"></div>' if req.text else "")
        + (f'<div class="vfu-first">{escape(message)}</div>' if message else "")
        + f'</summary><ul class="vfu-params">{params}</ul></details>'
    )


def _param(case: CaseRecord) -> str:
    key = case_key(case.case_id, case.nodeid)
    name = key[len(case.case_id) :] if key.startswith(f"{case.case_id}[") else key
    message = ""
    if case.verdict in NOT_MET and case.message:
        line = plain_message(case.message).split("\n", 1)[0]
        message = f' <span class="vfu-m">{escape(clip_message(line, ROW_MESSAGE_LIMIT))}</span>'
    return (
        f'<li><span class="vfu-v-{case.verdict}">{case.verdict}</span> '
        f'<a href="#{escape(quote(key, safe=_ANCHOR_SAFE))}">{escape(name)}</a>{message}</li>'
    )


def _line(req: Requirement) -> str:
    counts = ", ".join(f"{n} {v}" for v, n in req.counts())
    return (
        f'<li class="vfu-pick" data-case="{escape(req.case_id)}">'
        f'<span class="vfu-v-{req.verdict}">{req.verdict}</span> {escape(req.case_id)} '
        f'<span class="vfu-n">({escape(counts)})</span></li>'
    )


def _rows_link(req: Requirement) -> str:
    rows = "its row" if len(req.cases) == 1 else "its rows"
    return f'<a class="vfu-pick" data-case="{escape(req.case_id)}">{rows}</a>'


def _or(verdicts: list[Verdict]) -> str:
    names = [str(v) for v in verdicts]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
