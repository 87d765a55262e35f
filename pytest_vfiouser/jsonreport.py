"""The JSON report (--vfu-json): run metadata and one entry per case.

    {
      "format": "pytest-vfiouser/1",
      "run": {"suite_version", "started", "duration", "spec", "strict", "restart",
              "timeout", "profile": {"name", "path"}, "target": {...},
              "negotiated": {"major", "minor", "capabilities"} | null,
              "counts": {"PASS": n, ...}, "failed": bool},
      "cases": [{"nodeid", "case_id", "section", "level", "revisions", "verdict",
                 "duration", "message", "requirement", "observations", "resources"}]
    }

``failed`` is true when some case is FAIL, CRASH, HANG or ERROR.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from pathlib import Path

from . import __version__

__all__ = ["FORMAT", "build", "write"]

FORMAT = "pytest-vfiouser/1"


def build(state, targets: dict) -> dict:
    settings = state.settings
    profile = settings.profile
    records = state.records
    return {
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
                "socket": settings.socket,
                "starts": targets.get("starts", 0),
                "sigterm": targets.get("sigterm"),
                "persistence_note": targets.get("persistence_note"),
                "notes": targets.get("notes", []),
            },
            "negotiated": targets.get("negotiated"),
            "counts": dict(sorted(records.counts().items())),
            "failed": bool(records.failing()),
        },
        "cases": [c.to_json() for c in records.cases],
    }


def write(path: str | os.PathLike[str], state, targets: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(build(state, targets), indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return path
