"""Writing the log files of a case that did not pass (the paths are report/'s).

Called from pytest_runtest_makereport after the verdict: see
``pytest_vfiouser.report`` for the layout of the logs directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pytest_vfiouser.client import render_dicts
from pytest_vfiouser.fuzz import write_reproducer
from pytest_vfiouser.report import (
    MARKER,
    STDERR_LINES,
    WIRE_MESSAGES,
    CaseRecord,
    case_key,
    junit_path,
    logs_dir,
    relative,
    safe_relpath,
)

from ._fixtures import connection_logs, wire_log_sections
from ._judge import HANDLE_KEY

__all__ = ["after_phase", "configure", "start"]

_LOGS_KEY = pytest.StashKey["Path | None"]()
_WRITTEN_KEY = pytest.StashKey[dict]()
_STARTED = pytest.StashKey[bool]()


def configure(config: pytest.Config, json_path: Path | None) -> None:
    """Decide the logs directory (``start`` empties it)."""
    config.stash[_LOGS_KEY] = logs_dir(config, json_path)


def start(config: pytest.Config) -> None:
    """Cases are about to run: empty the logs directory of the last run (once, in the
    controlling process). Not before: a run that judges no case (--collect-only, a -k
    that selects nothing, a usage error) leaves the last run's reports and their logs."""
    directory = config.stash.get(_LOGS_KEY, None)
    if directory is None or hasattr(config, "workerinput") or config.stash.get(_STARTED, False):
        return
    config.stash[_STARTED] = True
    if directory.is_dir() and (directory / MARKER).exists():
        shutil.rmtree(directory, ignore_errors=True)


def after_phase(item: pytest.Item, report: pytest.TestReport) -> None:
    """From pytest_runtest_makereport (after the verdict): the logs of a phase that did not pass.

    Adds the wire log sections to a failed call (for the terminal), puts the
    paths written so far into the phase's record (``artifacts``) and, at
    teardown, the case key (and wire log) into the JUnit properties.
    """
    record = CaseRecord.of(report)
    if record is None:
        return
    did_not_pass = report.failed or (report.skipped and hasattr(report, "wasxfail"))
    if report.when == "call" and did_not_pass:
        report.sections.extend(wire_log_sections(item))
    key = case_key(record.case_id, item.nodeid)
    written = item.stash.setdefault(_WRITTEN_KEY, {})
    directory = item.config.stash.get(_LOGS_KEY, None)
    if did_not_pass and directory is not None:
        try:
            _write(item, report, record, key, directory / safe_relpath(key), written)
        except OSError as e:
            report.sections.append(("vfio-user logs", f"could not write the logs of {key}: {e}"))
    record.artifacts = dict(written)
    record.attach(report)
    if report.when == "teardown":
        props = [("vfu_id", key)]
        junit = junit_path(item.config)
        if junit is not None and "wire_log" in written:
            props.append(("vfu_wire_log", relative(written["wire_log"], junit.parent)))
        report.user_properties.extend(props)


def _write(item, report, record: CaseRecord, key: str, directory: Path, written: dict) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    root = item.config.stash.get(_LOGS_KEY, None)
    if root is not None and not (root / MARKER).exists():
        (root / MARKER).write_text("written by pytest-vfiouser; emptied at the start of each run\n")
    verdict = record.verdict or report.outcome
    message = record.message.strip()
    title = f"pytest-vfiouser: {key} ({item.nodeid})\n{verdict}" + (
        f": {message.splitlines()[0][:300]}" if message else ""
    )

    logs = connection_logs(item)
    if logs:
        chunks = [
            f"# {title.splitlines()[0]}\n# {verdict}: one section a connection; "
            "'>>' sent by the suite, '<<' received from the server\n"
        ]
        conversations = []  # each log decoded once, for wire.txt and the reproducer
        for n, log in enumerate(logs):
            try:
                dicts = log.to_dicts(last=WIRE_MESSAGES)
                text = render_dicts(dicts, log.dropped)
            except Exception as e:  # never let a log hide the real failure
                dicts, text = None, f"(wire log unavailable: {e})"
            conversations.append(dicts)
            chunks.append(f"\n== connection {n}\n{text}\n")
        path = directory / "wire.txt"
        path.write_text("".join(chunks))
        written["wire_log"] = str(path)
        why = "a wire log did not decode" if None in conversations else None
        if why is None:
            try:
                path = write_reproducer(directory / "repro.py", conversations, title)
                written["reproducer"] = str(path)
            except Exception as e:  # pragma: no cover - a conversation it cannot replay
                why = str(e)
        if why is not None:
            report.sections.append(("vfio-user logs", f"no reproducer for {key}: {why}"))

    handle = item.stash.get(HANDLE_KEY, None)
    tail = ""
    if handle is not None:
        try:
            tail = handle.stderr_tail(STDERR_LINES)
        except OSError:
            tail = ""
    if tail:
        path = directory / "stderr.txt"
        path.write_text(
            f"# the last {STDERR_LINES} lines (at most) of the stderr of "
            f"{handle.command or handle.describe()}\n# after {item.nodeid} ({report.when})\n"
            + tail
            + "\n"
        )
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
