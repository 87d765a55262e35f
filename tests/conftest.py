"""What the project's own test sessions share: a line on the kill matrix's fault runs
(tests/test_faults.py) every ``VFU_PROGRESS_SECONDS`` (30) while they go on, printed by the
process that owns the terminal (pytest-xdist's controller, or the only process), so that a
long run shows what it is doing; and a bytecode cache for the Python processes the tests
start.

The tests start a few hundred suites and servers. Where PYTHONDONTWRITEBYTECODE is set
(as in many CI images), each would compile, and assertion-rewrite, the suite's modules
anew: about 2 s of CPU a process. The variable is dropped for them: they keep their
bytecode where Python does (``__pycache__``, which git ignores), beside the bytecode
Python and pip wrote for the standard library and the installed packages. (A cache of
the session's own, PYTHONPYCACHEPREFIX, would leave those aside and compile everything
anew each session: in each xdist worker at once, at its start.)"""

from __future__ import annotations

import os
import sys
import threading

import kill_matrix as km
import pytest

_STOP = pytest.StashKey[threading.Event]()


def pytest_configure(config: pytest.Config) -> None:
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # for the workers and the processes
    sys.dont_write_bytecode = False  # and for what this one imports from now on


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


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The kill matrix's tests first: their fault runs (a third of the session's CPU) go
    on in the background from the start, beside the other tests, instead of trailing
    after them; the worker that holds the kill matrix's tests waits on the runs while the
    others take its remaining tests (--dist worksteal)."""
    items.sort(key=lambda item: getattr(item.module, "__name__", "") != "test_faults")
