"""The expectation files: what each implementation is known to break, and the check.

``expectations/<name>.toml`` holds one ``[[finding]]`` per case and verdict that
the suite finds against the implementation:

    [[finding]]
    case = "dma/map-overlap-eexist[identical-fd]"   # the JSON report's case "id"
    revisions = ["0.9.1", "0.9.2"]                 # the spec revisions it is found at
    verdict = "FAIL"                               # FAIL, NON-STRICT, CRASH or HANG
    spec = "a command to map over ... with EEXIST set in error field"   # the sentence broken
    did = "refused the overlapping map with errno 22 (EINVAL)"          # what the server did

A run differs from its expectations on a new finding, a finding gone or a
changed verdict, and on any ERROR (a defect of the suite, never expected). An
entry without its spec quote or what the server did is an error of the file.
An entry may say ``unstable = "why"``: the server behaves so only in some runs
(a race of its own), and the case may show any finding verdict, or none.
``update`` rewrites a file from the reports: it keeps the text of the entries
whose case is still found, pre-fills new ones from the report (the requirement's
quoted spec text, the message's first line) marked ``# TODO review``, and drops
the findings gone. TOML is written here (tomllib only reads).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vfiouser.verdict import Verdict

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

__all__ = [
    "FINDINGS",
    "TODO",
    "Difference",
    "Entry",
    "Expectations",
    "check",
    "did_of",
    "load",
    "misquotes",
    "render",
    "spec_quote",
    "update",
]

# The verdicts that are findings against a server; ERROR is the suite's own defect.
FINDINGS: frozenset[Verdict] = frozenset(
    {Verdict.FAIL, Verdict.NON_STRICT, Verdict.CRASH, Verdict.HANG}
)
TODO = "# TODO review"
_KEYS = ("case", "revisions", "verdict", "spec", "did")  # each required
_OPTIONAL = ("unstable",)
_TABLE = re.compile(r"^\s*\[\[\s*finding\s*\]\]")
_SPEC = re.compile(r"\bSpec\b[^:\n]*:\s*(.*)", re.DOTALL)
_QUOTE = re.compile(r'"([^"]+)"')
_MESSAGE_LINES = 4  # of a case's message, under a difference


@dataclass(frozen=True)
class Entry:
    case: str
    revisions: tuple[str, ...]
    verdict: str
    spec: str
    did: str
    todo: bool = False  # spec and did were pre-filled by --update, not yet reviewed
    line: int = 0  # of its [[finding]] in the file
    unstable: str = ""  # why the server shows this only in some runs (any verdict, or none)


@dataclass
class Expectations:
    path: Path
    entries: list[Entry] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # "path:line: what is wrong"

    def at(self, revision: str) -> dict[str, Entry]:
        """case id -> its entry at ``revision``."""
        return {e.case: e for e in self.entries if revision in e.revisions}

    @property
    def todo(self) -> list[Entry]:
        return [e for e in self.entries if e.todo]


def load(path: Path, revisions: Sequence[str]) -> Expectations:
    """Read an expectation file (a missing one is empty); its errors are collected, not raised."""
    found = Expectations(path)
    if not path.exists():
        return found
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found.errors.append(f"{path}: not TOML: {exc}")
        return found
    for key in set(data) - {"finding"}:
        found.errors.append(f"{path}: unknown key {key!r} (only [[finding]] tables)")
    tables = data.get("finding") or []
    starts, todos = _blocks(text)
    seen: dict[tuple[str, str], int] = {}
    for n, table in enumerate(tables):
        line = starts[n] if n < len(starts) else 0
        where = f"{path}:{line}"
        problems = [f"unknown key {k!r}" for k in table if k not in _KEYS + _OPTIONAL]
        problems += [f"no {k}" for k in _KEYS if k not in table]
        strings = {k: table.get(k, "") for k in ("case", "verdict", "spec", "did")}
        problems += [f"{k} is not a string" for k, v in strings.items() if not isinstance(v, str)]
        revs = table.get("revisions", [])
        if not isinstance(revs, list) or not all(isinstance(r, str) for r in revs):
            problems.append("revisions is not a list of strings")
            revs = []
        if problems:
            found.errors.append(f"{where}: " + "; ".join(problems))
            continue
        entry = Entry(
            strings["case"],
            tuple(revs),
            strings["verdict"],
            strings["spec"].strip(),
            strings["did"].strip(),
            todo=n < len(todos) and todos[n],
            line=line,
            unstable=str(table.get("unstable", "")).strip(),
        )
        found.errors += [f"{where}: {entry.case}: {p}" for p in _problems(entry, revisions)]
        for rev in entry.revisions:
            if (entry.case, rev) in seen:
                found.errors.append(
                    f"{where}: {entry.case} at {rev} is expected twice "
                    f"(also line {seen[entry.case, rev]})"
                )
            seen[entry.case, rev] = line
        found.entries.append(entry)
    return found


def _problems(entry: Entry, revisions: Sequence[str]) -> list[str]:
    out = []
    if entry.verdict == Verdict.ERROR:
        out.append("ERROR is never expected: it is a defect of the suite")
    elif entry.verdict not in FINDINGS:
        names = ", ".join(v for v in Verdict if v in FINDINGS)
        out.append(f"verdict {entry.verdict!r} is not a finding ({names})")
    if not entry.revisions:
        out.append("no revision")
    out += [f"unknown revision {r!r}" for r in entry.revisions if r not in revisions]
    if not entry.spec:
        out.append("no spec: quote the sentence of the spec the server breaks")
    if not entry.did:
        out.append("no did: say in one line what the server did")
    return out


def _blocks(text: str) -> tuple[list[int], list[bool]]:
    """The line of each [[finding]] and whether its block holds a TODO mark."""
    starts: list[int] = []
    todos: list[bool] = []
    for number, line in enumerate(text.splitlines(), 1):
        if _TABLE.match(line):
            starts.append(number)
            todos.append(False)
        elif todos and TODO in line:
            todos[-1] = True
    return starts, todos


# -- the quotes


_MARKUP = re.compile(r"[*`|+=\-]+")  # RST emphasis, literals, table rules and cells
_ELISION = re.compile(r"\.\.\.|…")


def _plain(text: str) -> str:
    words = " ".join(_MARKUP.sub(" ", text).split()).lower()
    return re.sub(r" (?=[:,.;])", "", words)  # ``PATH``: reads as PATH:


def misquotes(expectations: Expectations, texts: Mapping[str, str]) -> list[str]:
    """The entries whose ``spec`` is not words of the spec text of a revision they name
    (``texts``: revision -> the spec's reStructuredText; markup, case and line breaks
    aside, "..." eliding), as "path:line: case: what"."""
    plain = {revision: _plain(text) for revision, text in texts.items()}
    out = []
    for e in expectations.entries:
        pieces = [_plain(p).rstrip(".") for p in _ELISION.split(e.spec)]
        for revision in e.revisions:
            if revision in plain and not all(p in plain[revision] for p in pieces if p):
                out.append(
                    f"{expectations.path}:{e.line}: {e.case}: its spec is not a quote of the "
                    f"{revision} text: {e.spec[:120]!r}"
                )
    return out


# -- the check


@dataclass(frozen=True)
class Difference:
    run: str  # "<name> at <revision>"
    kind: str  # "new finding", "finding gone", "verdict changed", "ERROR", ...
    case: str
    detail: str = ""
    message: str = ""

    def lines(self) -> list[str]:
        head = f"  {self.kind}: {self.case}" + (f" ({self.detail})" if self.detail else "")
        body = [f"      {line}" for line in self.message.splitlines()[:_MESSAGE_LINES]]
        return [head, *body]


def check(
    name: str,
    revision: str,
    cases: Mapping[str, Mapping],
    expectations: Expectations,
) -> list[Difference]:
    """How a run's cases (case id -> the JSON report's case) differ from the expectations."""
    run = f"{name} at {revision}"
    expected = expectations.at(revision)
    out = []
    for case_id, case in cases.items():
        verdict = case.get("verdict", "")
        message = case.get("message") or ""
        entry = expected.get(case_id)
        if entry is not None and entry.unstable and verdict != Verdict.ERROR:
            continue
        if verdict == Verdict.ERROR:
            out.append(Difference(run, "ERROR (a defect of the suite)", case_id, "", message))
        elif verdict in FINDINGS and entry is None:
            out.append(Difference(run, "new finding", case_id, verdict, message))
        elif verdict in FINDINGS and entry.verdict != verdict:
            detail = f"expected {entry.verdict}, now {verdict}"
            out.append(Difference(run, "verdict changed", case_id, detail, message))
    for case_id, entry in expected.items():
        case = cases.get(case_id)
        if entry.unstable:
            continue
        if case is None:
            out.append(Difference(run, "finding gone", case_id, f"{entry.verdict}; not in the run"))
        elif case.get("verdict") not in FINDINGS and case.get("verdict") != Verdict.ERROR:
            detail = f"expected {entry.verdict}, now {case.get('verdict')}"
            out.append(Difference(run, "finding gone", case_id, detail))
    return sorted(out, key=lambda d: d.case)


# -- pre-filling and writing


def spec_quote(requirement: str) -> str:
    """The spec text a requirement quotes: the first quotation after ``Spec (...):``, else
    the rest of that line; "" when it quotes no spec."""
    match = _SPEC.search(requirement or "")
    if not match:
        return ""
    rest = match.group(1)
    quoted = _QUOTE.search(rest)
    text = quoted.group(1) if quoted else rest.splitlines()[0] if rest else ""
    return " ".join(text.split())


_EXCEPTION = re.compile(r"^(?:no reply in time: )?(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*: ")


def did_of(message: str) -> str:
    """What the server did, as the first line of a case's message says it (without the
    exception's name)."""
    first = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    return _EXCEPTION.sub("", first, count=1).strip().rstrip(":").rstrip()


def update(
    expectations: Expectations,
    reports: Mapping[str, Mapping[str, Mapping]],
    revisions: Sequence[str],
) -> list[Entry]:
    """The entries rewritten from ``reports`` (revision -> case id -> case); the
    revisions without a report keep their entries."""
    old = {(e.case, r): e for e in expectations.entries for r in e.revisions}
    by_case: dict[str, Entry] = {}
    for e in expectations.entries:  # a reviewed entry's text is preferred
        if e.case not in by_case or (by_case[e.case].todo and not e.todo):
            by_case[e.case] = e
    pairs: dict[tuple[str, str], tuple[str, str, str, bool, str]] = {
        key: (e.verdict, e.spec, e.did, e.todo, e.unstable)
        for key, e in old.items()
        if key[1] not in reports or e.unstable  # an unstable one stays, found or not
    }
    for revision, cases in reports.items():
        for case_id, case in cases.items():
            verdict = case.get("verdict")
            if verdict not in FINDINGS:
                continue
            kept = old.get((case_id, revision)) or by_case.get(case_id)
            if kept is not None and (case_id, revision) in old and old[case_id, revision].unstable:
                continue  # as it was written: its verdict varies from run to run
            if kept is not None:
                pairs[case_id, revision] = (verdict, kept.spec, kept.did, kept.todo, "")
            else:
                spec = spec_quote(case.get("requirement") or "")
                did = did_of(case.get("message") or "")
                pairs[case_id, revision] = (verdict, spec, did, True, "")
    order = {r: n for n, r in enumerate(revisions)}
    grouped: dict[tuple[str, str, str, str, bool, str], list[str]] = {}
    for (case_id, revision), value in pairs.items():
        grouped.setdefault((case_id, *value), []).append(revision)
    entries = [
        Entry(
            case_id,
            tuple(sorted(revs, key=lambda r: order.get(r, len(order)))),
            verdict,
            spec,
            did,
            todo,
            unstable=unstable,
        )
        for (case_id, verdict, spec, did, todo, unstable), revs in grouped.items()
    ]
    return sorted(entries, key=lambda e: (e.case, [order.get(r, len(order)) for r in e.revisions]))


def _string(text: str) -> str:
    """A TOML basic string."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
    out = []
    for ch in text:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def render(entries: Sequence[Entry], header: Sequence[str]) -> str:
    """The file's text: ``header`` as comment lines, then one table per entry."""
    lines = [f"# {h}".rstrip() for h in header]
    for e in entries:
        mark = f"  {TODO}" if e.todo else ""
        revisions = ", ".join(_string(r) for r in e.revisions)
        lines += [
            "",
            "[[finding]]",
            f"case = {_string(e.case)}",
            f"revisions = [{revisions}]",
            f"verdict = {_string(e.verdict)}",
            f"spec = {_string(e.spec)}{mark}",
            f"did = {_string(e.did)}{mark}",
            *([f"unstable = {_string(e.unstable)}"] if e.unstable else []),
        ]
    return "\n".join(lines) + "\n"
