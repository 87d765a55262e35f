"""The server under test as a process: start, watch, stop, and which one each test talks to.

* ``_process``: one server (``Target``, a command line we start; ``ExternalTarget``,
  a socket somebody else serves) and what /proc tells of it (listening sockets,
  fd counts, RSS, a process on its way out).
* ``_manager``: the per-session ``TargetManager`` (the restart policy, crash
  bookkeeping, servers that serve one client, a target or what cases need of it gone
  for the run) and the ``TargetHandle`` a test holds.

May import: ``protocol`` (nothing else of the suite: the manager takes any
settings object with the attributes it names).
"""

from ._manager import (
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
)
from ._process import (
    DEFAULT_STARTUP_TIMEOUT,
    ExternalTarget,
    ResourceSnapshot,
    Target,
    TargetStartError,
    fd_count,
    is_exiting,
    is_listening,
    listening_inodes,
    rss_bytes,
    wait_listening,
)

__all__ = [
    "DEATH_WAIT",
    "DEFAULT_STARTUP_TIMEOUT",
    "DEVICE",
    "NEGOTIATION",
    "CrashInfo",
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
    "fd_count",
    "is_exiting",
    "is_listening",
    "listening_inodes",
    "rss_bytes",
    "wait_listening",
]
