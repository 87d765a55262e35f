"""The server under test as a process: start, watch, stop, and which one each test talks to.

* ``_process``: one server (``Target``, a command line we start; ``ExternalTarget``,
  a socket somebody else serves) and what /proc tells of it (listening sockets,
  fd counts, RSS, CPU use, a process on its way out).
* ``_manager``: the per-session ``TargetManager`` (the restart policy, crash
  bookkeeping, servers that serve one client, a target or what cases need of it gone
  for the run) and the ``TargetHandle`` a test holds.
* ``_tree``: every process a server started (marker, subreaper, /proc's process tree).
* ``_guard``: the watchdog that stops the servers if the suite dies without doing it.
* ``_interrupt``: SIGINT, SIGTERM and SIGHUP as an exception (``Interrupted``), held
  back while a server is being started or stopped.

May import: ``protocol`` (nothing else of the suite: the manager takes any
settings object with the attributes it names).
"""

from ._interrupt import (
    Interrupted,
    deferred_signals,
    handle_signals,
    restore_signals,
    signal_received,
    signals_ending,
)
from ._manager import (
    COULD_NOT_START,
    DEATH_WAIT,
    DEVICE,
    NEGOTIATION,
    CrashInfo,
    TargetCrashed,
    TargetHandle,
    TargetManager,
    TargetNotRun,
    TargetSettings,
    TargetUnavailable,
    spinning,
)
from ._process import (
    DEFAULT_STARTUP_TIMEOUT,
    ExternalTarget,
    ResourceSnapshot,
    Target,
    TargetStartError,
    cpu_busy,
    fd_count,
    is_exiting,
    is_listening,
    listening_inodes,
    rss_bytes,
    wait_listening,
)

__all__ = [
    "COULD_NOT_START",
    "DEATH_WAIT",
    "DEFAULT_STARTUP_TIMEOUT",
    "DEVICE",
    "NEGOTIATION",
    "CrashInfo",
    "Interrupted",
    "ExternalTarget",
    "ResourceSnapshot",
    "Target",
    "TargetCrashed",
    "TargetHandle",
    "TargetManager",
    "TargetNotRun",
    "TargetSettings",
    "TargetStartError",
    "TargetUnavailable",
    "cpu_busy",
    "deferred_signals",
    "fd_count",
    "is_exiting",
    "is_listening",
    "listening_inodes",
    "handle_signals",
    "restore_signals",
    "rss_bytes",
    "spinning",
    "signal_received",
    "signals_ending",
    "wait_listening",
]
