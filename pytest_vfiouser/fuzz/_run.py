"""What a pytest run knows of fuzzing without importing Hypothesis: the ``--vfu-fuzz``
modes and the run's counters (examples, messages, rates) for the terminal summary,
collected per pytest process and merged from xdist workers (``worker_output``,
``merge_worker_output``). The plugin imports this only: Hypothesis (the engine) is
imported when a fuzz case runs, not by every pytest run that loads the plugin.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

__all__ = [
    "DEFAULT_FUZZ_MODE",
    "FUZZ_MODES",
    "PROFILES",
    "REDIS_SCHEMES",
    "SHOW_STATISTICS",
    "SHRINK_SECONDS",
    "FuzzStats",
    "account",
    "merge_worker_output",
    "mode_of_profile",
    "stats",
    "summary_lines",
    "worker_output",
]

# --vfu-fuzz: the Hypothesis settings profile of the fuzz cases, by mode
PROFILES = {"ci": "vfu-fuzz-ci", "campaign": "vfu-fuzz-campaign"}
FUZZ_MODES = tuple(PROFILES)
# Seconds a case may spend shrinking a failure, by mode: against a server restarted per
# connection each attempt costs a process start, and Hypothesis's own limit is 300 s.
SHRINK_SECONDS = {"ci": 3.0, "campaign": 60.0}
DEFAULT_FUZZ_MODE = "ci"
SHOW_STATISTICS = "--hypothesis-show-statistics"  # Hypothesis's pytest option
# --vfu-fuzz-db: a URL of these schemes names a Redis server (redis-py's), else a directory
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def mode_of_profile(name: str | None) -> str | None:
    """The fuzz mode whose Hypothesis profile is ``name`` (``vfu-fuzz-campaign``: campaign),
    None for any other profile."""
    return next((mode for mode, profile in PROFILES.items() if profile == name), None)


@dataclass
class FuzzStats:
    """Examples and messages of the fuzz cases of one run, and the time they took."""

    examples: int = 0
    messages: int = 0
    seconds: float = 0.0
    cases: int = 0
    restarts: int = 0
    reproducers: list[str] = field(default_factory=list)

    def add(self, examples: int, messages: int, seconds: float, restarts: int = 0) -> None:
        self.cases += 1
        self.examples += examples
        self.messages += messages
        self.seconds += seconds
        self.restarts += restarts

    def as_dict(self) -> dict:
        return {
            "examples": self.examples,
            "messages": self.messages,
            "seconds": self.seconds,
            "cases": self.cases,
            "restarts": self.restarts,
            "reproducers": list(self.reproducers),
        }

    def merge(self, other: dict | None) -> None:
        if not other:
            return
        for key in ("examples", "messages", "seconds", "cases", "restarts"):
            setattr(self, key, getattr(self, key) + other.get(key, 0))
        self.reproducers += [r for r in other.get("reproducers", []) if r not in self.reproducers]

    def lines(self, mode: str, workers: int = 0) -> list[str]:
        if not self.cases:
            return []
        rate = (lambda n: f"{n / self.seconds:,.0f}") if self.seconds > 0 else (lambda n: "-")
        where = f", summed over {workers} workers" if workers > 1 else ""
        out = [
            f"fuzzing ({mode}): {self.cases} cases, {self.examples:,} examples, "
            f"{self.messages:,} messages in {self.seconds:.1f} s{where} "
            f"({rate(self.examples)} examples/s, {rate(self.messages)} messages/s)"
        ]
        if self.restarts:
            out.append(
                f"fuzzing: the server was restarted {self.restarts} times (it exited after "
                "a client closed, or serves one client per process)"
            )
        out += [f"fuzzing: reproducer {_shown(path)}" for path in self.reproducers]
        return out


def _shown(path: str) -> str:
    """A path relative to the current directory when it is beneath it (shorter, and as the
    other reports' paths are given)."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


_STATS_KEY = pytest.StashKey[FuzzStats]()
_WORKERS_KEY = pytest.StashKey[int]()


def stats(config) -> FuzzStats:
    """This run's counters (on ``config.stash``)."""
    if _STATS_KEY not in config.stash:
        config.stash[_STATS_KEY] = FuzzStats()
    return config.stash[_STATS_KEY]


def worker_output(config) -> dict | None:
    """What an xdist worker sends the controller (None when it fuzzed nothing)."""
    s = config.stash.get(_STATS_KEY, None)
    return s.as_dict() if s is not None and s.cases else None


def merge_worker_output(config, output: dict | None) -> None:
    if output:
        stats(config).merge(output)
        config.stash[_WORKERS_KEY] = config.stash.get(_WORKERS_KEY, 0) + 1


def summary_lines(config, mode: str = DEFAULT_FUZZ_MODE) -> list[str]:
    """For the terminal summary (``mode``: the run's --vfu-fuzz): nothing when no fuzz case ran."""
    s = config.stash.get(_STATS_KEY, None) if config is not None else None
    if s is None:
        return []
    return s.lines(mode, config.stash.get(_WORKERS_KEY, 0))


def account(config, fuzzer, node=None) -> None:
    """Add a fuzzer's counts to the run's (for the terminal summary); with
    --hypothesis-show-statistics, give ``node`` (the case's item) the statistics of its runs,
    where Hypothesis's pytest plugin reads them."""
    if node is not None and fuzzer.statistics and config.getoption(SHOW_STATISTICS, False):
        node.hypothesis_statistics = f"{node.nodeid}:\n" + "\n".join(fuzzer.statistics)
    s = stats(config)
    s.add(fuzzer.examples, fuzzer.messages, fuzzer.seconds, fuzzer.restarts)
    if fuzzer.reproducer_written:
        s.reproducers.append(fuzzer.reproducer_written)
