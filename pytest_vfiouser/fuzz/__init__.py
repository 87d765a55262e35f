"""Fuzzing a vfio-user server, and reproducers of what it finds.

* ``_run``: the ``--vfu-fuzz`` modes and the run's counters (for the terminal
  summary, merged from xdist workers); no Hypothesis in it.
* ``_engine``: the Hypothesis settings profiles (``ci``, ``campaign``), the
  ``Fuzzer`` (one reused connection, the properties every example must keep),
  how the server frames what was sent (``plan_frames``), the runners of
  examples and state machines; Hypothesis's files in a temporary directory
  (``private_storage``), not ``.hypothesis/`` where the suite runs.
* ``_reproducer``: a conversation from wire logs as a standalone
  standard-library script (``write_reproducer``); the reports use it too.

The engine's names load lazily, on first use: the plugin imports this package in
every pytest run, and Hypothesis costs a few hundred milliseconds to import.

May import: ``verdict``, ``protocol``, ``client``, ``target``, ``device`` and ``strategies``.
"""

from ._reproducer import conversation_steps, reproducer_script, write_reproducer
from ._run import (
    DEFAULT_FUZZ_MODE,
    FUZZ_MODES,
    REDIS_SCHEMES,
    SHRINK_SECONDS,
    FuzzStats,
    account,
    merge_worker_output,
    mode_of_profile,
    stats,
    summary_lines,
    worker_output,
)

__all__ = [
    "DEFAULT_FUZZ_MODE",
    "FUZZ_MODES",
    "Frame",
    "FuzzFailure",
    "FuzzStats",
    "Fuzzer",
    "Hang",
    "REDIS_SCHEMES",
    "SHRINK_SECONDS",
    "TargetLost",
    "account",
    "conversation_steps",
    "example_database",
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

# from ._engine, which imports Hypothesis
_ENGINE = frozenset(
    {
        "Frame",
        "FuzzFailure",
        "Fuzzer",
        "Hang",
        "TargetLost",
        "example_database",
        "fuzz_settings",
        "plan_frames",
        "private_storage",
        "register_profiles",
        "run_examples",
        "run_machine",
        "run_with",
    }
)


def __getattr__(name: str):
    if name not in _ENGINE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module  # noqa: PLC0415  (lazy: see the docstring)

    return getattr(import_module("._engine", __name__), name)
