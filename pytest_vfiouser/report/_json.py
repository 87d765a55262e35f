"""The JSON report (--vfu-json; ``reports/conformance.json`` from vfio-user-conformance).

Its schema is ``pytest_vfiouser/report/schema/conformance.schema.json`` (JSON Schema
2020-12); ``schema_version`` changes only when a field is removed or changes
meaning (fields may be added)::

    {
      "schema_version": 1,
      "format": "pytest-vfiouser/1",
      "run": {"suite_version", "started" (ISO 8601), "duration", "spec", "strict",
              "restart", "timeout", "sections", "profile": {"name", "path"},
              "target": {"description", "command", "command_template", "socket", ...},
              "negotiated": {"major", "minor", "capabilities"} | null,
              "counts": {"PASS": n, ...}, "failed": bool,
              "reports": {"html", "junit", "logs"}},       # paths relative to this file
      "summary": {"cases": n, "verdicts": {verdict: n}, "sections": {section: {verdict: n}}},
      "cases": [{"id", "case_id", "nodeid", "anchor", "section", "level", "revision",
                 "revisions", "verdict", "duration", "message", "requirement",
                 "observations", "resources",
                 "artifacts": {"wire_log", "reproducer", "stderr", "log"}}]  # relative paths
    }

``id`` is the stable case id (``section/name[params]``); ``anchor`` the id of
the case's row in the HTML report (``conformance.html#<anchor>``).
``failed`` is true when some case is FAIL, CRASH, HANG or ERROR.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from importlib.resources import files
from pathlib import Path

from pytest_vfiouser import __version__

from ._artifacts import anchor, case_key, html_path, junit_path, logs_dir, relative

__all__ = ["FORMAT", "SCHEMA_VERSION", "build", "schema", "write"]

FORMAT = "pytest-vfiouser/1"
SCHEMA_VERSION = 1


def build(state, targets: dict, where: Path | None = None) -> dict:
    """The report's content; paths are made relative to the directory ``where``."""
    settings = state.settings
    profile = settings.profile
    records = state.records
    config = state.config
    where = Path(where) if where is not None else Path.cwd()

    def rel(path) -> str | None:
        return relative(path, where) if path else None

    logs = logs_dir(config, settings.json_path)
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
                "description": targets.get("target"),
                "command": targets.get("command"),
                "command_template": settings.command_text or None,
                "socket": settings.socket,
                "starts": targets.get("starts", 0),
                "sigterm": targets.get("sigterm"),
                "persistence_note": targets.get("persistence_note"),
                "notes": targets.get("notes", []),
            },
            "negotiated": targets.get("negotiated"),
            "counts": dict(sorted(records.counts().items())),
            "failed": bool(records.failing()),
            "reports": {
                "html": rel(html_path(config)),
                "junit": rel(junit_path(config)),
                "logs": rel(logs) if logs is not None and logs.is_dir() else None,
            },
        },
        "summary": {
            "cases": len(records.cases),
            "verdicts": dict(sorted(records.counts().items())),
            "sections": {
                name: dict(sorted(counts.items())) for name, counts in records.by_section().items()
            },
        },
        "cases": [_case(c, settings.spec, rel) for c in records.cases],
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


def write(path: str | os.PathLike[str], state, targets: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    data = build(state, targets, where=path.resolve().parent)
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path


def schema() -> dict:
    """The JSON Schema of the report (shipped in the package)."""
    return json.loads(
        files(__package__).joinpath("schema").joinpath("conformance.schema.json").read_text()
    )
