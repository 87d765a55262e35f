"""What the project's own test sessions share: a line on the kill matrix's fault runs
(tests/test_faults.py) every ``VFU_PROGRESS_SECONDS`` (30) while they go on, printed by the
process that owns the terminal (pytest-xdist's controller, or the only process), so that a
long run shows what it is doing."""

from __future__ import annotations

import os
import threading

import kill_matrix as km
import pytest

_STOP = pytest.StashKey[threading.Event]()


def pytest_sessionstart(session: pytest.Session) -> None:
    config = session.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if os.environ.get("PYTEST_XDIST_WORKER") or reporter is None:
        return
    out = km.shared_runs(config._tmp_path_factory.getbasetemp())  # this process: no worker
    every = float(os.environ.get("VFU_PROGRESS_SECONDS", "30"))
    stop = config.stash[_STOP] = threading.Event()

    def report() -> None:
        last = None
        while not stop.wait(every):
            line = km.progress(out)
            if line is not None and line != last:
                reporter.write_line(line)
                last = line

    threading.Thread(target=report, name="fault-runs-progress", daemon=True).start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop = session.config.stash.get(_STOP, None)
    if stop is not None:
        stop.set()
