"""A run that stops before its end: a signal, a KeyboardInterrupt, an internal error.

``Interruption`` is registered for every run but does nothing until ``watch()``:
the plugin calls it when the session runs conformance cases (or, on the xdist
controller, gathers their verdicts). From then on SIGINT, SIGTERM and SIGHUP end
the session the way Ctrl-C does (``target.handle_signals``), so the servers are
stopped and the reports written; what stopped the run is kept as
``RunState.interrupted`` ({"reason", "signal"}), which every report shows.
"""

from __future__ import annotations

import pytest

from pytest_vfiouser.target import (
    Interrupted,
    handle_signals,
    restore_signals,
    signal_received,
    signals_ending,
)

__all__ = ["Interruption"]


class Interruption:
    """pytest hooks that note why a run stopped early (one instance per run)."""

    def __init__(self, state):
        self.state = state
        self.watching = False
        self.worker_reason: dict | None = None  # an xdist worker's, when it was interrupted

    def watch(self) -> None:
        """The session runs conformance cases: handle the signals that would end it."""
        if not self.watching:
            self.watching = True
            handle_signals()

    def _stopped(self, reason: dict) -> None:
        state = self.state
        if self.watching and state.interrupted is None:
            state.interrupted = reason
            _junit_property(state.config, "vfu_interrupted", reason["reason"])

    # -- pytest hooks
    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo) -> None:
        if not self.watching:
            return
        signals_ending()  # a second signal must not cut the reports short
        name = signal_received()
        if name is None and isinstance(excinfo.value, Interrupted):
            name = excinfo.value.signal
        if name is not None:
            self._stopped({"reason": f"interrupted by {name}", "signal": name})
        elif self.worker_reason is not None:
            self._stopped(self.worker_reason)
        else:
            text = str(excinfo.value) or excinfo.typename
            self._stopped({"reason": f"interrupted: {text}", "signal": None})

    def pytest_internalerror(self, excrepr, excinfo: pytest.ExceptionInfo) -> None:
        if not self.watching:
            return
        signals_ending()
        message = str(excinfo.value).splitlines()[0] if str(excinfo.value) else ""
        self._stopped(
            {
                "reason": f"internal error of the suite: {excinfo.typename}"
                + (f": {message}" if message else ""),
                "signal": None,
            }
        )

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self) -> None:
        if self.watching:
            signals_ending()

    def worker_interrupted(self, reason: dict | None, worker: str) -> None:
        """xdist: a worker says why it stopped (the controller is told by a KeyboardInterrupt)."""
        if reason is not None and self.worker_reason is None:
            self.worker_reason = {**reason, "reason": f"{reason['reason']} ({worker})"}

    def pytest_unconfigure(self) -> None:
        if self.watching:
            self.watching = False
            restore_signals()


def _junit_property(config: pytest.Config, name: str, value: str) -> None:
    """A property of the JUnit XML's testsuite (pytest's junitxml plugin, when active).

    Set before its pytest_sessionfinish, which writes the file."""
    for plugin in config.pluginmanager.get_plugins():
        add = getattr(plugin, "add_global_property", None)
        if callable(add) and type(plugin).__name__ == "LogXML":
            add(name, value)
