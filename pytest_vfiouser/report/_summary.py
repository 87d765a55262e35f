"""The terminal summary: verdicts per spec section, the failing requirements, then what was
tested and how it went; at most 80 columns (``WIDTH``), in tones the terminal colours."""

from __future__ import annotations

import re
import textwrap
from collections import Counter
from pathlib import Path

from pytest_vfiouser.fuzz import summary_lines as fuzz_lines
from pytest_vfiouser.verdict import VERDICTS, Verdict

from ._artifacts import case_key

FAIL, FIXED, PASS, NOT_RUN = Verdict.FAIL, Verdict.FIXED, Verdict.PASS, Verdict.NOT_RUN
WIDTH = 80  # the summary's width, whatever the terminal's (CI logs, mail, issues)
# Column labels when the verdicts' names do not fit in WIDTH (a legend says them).
SHORT_NAMES = {
    Verdict.NON_STRICT: "N-STR",
    Verdict.INFORMATIONAL: "INFO",
    Verdict.UNIMPLEMENTED: "UNIMP",
    Verdict.BASELINE: "BASE",
    Verdict.NOT_RUN: "N-RUN",
}
Segment = tuple[str, "str | None"]  # text, and the tone it is shown in (Verdict.tone)
Line = list[Segment]
# The notes of a target gone for the run (target._manager), shown whole.
STOPPED_NOTES = ("the target could not start", "the target stopped answering")

__all__ = [
    "WIDTH",
    "columns",
    "combine_targets",
    "fit",
    "headline",
    "lines",
    "result_text",
    "sigterm_text",
    "styled",
]


def combine_targets(summaries: list[dict]) -> dict:
    """One summary from those of every pytest process (xdist workers)."""
    out: dict = {
        "target": None,
        "command": None,
        "starts": 0,
        "sigterm": {"honoured": 0, "killed": 0},
        "persistence_note": None,
        "notes": [],
        "negotiated": None,
        "deselected_by_revision": 0,
    }
    for s in summaries:
        for key in ("target", "command", "persistence_note", "negotiated"):
            if out[key] is None and s.get(key) is not None:
                out[key] = s[key]
        out["starts"] += s.get("starts", 0)
        for key in ("honoured", "killed"):
            out["sigterm"][key] += s.get("sigterm", {}).get(key, 0)
        out["notes"] += [n for n in s.get("notes", []) if n not in out["notes"]]
        out["deselected_by_revision"] = max(
            out["deselected_by_revision"], s.get("deselected_by_revision", 0)
        )
    return out


def sigterm_text(sigterm: dict) -> str:
    honoured, killed = sigterm.get("honoured", 0), sigterm.get("killed", 0)
    total = honoured + killed
    if not total:
        return "SIGTERM honoured: n/a (the suite stopped no running server)"
    if not killed:
        return f"SIGTERM honoured: yes ({honoured} of {total} stops)"
    return f"SIGTERM honoured: NO ({killed} of {total} stops needed SIGKILL)"


def lines(state, targets: dict, width: int = WIDTH) -> list[str]:
    """The summary text, one string a line (``styled`` without its tones)."""
    return ["".join(text for text, _ in line) for line in styled(state, targets, width)]


def styled(state, targets: dict, width: int = WIDTH) -> list[Line]:
    """The summary, one list of (text, tone) segments a line, none wider than ``width``
    (but for a word longer than that, and the lines of a stopped target's note, quoted as
    they are: the command to try by hand, the server's stderr): the verdicts by section,
    the failing requirements (one line each) and the cases not run (one line a cause),
    what was tested, the result."""
    records = state.records
    out = _table(records, width)
    found = _findings(records, width)
    if found:
        out += [[("", None)], *found]
    out.append([("", None)])
    facts = _facts(state, targets)
    for text, indent in facts:
        parts = [text] if indent is None else _wrap(text, width, indent)
        out += [[(part, None)] for part in parts]
    out.append(
        [
            ("result: ", None),
            (
                result_text(records, getattr(state, "interrupted", None)),
                "bad" if records.failing() or getattr(state, "interrupted", None) else "pass",
            ),
        ]
    )
    return out


def _facts(state, targets: dict) -> list[tuple[str, str | None]]:
    """What was tested and how it went: (text, the indent of its continuation lines, or None
    for a line quoted as it is: a command to try by hand, the server's stderr)."""
    settings = state.settings
    if settings.client_mode:  # the client is what is judged; the reference server its peer
        ran = getattr(state, "client_run", None) or settings.client or settings.transcript
        return [
            (f"client: {ran}", "  "),
            (f"spec {settings.spec}; peer: the reference server", "  "),
        ]
    out = [(f"target: {targets.get('target') or state.manager.describe()}", "  ")]
    profile = settings.profile
    where = f" ({_shown_path(profile.path)})" if profile.path else ""
    out.append(
        (
            f"spec {settings.spec}; profile {profile.name}{where}; restart {settings.restart}; "
            f"timeout {settings.timeout:g} s{'; strict' if settings.strict else ''}",
            "  ",
        )
    )
    negotiated = targets.get("negotiated")
    if negotiated:
        caps = " ".join(f"{k}={v}" for k, v in _flat(negotiated["capabilities"]))
        out.append(
            (
                f"negotiated version {negotiated['major']}.{negotiated['minor']}; "
                f"server capabilities: {caps or 'none'}",
                "  ",
            )
        )
    if settings.socket is None:
        out.append((sigterm_text(targets.get("sigterm", {})), "  "))
    if targets.get("persistence_note"):
        out.append((f"note: {targets['persistence_note']}", "  "))
    for note in targets.get("notes", []):
        first, *rest = note.splitlines() or [""]
        out.append((f"note: {first}", "  "))
        if note.startswith(STOPPED_NOTES):  # the root cause of the NOT-RUNs: all of it
            out += [(f"  {line}", None) for line in rest]
    if targets.get("deselected_by_revision"):
        out.append(
            (
                f"{targets['deselected_by_revision']} case(s) deselected: not in spec "
                f"{settings.spec}",
                "  ",
            )
        )
    out += [(line, "  ") for line in fuzz_lines(getattr(state, "config", None), settings.fuzz)]
    records = state.records
    entry_of = settings.profile.baseline_entry
    fixed = records.fixed_baselines(entry_of)
    if fixed:
        out.append(("FIXED (every case these [baseline] entries name passed: remove them):", ""))
        out += [(f"  {e} ({n} case{'s' * (n > 1)}): {reason}", "    ") for e, reason, n in fixed]
    xpassed = [
        c for c in records.with_verdict(FIXED) if entry_of(case_key(c.case_id, c.nodeid)) is None
    ]
    if xpassed:
        out.append(("FIXED (xfail, but passed):", ""))
        out += [(f"  {case_key(c.case_id, c.nodeid)}: {c.message}", "    ") for c in xpassed]
    if state.unknown_baselines:
        out.append(
            (
                "[baseline] entries matching no collected case: "
                + ", ".join(state.unknown_baselines),
                "  ",
            )
        )
    return out


def _table(records, width: int) -> list[Line]:
    """Verdicts by section: full verdict names when they fit in ``width``, else short ones
    (and a legend), else section names cut too."""
    total = records.counts()
    shown = columns(total)
    rows = [*records.by_section().items(), ("total", total)]
    name_width = max(len("section"), *(len(name) for name, _ in rows))
    for short, gap in ((False, 2), (True, 2), (True, 1)):
        labels = [SHORT_NAMES.get(v, str(v)) if short else str(v) for v in shown]
        widths = [
            max(len(label), 3, *(len(str(counts.get(v, 0))) for _, counts in rows))
            for label, v in zip(labels, shown, strict=True)
        ]
        cells = sum(widths) + gap * len(widths)
        if name_width + cells <= width:
            break
    name_width = max(min(name_width, width - cells), len("total"))

    def row(name: str, values: list[Segment]) -> Line:
        name = name if len(name) <= name_width else name[: name_width - 1] + "~"
        line: Line = [(f"{name:<{name_width}}", None)]
        for (text, tone), w in zip(values, widths, strict=True):
            line += [(" " * gap, None), (f"{text:>{w}}", tone)]
        return line

    out = [row("section", [(label, None) for label in labels])]
    for name, counts in rows:
        if name == "total":
            out.append([("-" * (name_width + cells), None)])
        out.append(
            row(name, [(_cell(counts, v), v.tone if counts.get(v) else None) for v in shown])
        )
    if short:
        legend = ", ".join(f"{SHORT_NAMES[v]} {v}" for v in shown if v in SHORT_NAMES)
        out += [[(part, None)] for part in _wrap(f"({legend})", width, " ")]
    return out


def _findings(records, width: int) -> list[Line]:
    """One line per failing requirement (its worst verdict, how many of its
    parametrizations fail, the first line of the message), then one per cause of cases
    not run."""
    per_case = Counter(c.case_id or c.nodeid for c in records.cases)
    failing: dict[str, list] = {}
    for c in records.failing():
        failing.setdefault(c.case_id or c.nodeid, []).append(c)
    out: list[Line] = []
    for case, found in sorted(failing.items(), key=lambda kv: (kv[1][0].section or "", kv[0])):
        worst = max(found, key=lambda c: c.verdict.rank)
        count = f" [{len(found)} of {per_case[case]}]" if per_case[case] > 1 else ""
        text = headline(worst.message, keep_type=worst.verdict == Verdict.ERROR)
        out.append(_finding(worst.verdict, f"{case}{count}: {text}", width))
    causes = Counter(headline(c.message) for c in records.with_verdict(NOT_RUN))
    for cause, n in causes.items():
        cause = cause.removeprefix("not run: ")
        out.append(_finding(NOT_RUN, f"{n} case{'s' if n > 1 else ''}: {cause}", width))
    return out


def _finding(verdict: Verdict, text: str, width: int) -> Line:
    label = f"{verdict:<5}"
    return [(label, verdict.tone), (fit(f" {text}", width - len(label)), None)]


_EXCEPTION_NAME = re.compile(
    r"(?:^|(?<=: ))(?P<module>(?:[A-Za-z_]\w*\.)*)(?P<name>(?=[A-Z])\w*(?:Error|Exception"
    r"|Failure|Unmet|Timeout|Closed|Crashed|Unavailable|NotRun|Definition|Failed)): "
)


def headline(message: str, keep_type: bool = False) -> str:
    """The first line of a verdict's message, without the exceptions' names that pytest puts
    before their text (``pkg.mod.FuzzFailure: the server sent ...``, also after a prefix:
    ``no reply in time: pkg.Timeout: ...``); ``keep_type`` keeps the class name (not its
    module) for harness errors, where the type is the news."""
    first = next((line.strip() for line in message.splitlines() if line.strip()), "")
    return _EXCEPTION_NAME.sub(lambda m: f"{m['name']}: " if keep_type else "", first)


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, ``...`` saying it was."""
    return text if len(text) <= width else text[: max(width - 3, 0)] + "..."


def _wrap(text: str, width: int, indent: str) -> list[str]:
    """``text`` in lines of at most ``width`` (continuations indented by ``indent``); a word
    longer than a line (a path) is kept whole, on a line of its own, to be copied."""
    return textwrap.wrap(
        text,
        width,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
        drop_whitespace=True,
        replace_whitespace=False,
    ) or [""]


def _flat(value, prefix: str = ""):
    """A capabilities object as ``name=value`` pairs (nested objects as ``a.b``)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _flat(item, f"{prefix}{key}.")
    elif isinstance(value, list):
        yield prefix[:-1], ",".join(str(v) for v in value)
    else:
        yield prefix[:-1], value


def _shown_path(path) -> str:
    """A path as given relative to the current directory when it is beneath it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def columns(total: Counter) -> list[Verdict]:
    """The verdicts a summary has a column for: those of some case, and PASS and FAIL always."""
    return [v for v in VERDICTS if total[v] or v in (PASS, FAIL)]


def result_text(records, interrupted: dict | None = None) -> str:
    """``FAILED (1 FAIL, 2 CRASH)``, or ``passed (no FAIL, CRASH, HANG, ERROR among 9 cases)``;
    for a run that stopped early (``interrupted``: {"reason", "signal"}),
    ``INTERRUPTED by SIGTERM after 9 cases (so far: 1 FAIL)``."""
    counts = records.counts()
    failing = [v for v in VERDICTS if v.fails_run]
    found = ", ".join(f"{counts[v]} {v}" for v in failing if counts[v])
    if interrupted is not None:
        how = f"by {interrupted['signal']}" if interrupted.get("signal") else ""
        how = how or f"({interrupted.get('reason') or 'stopped early'})"
        so_far = found or f"no {', '.join(failing)}"
        return f"INTERRUPTED {how} after {len(records.cases)} cases (so far: {so_far})"
    if found:
        return f"FAILED ({found})"
    return f"passed (no {', '.join(failing)} among {len(records.cases)} cases)"


def _cell(counts: Counter, verdict: str) -> str:
    n = counts.get(verdict, 0)
    return str(n) if n else "."
