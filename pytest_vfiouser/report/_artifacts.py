"""Per-case identity and the paths of the reports and their log files.

* ``case_key(case_id, nodeid)``: the stable id of one case in the reports,
  ``section/name`` plus the parametrization (``region_info/mmap-fd[region0]``);
  the node id for a test that is not a case.
* ``anchor(case_id, nodeid)``: the id attribute of the case's row in the HTML
  report (the case key; pytest-html's own node id for other tests), so that
  ``conformance.html#region_info/mmap-fd[region0]`` links to it.
* ``unwritable(path)``: why a report cannot be written at a path (checked
  before the run, so that a wrong path is a usage error, not a traceback at
  its end).
* Log files: a case that did not pass (FAIL, CRASH, HANG, ERROR, NON-STRICT,
  BASELINE, a MAY not met) gets a directory under the logs directory, beside
  the HTML report (``reports/conformance-logs/``; beside the JSON report
  without --html), holding

      wire.txt     every connection's wire log: decoded messages and hex
      repro.py     a standalone script replaying the conversation (fuzz: write_reproducer)
      stderr.txt   the tail of the server's stderr
      log.txt      pytest's text of the failure (traceback, captured output)

  written by the pytest process that ran the test (an xdist worker too); the
  reports link to them with relative paths, so that the HTML report itself
  stays small and opens fast whatever the number of failures.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import pytest

__all__ = [
    "MARKER",
    "STDERR_LINES",
    "WIRE_MESSAGES",
    "anchor",
    "case_key",
    "html_path",
    "junit_path",
    "logs_dir",
    "relative",
    "safe_relpath",
    "unwritable",
]

MARKER = ".pytest-vfiouser-logs"  # the logs directory is ours: emptied at the start of a run
STDERR_LINES = 300
WIRE_MESSAGES = 3000  # per connection, in wire.txt

_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+@\[\]-]")


def unwritable(path: str | os.PathLike[str]) -> str | None:
    """Why a report cannot be written at ``path``, its missing directories created, or None
    if it can. A file is created (and removed) in the nearest directory that exists: the
    permission bits do not tell (root may write anywhere, except where no file can be
    created, as in /proc)."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        return f"{path} is a directory"
    if path.exists():
        return None if os.access(path, os.W_OK) else f"{path} is not writable"
    existing = path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot create {path}: {existing} is not a directory"
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        return f"cannot create {path}: no file can be created in {existing} ({e.strerror})"
    return None


def case_key(case_id: str | None, nodeid: str) -> str:
    """``case_id[params]`` (the params of the node id), or the node id; no whitespace."""
    if case_id:
        name = nodeid.rsplit("::", 1)[-1]
        params = name[name.index("[") + 1 : -1] if "[" in name and name.endswith("]") else ""
        key = f"{case_id}[{params}]" if params else case_id
    else:
        key = nodeid
    return re.sub(r"\s", "_", key)


def anchor(case_id: str | None, nodeid: str) -> str:
    """The id of the case's row in the HTML report."""
    return case_key(case_id, nodeid) if case_id else nodeid


def safe_relpath(key: str) -> str:
    """The case's directory under the logs directory (``section/name[params]``)."""
    parts = key.split("/") if "::" not in key else [key]
    out = []
    for part in parts:
        safe = _UNSAFE.sub("_", part)[:96]
        if safe != part or safe in ("", ".", ".."):
            safe += "-" + hashlib.sha1(part.encode()).hexdigest()[:8]
        out.append(safe)
    return "/".join(out)


def html_path(config: pytest.Config) -> Path | None:
    """Where pytest-html writes the report (resolved as pytest-html does), if it does."""
    text = getattr(config.option, "htmlpath", None)
    if not text or not config.pluginmanager.has_plugin("html"):
        return None
    return Path.cwd() / Path(os.path.expandvars(text)).expanduser()


def junit_path(config: pytest.Config) -> Path | None:
    text = getattr(config.option, "xmlpath", None)
    return Path(os.path.abspath(os.path.expanduser(os.path.expandvars(text)))) if text else None


def logs_dir(config: pytest.Config, json_path: Path | None = None) -> Path | None:
    """``<report stem>-logs`` beside the HTML report, else the JSON report; None without either."""
    report = html_path(config) or json_path
    return None if report is None else report.parent / f"{report.stem}-logs"


def relative(path: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    """``path`` relative to the directory ``start``, with forward slashes."""
    return Path(os.path.relpath(path, start)).as_posix()
