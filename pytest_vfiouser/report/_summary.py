"""The terminal summary: verdicts per spec section, then what was tested and how it went."""

from __future__ import annotations

from collections import Counter

from pytest_vfiouser.fuzz import summary_lines as fuzz_lines
from pytest_vfiouser.verdict import VERDICTS, Verdict

from ._artifacts import case_key

FAIL, FIXED, PASS = Verdict.FAIL, Verdict.FIXED, Verdict.PASS
# The notes of a target gone for the run (target._manager), shown whole.
STOPPED_NOTES = ("the target could not start", "the target stopped answering")

__all__ = ["columns", "combine_targets", "lines", "result_text", "sigterm_text"]


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


def lines(state, targets: dict) -> list[str]:
    """The summary text, one string a line."""
    records = state.records
    sections = records.by_section()
    total = records.counts()
    shown = columns(total)
    width = max([len("section"), len("total")] + [len(s) for s in sections])
    out = ["  ".join([f"{'section':<{width}}"] + [f"{v:>{max(len(v), 3)}}" for v in shown])]
    rows = list(sections.items()) + [("total", total)]
    for name, counts in rows:
        if name == "total":
            out.append("-" * len(out[0]))
        out.append(
            "  ".join(
                [f"{name:<{width}}"] + [f"{_cell(counts, v):>{max(len(v), 3)}}" for v in shown]
            )
        )
    settings = state.settings
    out.append("")
    out.append(f"target: {targets.get('target') or state.manager.describe()}")
    profile = settings.profile
    where = f" ({profile.path})" if profile.path else ""
    out.append(
        f"spec {settings.spec}; profile {profile.name}{where}; restart {settings.restart}; "
        f"timeout {settings.timeout:g} s{'; strict' if settings.strict else ''}"
    )
    negotiated = targets.get("negotiated")
    if negotiated:
        out.append(
            f"negotiated version {negotiated['major']}.{negotiated['minor']}, "
            f"server capabilities {negotiated['capabilities']}"
        )
    if settings.socket is None:
        out.append(sigterm_text(targets.get("sigterm", {})))
    if targets.get("persistence_note"):
        out.append(f"note: {targets['persistence_note']}")
    for note in targets.get("notes", []):
        first, *rest = note.splitlines() or [""]
        out.append(f"note: {first}")
        if note.startswith(STOPPED_NOTES):  # the root cause of the NOT-RUNs: all of it
            out += [f"  {line}" for line in rest]
    if targets.get("deselected_by_revision"):
        out.append(
            f"{targets['deselected_by_revision']} case(s) deselected: not in spec {settings.spec}"
        )
    out += fuzz_lines(getattr(state, "config", None), settings.fuzz)
    entry_of = settings.profile.baseline_entry
    fixed = records.fixed_baselines(entry_of)
    if fixed:
        out.append("FIXED (every case these [baseline] entries name passed: remove them):")
        out += [f"  {e} ({n} case{'s' * (n > 1)}): {reason}" for e, reason, n in fixed]
    xpassed = [
        c for c in records.with_verdict(FIXED) if entry_of(case_key(c.case_id, c.nodeid)) is None
    ]
    if xpassed:
        out.append("FIXED (xfail, but passed):")
        out += [f"  {case_key(c.case_id, c.nodeid)}: {c.message}" for c in xpassed]
    if state.unknown_baselines:
        out.append(
            "[baseline] entries matching no collected case: " + ", ".join(state.unknown_baselines)
        )
    out.append(f"result: {result_text(records, getattr(state, 'interrupted', None))}")
    return out


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
