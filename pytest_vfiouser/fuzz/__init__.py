"""Fuzzing a vfio-user server, and reproducers of what it finds.

* ``_engine``: the Hypothesis settings profiles (``ci``, ``campaign``), the
  ``Fuzzer`` (one reused connection, the properties every example must keep),
  how the server frames what was sent (``plan_frames``), the runners of
  examples and state machines, and the run's counters.
* ``_reproducer``: a conversation from wire logs as a standalone
  standard-library script (``write_reproducer``); the reports use it too.

May import: ``verdict``, ``protocol``, ``client``, ``target``, ``device`` and ``strategies``.
"""

from ._engine import (
    DEFAULT_FUZZ_MODE,
    FUZZ_MODES,
    Frame,
    Fuzzer,
    FuzzFailure,
    FuzzStats,
    Hang,
    TargetLost,
    account,
    fuzz_settings,
    merge_worker_output,
    mode_of_profile,
    plan_frames,
    private_storage,
    register_profiles,
    run_examples,
    run_machine,
    run_with,
    stats,
    summary_lines,
    worker_output,
)
from ._reproducer import conversation_steps, reproducer_script, write_reproducer

__all__ = [
    "DEFAULT_FUZZ_MODE",
    "FUZZ_MODES",
    "Frame",
    "FuzzFailure",
    "FuzzStats",
    "Fuzzer",
    "Hang",
    "TargetLost",
    "account",
    "conversation_steps",
    "fuzz_settings",
    "merge_worker_output",
    "mode_of_profile",
    "plan_frames",
    "private_storage",
    "register_profiles",
    "reproducer_script",
    "run_examples",
    "run_machine",
    "run_with",
    "stats",
    "summary_lines",
    "worker_output",
    "write_reproducer",
]
