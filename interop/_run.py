"""Runs of the conformance suite: one process group each, bounded by a wall-clock timeout.

A run is ``python -m pytest_vfiouser.cli`` (the ``vfio-user-conformance`` command) with
its reports under ``reports/interop/<name>-<revision>.*``; its output goes to
``<name>-<revision>.log`` beside them. A run that outlives its timeout is
interrupted (SIGINT to its process group: pytest stops its servers and finishes),
then killed (SIGKILL) after a grace period, and reported as "did not finish"; the
partial JSON report it may leave is moved to ``<name>-<revision>.unfinished.json``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GRACE", "SUITE", "Outcome", "Run", "plan", "run_all", "run_one", "stop_all"]

GRACE = 10.0  # seconds between the interrupt and the kill of a run past its timeout
SUITE = (sys.executable, "-m", "pytest_vfiouser.cli")

_live: set[int] = set()  # the process groups of the runs going on
_live_lock = threading.Lock()


@dataclass(frozen=True)
class Run:
    """One implementation at one spec revision."""

    name: str
    revision: str
    argv: tuple[str, ...]
    out: Path  # reports/interop

    @property
    def stem(self) -> str:
        return f"{self.name}-{self.revision}"

    @property
    def json(self) -> Path:
        return self.out / f"{self.stem}.json"

    @property
    def log(self) -> Path:
        return self.out / f"{self.stem}.log"

    @property
    def unfinished(self) -> Path:
        """Where the report of a run killed at its timeout is moved (it is partial)."""
        return self.out / f"{self.stem}.unfinished.json"


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the exit status; None when the run was killed
    duration: float
    finished: bool  # False: killed at the timeout


def plan(
    name: str,
    revision: str,
    server: str | None,
    options: Sequence[str],
    out: Path,
    client: bool = False,
) -> Run:
    """The run of one implementation (``server``: its --vfu-server command, None for the
    embedded reference server; with ``client``, the --vfu-client command of a client
    mode run) at one revision."""
    stem = out / f"{name}-{revision}"
    argv = [*SUITE, *(["client"] if client else []), "-p", "no:randomly", "-q"]
    if server is not None:
        argv += ["--vfu-client" if client else "--vfu-server", server]
    argv += [
        "--vfu-spec",
        revision,
        "--vfu-json",
        f"{stem}.json",
        "--html",
        f"{stem}.html",
        "--junitxml",
        f"{stem}.xml",
        *options,
    ]
    return Run(name, revision, tuple(argv), out)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        pass


def run_one(
    argv: Sequence[str],
    log: Path,
    timeout: float,
    cwd: Path | None = None,
    grace: float = GRACE,
) -> Outcome:
    """Run ``argv`` in a process group of its own, output to ``log``; past ``timeout``
    seconds interrupt the group, and kill it ``grace`` seconds later."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "wb") as out:
        child = subprocess.Popen(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with _live_lock:
            _live.add(child.pid)
        try:
            try:
                status = child.wait(timeout)
                return Outcome(status, time.monotonic() - start, True)
            except subprocess.TimeoutExpired:
                pass
            _stop(child, grace)
            return Outcome(None, time.monotonic() - start, False)
        finally:
            with _live_lock:
                _live.discard(child.pid)


def _stop(child: subprocess.Popen, grace: float) -> None:
    """Interrupt the run's process group; kill it ``grace`` seconds later."""
    _signal_group(child.pid, signal.SIGINT)
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(child.pid, signal.SIGKILL)  # and whatever the run left in its group
    child.wait()


def stop_all() -> None:
    """Interrupt the runs going on (interop itself is being stopped): pytest stops their
    servers, which live in sessions of their own."""
    with _live_lock:
        groups = list(_live)
    for pgid in groups:
        _signal_group(pgid, signal.SIGINT)


def run_all(
    runs: Sequence[Run],
    jobs: int,
    timeout: float,
    cwd: Path | None = None,
    done: Callable[[Run, Outcome], None] | None = None,
    grace: float = GRACE,
) -> dict[Run, Outcome]:
    """Every run, ``jobs`` at a time; ``done`` is called as each one ends."""

    def one(run: Run) -> Outcome:
        for stale in (run.json, run.unfinished):  # an earlier run's must not pass for this one's
            stale.unlink(missing_ok=True)
        outcome = run_one(run.argv, run.log, timeout, cwd, grace)
        if not outcome.finished and run.json.exists():
            run.json.replace(run.unfinished)
        if done is not None:
            done(run, outcome)
        return outcome

    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    try:
        outcomes = list(pool.map(one, runs))
    except BaseException:  # KeyboardInterrupt, SystemExit (SIGTERM): the runs end too
        pool.shutdown(wait=False, cancel_futures=True)
        stop_all()
        raise
    pool.shutdown()
    return dict(zip(runs, outcomes, strict=True))
