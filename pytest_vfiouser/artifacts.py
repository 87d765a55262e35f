"""Per-case identity and log files for the reports.

* ``case_key(case_id, nodeid)``: the stable id of one case in the reports,
  ``section/name`` plus the parametrization (``region_info/mmap-fd[region0]``);
  the node id for a test that is not a case.
* ``anchor(case_id, nodeid)``: the id attribute of the case's row in the HTML
  report (the case key; pytest-html's own node id for other tests), so that
  ``conformance.html#region_info/mmap-fd[region0]`` links to it.
* Log files: a case that did not pass (FAIL, CRASH, HANG, ERROR, NON-STRICT,
  BASELINE, a MAY not met) gets a directory under the logs directory, beside
  the HTML report (``reports/conformance-logs/``; beside the JSON report
  without --html), holding

      wire.txt     every connection's wire log: decoded messages and hex
      repro.py     a standalone script replaying the conversation (reproducer.py)
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
import shutil
from pathlib import Path

import pytest

__all__ = ["anchor", "case_key", "html_path", "logs_dir", "relative"]

MARKER = ".pytest-vfiouser-logs"  # the logs directory is ours: emptied at the start of a run
STDERR_LINES = 300
WIRE_MESSAGES = 3000  # per connection, in wire.txt

_LOGS_KEY = pytest.StashKey["Path | None"]()
_WRITTEN_KEY = pytest.StashKey[dict]()
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+@\[\]-]")


def case_key(case_id: str | None, nodeid: str) -> str:
    """``case_id[params]`` (the params of the node id), or the node id; no whitespace."""
    if case_id:
        name = nodeid.rsplit("::", 1)[-1]
        params = name[name.index("[") + 1:-1] if "[" in name and name.endswith("]") else ""
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
    """``<report stem>-logs`` beside the HTML report, else beside the JSON report; None without either."""
    report = html_path(config) or json_path
    return None if report is None else report.parent / f"{report.stem}-logs"


def relative(path: str | os.PathLike[str], start: str | os.PathLike[str]) -> str:
    """``path`` relative to the directory ``start``, with forward slashes."""
    return Path(os.path.relpath(path, start)).as_posix()


def configure(config: pytest.Config, json_path: Path | None) -> None:
    """Decide the logs directory; empty it (once, in the controlling process)."""
    directory = logs_dir(config, json_path)
    config.stash[_LOGS_KEY] = directory
    if directory is None or hasattr(config, "workerinput"):
        return
    collecting = config.option.collectonly or getattr(config.option, "help", False)
    if directory.is_dir() and (directory / MARKER).exists() and not collecting:
        shutil.rmtree(directory, ignore_errors=True)


def after_phase(item: pytest.Item, report: pytest.TestReport) -> None:
    """From pytest_runtest_makereport (after the verdict): write the logs of a phase that did not pass.

    Adds the wire log sections to a failed call (for the terminal), and at
    teardown puts the paths written into ``report.vfu["artifacts"]`` and the
    case key (and wire log) into the JUnit properties.
    """
    from .fixtures import wire_log_sections

    data = getattr(report, "vfu", None)
    if data is None:
        return
    did_not_pass = report.failed or (report.skipped and hasattr(report, "wasxfail"))
    if report.when == "call" and did_not_pass:
        report.sections.extend(wire_log_sections(item))
    key = case_key(data.get("case_id"), item.nodeid)
    written = item.stash.setdefault(_WRITTEN_KEY, {})
    directory = item.config.stash.get(_LOGS_KEY, None)
    if did_not_pass and directory is not None:
        try:
            _write(item, report, data, key, directory / safe_relpath(key), written)
        except OSError as e:
            report.sections.append(("vfio-user logs", f"could not write the logs of {key}: {e}"))
    data["artifacts"] = dict(written)
    if report.when == "teardown":
        props = [("vfu_id", key)]
        junit = junit_path(item.config)
        if junit is not None and "wire_log" in written:
            props.append(("vfu_wire_log", relative(written["wire_log"], junit.parent)))
        report.user_properties.extend(props)


def _write(item, report, data: dict, key: str, directory: Path, written: dict) -> None:
    from .fixtures import connection_logs
    from .reproducer import write_reproducer
    from .verdicts import HANDLE_KEY

    directory.mkdir(parents=True, exist_ok=True)
    root = item.config.stash.get(_LOGS_KEY, None)
    if root is not None and not (root / MARKER).exists():
        (root / MARKER).write_text("written by pytest-vfiouser; emptied at the start of each run\n")
    verdict = data.get("verdict") or report.outcome
    message = (data.get("message") or "").strip()
    title = f"pytest-vfiouser: {key} ({item.nodeid})\n{verdict}" + (
        f": {message.splitlines()[0][:300]}" if message else "")

    logs = connection_logs(item)
    if logs:
        chunks = [f"# {title.splitlines()[0]}\n# {verdict}: one section a connection; "
                  "'>>' sent by the suite, '<<' received from the server\n"]
        for n, log in enumerate(logs):
            try:
                text = log.render(last=WIRE_MESSAGES)
            except Exception as e:  # never let a log hide the real failure
                text = f"(wire log unavailable: {e})"
            chunks.append(f"\n== connection {n}\n{text}\n")
        path = directory / "wire.txt"
        path.write_text("".join(chunks))
        written["wire_log"] = str(path)
        try:
            conversations = [log.to_dicts()[-WIRE_MESSAGES:] for log in logs]
            written["reproducer"] = str(write_reproducer(directory / "repro.py", conversations, title))
        except Exception as e:  # pragma: no cover - a log that does not decode
            report.sections.append(("vfio-user logs", f"no reproducer for {key}: {e}"))

    handle = item.stash.get(HANDLE_KEY, None)
    tail = ""
    if handle is not None:
        try:
            tail = handle.stderr_tail(STDERR_LINES)
        except OSError:
            tail = ""
    if tail:
        path = directory / "stderr.txt"
        path.write_text(f"# the last {STDERR_LINES} lines (at most) of the stderr of "
                        f"{handle.command or handle.describe()}\n# after {item.nodeid} ({report.when})\n"
                        + tail + "\n")
        written["stderr"] = str(path)

    text = [f"==== {item.nodeid}: {report.when} {report.outcome} ({verdict})"]
    if report.longreprtext:
        text.append(report.longreprtext)
    text += [f"---- {header}\n{content}" for header, content in report.sections]
    path = directory / "log.txt"
    mode = "a" if "log" in written else "w"
    with open(path, mode, encoding="utf-8") as f:
        f.write("\n".join(text) + "\n\n")
    written["log"] = str(path)
