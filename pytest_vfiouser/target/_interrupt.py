"""Signals that end a run: SIGINT, SIGTERM, SIGHUP become an exception, never a sudden death.

``handle_signals()`` (the plugin calls it for a conformance session, ``restore_signals()`` at
its end) replaces the default action of SIGTERM and SIGHUP (death, with no report
and the servers left running) and Python's SIGINT handler by one that raises
``Interrupted``, a ``KeyboardInterrupt``: pytest then ends the session as after a
Ctrl-C, and the suite stops its servers and writes its reports. A signal the
process ignores (``nohup``) stays ignored.

``deferred_signals()`` marks a step that an exception must not cut in half: between
fork() and the moment the suite records the child's pid, or while it stops a
server. A signal received during it is raised when the step is done.
``signals_ending()`` says the session is ending: from then on a signal (a second
Ctrl-C, SIGTERM after SIGINT from a CI runner) is noted, not raised, so that the
servers are stopped and the reports written; every step of that is bounded.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "Interrupted",
    "deferred_signals",
    "signals_ending",
    "handle_signals",
    "signal_received",
    "restore_signals",
]

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """The run was interrupted by ``signal`` (its name, e.g. "SIGTERM")."""

    def __init__(self, signum: int):
        self.signal = signal.Signals(signum).name
        super().__init__(f"interrupted by {self.signal}")


_previous: dict[int, object] = {}
_received: str | None = None  # the first signal since handle_signals()
_pending: int | None = None  # received during a deferred step
_depth = 0
_ending = False


def _handler(signum: int, frame) -> None:
    global _received, _pending
    if _received is None:
        _received = signal.Signals(signum).name
    if _ending:
        return
    if _depth:
        _pending = _pending or signum
        return
    raise Interrupted(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def handle_signals() -> bool:
    """Handle SIGINT, SIGTERM and SIGHUP (those at their default action); True if some now
    are. Only the main thread can: elsewhere, nothing changes."""
    if not _main_thread():
        return False
    for signum in SIGNALS:
        if signum in _previous:
            continue
        current = signal.getsignal(signum)
        if current in (signal.SIG_DFL, signal.default_int_handler):
            _previous[signum] = current
            signal.signal(signum, _handler)
    return bool(_previous)


def restore_signals() -> None:
    """Put back the handlers ``handle_signals()`` replaced; forget what was received."""
    global _received, _pending, _ending
    if not _main_thread():
        return
    for signum, handler in _previous.items():
        signal.signal(signum, handler)
    _previous.clear()
    _received = _pending = None
    _ending = False


def signals_ending() -> None:
    """The session is ending: note signals from now on, do not raise them."""
    global _ending, _pending
    _ending, _pending = True, None


def signal_received() -> str | None:
    """The name of the first signal received since ``handle_signals()``, if any."""
    return _received


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold back ``Interrupted`` until the block is done (main thread; nests)."""
    global _depth, _pending
    if not _main_thread():
        yield
        return
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending is not None and not _ending:
            signum, _pending = _pending, None
            raise Interrupted(signum)
