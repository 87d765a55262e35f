"""The JSON report (--vfu-json; ``reports/conformance.json`` from vfio-user-conformance).

Its schema is ``pytest_vfiouser/report/schema/conformance.schema.json`` (JSON Schema
2020-12); ``schema_version`` changes only when a field is removed or changes
meaning (fields may be added; 2: ``failed`` is also true for a run that did not
finish)::

    {
      "schema_version": 2,
      "format": "pytest-vfiouser/1",
      "run": {"suite_version", "started" (ISO 8601), "duration", "spec", "strict",
              "restart", "timeout", "sections", "profile": {"name", "path"},
              "target": {"description", "command", "command_template", "socket", ...},
              "negotiated": {"major", "minor", "capabilities"} | null,
              "counts": {"PASS": n, ...}, "failed": bool, "finished": bool,
              "interrupted": {"reason", "signal"} | null,
              "reports": {"html", "junit", "logs"}},       # paths relative to this file
      "summary": {"cases": n, "verdicts": {verdict: n}, "sections": {section: {verdict: n}}},
      "cases": [{"id", "case_id", "nodeid", "anchor", "section", "level", "revision",
                 "revisions", "verdict", "duration", "message", "requirement",
                 "observations", "resources",
                 "artifacts": {"wire_log", "reproducer", "stderr", "log"}}]  # relative paths
    }

``id`` is the stable case id (``section/name[params]``); ``anchor`` the id of
the case's row in the HTML report (``conformance.html#<anchor>``).
``failed`` is true when some case is FAIL, CRASH, HANG or ERROR, or the run did not
finish. While the run goes on, ``JsonWriter`` rewrites the file (a new file renamed
over the old one: a reader never sees half of one) with ``finished`` false and the
cases judged so far; a run killed with SIGKILL leaves that. The last write has
``finished`` true; ``interrupted`` says why a run stopped before its end.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path

from pytest_vfiouser import __version__

from ._artifacts import anchor, case_key, html_path, junit_path, logs_dir, relative
from ._records import Records

__all__ = [
    "FORMAT",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "JsonWriter",
    "build",
    "schema",
    "write",
]

FORMAT = "pytest-vfiouser/1"
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)  # what readers of reports (compare) take: the cases did not change
# While the run goes on: the next write waits at least this long, and this many times
# as long as the last one took (so that writing costs at most about 1/COST_FACTOR).
MIN_INTERVAL = 0.2
COST_FACTOR = 50


def build(
    state,
    targets: dict,
    where: Path | None = None,
    *,
    finished: bool = True,
    interrupted: dict | None = None,
) -> dict:
    """The report's content; paths are made relative to the directory ``where``.

    ``finished``: false while the run goes on; ``interrupted``: why it stopped early
    ({"reason", "signal"})."""
    where = Path(where) if where is not None else Path.cwd()
    records = state.records
    data = _head(state, targets, where, records, finished, interrupted)
    data["cases"] = [_case(c, state.settings.spec, _relative_to(where)) for c in records.cases]
    return data


def _relative_to(where: Path) -> Callable[[object], str | None]:
    def rel(path) -> str | None:
        return relative(path, where) if path else None

    return rel


def _head(
    state, targets: dict, where: Path, records: Records, finished: bool, interrupted: dict | None
) -> dict:
    """Everything but the cases' entries (``"cases": []``), of the cases in ``records``."""
    settings = state.settings
    profile = settings.profile
    config = state.config
    rel = _relative_to(where)
    logs = logs_dir(config, settings.json_path)
    counts = dict(sorted(records.counts().items()))
    return {
        "schema_version": SCHEMA_VERSION,
        "format": FORMAT,
        "run": {
            "suite_version": __version__,
            "started": _dt.datetime.fromtimestamp(state.started_at, _dt.timezone.utc).isoformat(),
            "duration": round(time.time() - state.started_at, 3),
            "spec": settings.spec,
            "strict": settings.strict,
            "restart": settings.restart,
            "timeout": settings.timeout,
            "sections": list(settings.sections),
            "profile": {"name": profile.name, "path": str(profile.path) if profile.path else None},
            "target": {
                # Client mode: what is judged is the client (the reference server its peer).
                "description": getattr(state, "client_run", None) or targets.get("target"),
                "command": targets.get("command"),
                "command_template": getattr(settings, "client", None)
                or settings.command_text
                or None,
                "socket": settings.socket,
                "starts": targets.get("starts", 0),
                "sigterm": targets.get("sigterm"),
                "persistence_note": targets.get("persistence_note"),
                "notes": targets.get("notes", []),
            },
            "negotiated": targets.get("negotiated"),
            "counts": counts,
            "failed": bool(records.failing()) or not finished or interrupted is not None,
            "finished": finished,
            "interrupted": interrupted,
            "reports": {
                "html": rel(html_path(config)),
                "junit": rel(junit_path(config)),
                "logs": rel(logs) if logs is not None and logs.is_dir() else None,
            },
        },
        "summary": {
            "cases": len(records.cases),
            "verdicts": counts,
            "sections": {name: dict(sorted(c.items())) for name, c in records.by_section().items()},
        },
        "cases": [],
    }


def _case(c, spec: str, rel) -> dict:
    return {
        "id": case_key(c.case_id, c.nodeid),
        "case_id": c.case_id,
        "nodeid": c.nodeid,
        "anchor": anchor(c.case_id, c.nodeid),
        "section": c.section,
        "level": c.level,
        "revision": spec,
        "revisions": list(c.revisions),
        "verdict": c.verdict,
        "duration": c.duration,
        "message": c.message,
        "requirement": c.requirement,
        "observations": list(c.observations),
        "resources": dict(c.resources),
        "artifacts": {name: rel(path) for name, path in sorted(c.artifacts.items())},
    }


def write(
    path: str | os.PathLike[str], state, targets: dict, *, interrupted: dict | None = None
) -> Path:
    """The final report at once (``JsonWriter`` writes it while the run goes on)."""
    return JsonWriter(path, state, lambda: targets).finish(targets, interrupted)


class JsonWriter:
    """The JSON report of a run, rewritten as cases are judged and once at the end.

    ``changed()`` (after each judged case) wakes a thread that writes the report
    with ``finished`` false, at most every MIN_INTERVAL s and COST_FACTOR times
    the last write's duration; ``finish()`` writes the last one. Each case's text
    is made once (the cases are most of the file and do not change)."""

    def __init__(self, path: str | os.PathLike[str], state, targets: Callable[[], dict]):
        self.path = Path(path)
        self.state = state
        self._targets = targets  # the target bookkeeping so far (read while the run goes on)
        self._texts: list[str] = []  # each case's JSON text, indented as in the file
        self._lock = threading.Lock()  # one write at a time
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.writes = 0  # while the run went on (benchmarks/json_overhead.py reads them)
        self.seconds = 0.0

    def changed(self) -> None:
        """Some case was judged: write the report soon."""
        if self._closed.is_set():
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="vfu-json", daemon=True)
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait()
            self._wake.clear()
            began = time.monotonic()
            with self._lock:
                if self._closed.is_set():
                    return
                try:
                    self._write(self._targets(), finished=False, interrupted=None)
                except Exception:  # noqa: BLE001 - the run goes on; finish() reports errors
                    pass
            cost = time.monotonic() - began
            self.writes += 1
            self.seconds += cost
            self._closed.wait(max(MIN_INTERVAL, COST_FACTOR * cost))

    def finish(self, targets: dict, interrupted: dict | None = None) -> Path:
        """The last write (``targets``: the bookkeeping of every process), ``finished`` true;
        ``interrupted`` if the run stopped early."""
        self._closed.set()
        self._wake.set()
        with self._lock:
            self._write(targets, finished=True, interrupted=interrupted)
        return self.path

    def _write(self, targets: dict, *, finished: bool, interrupted: dict | None) -> None:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        where = path.resolve().parent
        records = Records.view(self.state.records.cases)  # the run may judge more meanwhile
        head = _head(self.state, targets, where, records, finished, interrupted)
        if len(self._texts) < len(records.cases):
            rel, spec = _relative_to(where), self.state.settings.spec
            self._texts += [
                _indent(json.dumps(_case(c, spec, rel), indent=2, default=str))
                for c in records.cases[len(self._texts) :]
            ]
        text = json.dumps(head, indent=2, default=str)
        if records.cases:  # "cases": [] is the document's last key: the cases' text goes there
            body = ",\n".join(self._texts[: len(records.cases)])
            text = text[: text.rindex("[]")] + f"[\n{body}\n  ]\n}}"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text + "\n")
        os.replace(tmp, path)


def _indent(text: str) -> str:
    """A case's text at its depth in the file (as json.dumps(indent=2) of the whole has it)."""
    return "    " + text.replace("\n", "\n    ")


def schema() -> dict:
    """The JSON Schema of the report (shipped in the package)."""
    return json.loads(
        files(__package__).joinpath("schema").joinpath("conformance.schema.json").read_text()
    )
