"""The per-session target manager: which server process each test talks to.

One ``TargetManager`` per pytest process (so one per pytest-xdist worker).
Each test that uses ``vfu_target`` gets a ``TargetHandle`` from
``acquire()`` and gives it back with ``release()``.  The restart policy
decides when a fresh server is started (per-test, per-module, per-session);
independently of it, a server that crashed, hung, exited or stopped
listening is replaced before the next test.

Bookkeeping kept for the summary: every start, every stop and whether
SIGTERM was honoured, the note that the server does not persist across
clients (or stays alive without serving another), crashes during device
discovery.

Whatever a server forks is stopped with it (``Target.stop``); a server that
daemonizes is followed to the process that listens, and said so in a note.

Two things end the run's use of the target: it could not be started, or it
stopped answering (after a HANG, a fresh server did not answer VERSION either).
The case that found it has its verdict (ERROR, HANG); every later case is
not run (``TargetNotRun``, NOT-RUN) and points at it. Less than the whole
target may be gone (``block``): what some cases need of it (``NEGOTIATION``, a
connection negotiated with the client's defaults; ``DEVICE``, the device's
description) when VERSION or device discovery failed. The cases needing it ask
(``check``): the first is judged for it, the later ones are not run; cases that
need only a running server still run.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pytest

from ._interrupt import deferred_signals
from ._process import (
    DEFAULT_STARTUP_TIMEOUT,
    ExternalTarget,
    ResourceSnapshot,
    Target,
    TargetStartError,
    cpu_busy,
    is_exiting,
)

__all__ = [
    "DEATH_WAIT",
    "DEVICE",
    "NEGOTIATION",
    "CrashInfo",
    "TargetCrashed",
    "TargetHandle",
    "TargetManager",
    "TargetNotRun",
    "TargetSettings",
    "TargetUnavailable",
    "spinning",
]


class TargetSettings(Protocol):
    """What the manager reads of the run's settings (the plugin's ``Settings`` has it)."""

    server: tuple[str, ...] | str | None  # the command-line template, {socket}/{fd} not filled in
    socket: str | None  # --vfu-socket: a server somebody else runs
    env: dict[str, str]
    restart: str  # per-test | per-module | per-session
    embedded: bool  # the server is the embedded reference server
    command_text: str
    start_timeout: float  # seconds a started server gets to listen


# After a test closed its connections, how long to wait for the server to
# release what they used (fd count back to where it was) or to exit.
SETTLE_SECONDS = 0.5
# The first time a client closed, how long to watch whether the server exits.
PROBE_SECONDS = 0.1
# After a connection broke, how long a dying server gets to be reaped; one that does not
# show as exiting within DEATH_GRACE closed the connection and lives on: not waited for.
DEATH_WAIT = 1.0
DEATH_GRACE = 0.05
# How long a server the kernel shows exiting (or dumping core) is waited for.
DYING_WAIT = 10.0
# A server seen to exit after its clients that still runs after one: how long it gets to
# exit after all, how long its CPU use is then measured, and what share of a CPU is spinning.
LEFT_BEHIND_EXIT = 0.2
SPIN_WINDOW = 0.2
SPINNING = 0.5


def spinning(busy: float) -> str | None:
    """What a server left behind after its client does wrong, given the share of a CPU it
    uses (``TargetHandle.left_behind``): the SHOULD it breaks if it spins, else None."""
    if busy < SPINNING:
        return None
    return (
        f"the server (which exits once its client is gone) neither exited nor served a new "
        f"client, and it uses {busy:.0%} of a CPU with no client: Standard tools and "
        "mechanisms should be used on both sides to validate input and prevent against "
        "denial of service scenarios"
    )


# Failed starts in a row after which the target could not start (for the rest of the run).
MAX_START_FAILURES = 2
COULD_NOT_START = "the target could not start"
STOPPED_ANSWERING = "the target stopped answering"
ONE_CLIENT_REASON = (
    "the server stays alive after its client disconnects but does not serve another client"
)
ONE_CLIENT_NOTE = f"{ONE_CLIENT_REASON}; each case got a fresh server"
DAEMONIZES = "the server daemonizes"
ESCAPES = "the server starts processes outside its session (setsid)"
# What a case may need of the target besides a running server (``block``, ``check``).
NEGOTIATION = "negotiation"  # a connection negotiated with the client's defaults
DEVICE = "device"  # the device's description (discovery)
_TARGET = ""  # the whole target: every case needs it


class TargetUnavailable(Exception):
    """The target could not be started (or must not be, after repeated failures)."""


class TargetNotRun(pytest.skip.Exception):
    """A case not run because the target is gone for the run (it could not start, or it
    stopped answering); the message names the case that found it (NOT-RUN)."""


class TargetCrashed(Exception):
    """Raised at a test's teardown when the server was killed by a signal after the test."""


@dataclass
class _Block:
    """What is gone for the run, why, and the case judged for it ("" until one asks)."""

    what: str
    detail: str
    case: str
    first: Callable[[str], BaseException]  # what the case judged for it raises

    @property
    def message(self) -> str:
        return f"{self.what}: {self.detail}"


@dataclass(frozen=True)
class CrashInfo:
    """A server killed by a signal."""

    signal: str
    core_note: str | None
    stderr_tail: str
    command: str
    stderr_path: str = ""

    @classmethod
    def of(cls, t: Target | ExternalTarget, wait: float = 0.0) -> CrashInfo | None:
        """What killed ``t``, if a signal did (waiting up to ``wait`` s for it to die, if it
        is dying)."""
        rc = _reap_if_dying(t, wait) if wait else t.poll()
        if rc is None or rc >= 0:
            return None
        return cls(
            signal=t.signal_name or f"signal {-rc}",
            core_note=t.core_note(),
            stderr_tail=t.stderr_tail(),
            command=t.command or "",
            stderr_path=str(t.stderr_path),
        )

    def message(self) -> str:
        lines = [
            f"server killed by {self.signal}" + (f" ({self.core_note})" if self.core_note else "")
        ]
        lines.append(f"  command: {self.command}")
        if self.stderr_tail:
            lines.append(f"  last lines of its stderr ({self.stderr_path}):")
            lines.extend("    " + line for line in self.stderr_tail.splitlines())
        else:
            lines.append("  stderr: (empty)")
        return "\n".join(lines)


class TargetHandle:
    """What the ``vfu_target`` fixture gives a test: the server it talks to."""

    def __init__(self, manager: TargetManager, target: Target | ExternalTarget):
        self._manager = manager
        self.target = target
        self.before: ResourceSnapshot | None = None  # before the test's first connection
        self.after: ResourceSnapshot | None = None  # after its connections closed
        self.connected = False
        self.hung = False  # a reply timed out: replace the server after the test
        self.case = ""  # the test it was handed to (named when the target stops answering)
        self.crash_reported = False

    # -- what tests read
    @property
    def persistent(self) -> bool | None:
        """Whether the server outlives its clients (None until the suite knows)."""
        return self._manager.persistent

    @property
    def serves_one_client(self) -> bool:
        """Whether the server stays alive after its client but serves no other one (seen
        by a probe; each case then gets a process of its own)."""
        return self._manager.one_client

    @property
    def socket_path(self) -> str:
        return self.target.socket_path

    @property
    def pid(self) -> int | None:
        return self.target.pid

    @property
    def command(self) -> str | None:
        return self.target.command

    @property
    def template(self):
        """The server's command-line template ({socket}/{fd} not filled in), as given
        with --vfu-server (or the embedded default); None for --vfu-socket."""
        return self._manager.settings.server if self.managed else None

    @property
    def env(self) -> dict[str, str]:
        """The extra environment the server is started with (--vfu-env)."""
        return dict(self._manager.settings.env)

    @property
    def alive(self) -> bool:
        return self.target.alive

    @property
    def managed(self) -> bool:
        """Whether the suite started this server (else: --vfu-socket)."""
        return self.target.managed

    def snapshot(self) -> ResourceSnapshot:
        """The server's open fd count and RSS now (None where unknown)."""
        return self.target.snapshot()

    @property
    def exits_after_clients(self) -> bool:
        """Whether the server was seen to exit after its clients, and never to outlive one."""
        return self._manager.exits_after_clients

    def left_behind(self) -> float | None:
        """After its client left: None when the server exited (or is one that outlives its
        clients); else it was seen to exit after its clients and still runs LEFT_BEHIND_EXIT
        s later (it neither exits nor, as a rule, serves another: as one that serves one
        client, which the spec allows), and this is the share of one CPU it uses with no
        client (SPINNING and above: it spins)."""
        if not self._manager.exits_after_clients or not self.managed:
            return None
        deadline = time.monotonic() + LEFT_BEHIND_EXIT
        while self.alive and time.monotonic() < deadline:
            time.sleep(0.005)
        if not self.alive:
            return None
        return cpu_busy(self.pid, SPIN_WINDOW) or 0.0

    def stderr_tail(self, lines: int = 20) -> str:
        return self.target.stderr_tail(lines)

    def describe(self) -> str:
        return self.target.describe()

    def fresh(self) -> TargetHandle:
        """Replace the server by a brand-new process (for tests that need one).

        Close your connections first.  Skips the test (UNIMPLEMENTED) when the
        server is not one the suite starts.
        """
        if not self.managed:
            pytest.skip("needs a server the suite starts (--vfu-server), not --vfu-socket")
        self._manager.replace(self)
        self.before = self.after = None
        self.connected = False
        return self

    restart = fresh

    # -- used by the fixtures and the verdicts
    def note_connect(self, second_client: bool = False) -> None:
        """Called before each connection the test makes.

        A server that serves one client per process would never answer a second
        connection: the test is skipped (UNIMPLEMENTED), unless it checks exactly that
        (``second_client``)."""
        if self.connected and self._manager.one_client and not second_client:
            pytest.skip(f"needs a second client of one server process; {ONE_CLIENT_REASON}")
        if not self.connected:
            self.connected = True
            self.before = self.target.snapshot()

    def crash(self, wait: float = 0.0) -> CrashInfo | None:
        """CrashInfo if a signal killed the server (waiting up to ``wait`` s for it to die)."""
        return self._manager.crash_of(self.target, wait)

    def resources(self) -> dict[str, int]:
        out = {}
        for when, snap in (("before", self.before), ("after", self.after)):
            if snap is not None:
                if snap.fds is not None:
                    out[f"vfu_fds_{when}"] = snap.fds
                if snap.rss_bytes is not None:
                    out[f"vfu_rss_{when}"] = snap.rss_bytes
        return out


class TargetManager:
    """Starts, hands out, replaces and stops the servers of one pytest process."""

    @classmethod
    def standalone(
        cls,
        command: tuple[str, ...] | str | None = None,
        *,
        socket: str | None = None,
        env: dict[str, str] | None = None,
        base_dir: str | None = None,
    ) -> TargetManager:
        """A manager outside a pytest run (the fuzz benchmark, the project's tests): one
        server from ``command`` (a template with {socket} or {fd}), or the one listening
        at ``socket``. ``acquire("")`` hands it out; ``stop_all()`` stops it."""
        if (command is None) == (socket is None):
            raise ValueError("give a command or a socket, not both")
        manager = cls(_Standalone(command, socket, dict(env or {})))
        manager.base_dir = base_dir
        return manager

    def __init__(self, settings: TargetSettings):
        self.settings = settings
        # Where the servers' directories (socket, logs) go; the fixtures set it
        # to a directory under pytest's basetemp, which pytest rotates.
        self.base_dir: str | None = None
        self.current: Target | ExternalTarget | None = None
        self._key: str | None = None
        self._ours_stopped: weakref.WeakSet = weakref.WeakSet()  # targets we signalled
        self.starts = 0
        self.stops: list[bool | None] = []  # sigterm_honoured of each stop of a live server
        self.persistence_note: str | None = None
        self.persistent: bool | None = None  # does the server outlive its clients?
        self.survived = False  # has one outlived a client (even if others exited)?
        self.notes: list[str] = []
        self.commands: list[str] = []
        # probe(socket_path) -> None when a new client is served, else what went wrong
        # (connect + VERSION within --vfu-timeout; the plugin supplies it: a client).
        self.probe: Callable[[str], str | None] | None = None
        self.one_client = False  # stays alive after a client, but serves no other
        self._probed = False
        self._used: weakref.WeakSet = weakref.WeakSet()  # targets a client connected to
        self._blocks: dict[str, _Block] = {}  # what is gone for the run, by need
        self._case = ""  # the case being set up or run
        # Targets started and not yet retired (one, but for a start under way).
        self._live: list[Target | ExternalTarget] = []

    # -- describing
    def describe(self) -> str:
        if self.settings.socket is not None:
            return f"external server at {self.settings.socket}"
        text = self.settings.command_text
        if self.settings.embedded:
            text = f"embedded reference server ({text})"
        return text

    def summary(self) -> dict:
        """JSON-able bookkeeping for the terminal summary and the JSON report."""
        return {
            "target": self.describe(),
            "command": self.commands[0] if self.commands else self.settings.command_text or None,
            "starts": self.starts,
            "sigterm": {
                "honoured": sum(1 for s in self.stops if s),
                "killed": sum(1 for s in self.stops if s is False),
            },
            "persistence_note": self.persistence_note,
            "notes": list(self.notes),
        }

    # -- handing out
    def key_for(self, nodeid: str, module: str) -> str:
        if self.settings.restart == "per-test":
            return nodeid
        if self.settings.restart == "per-module":
            return module
        return ""

    def acquire(self, key: str, case: str = "") -> TargetHandle:
        """The target for a test (``case`` names it); starts one if there is none usable.

        A server that serves one client per process is replaced once a client used it.
        Raises TargetUnavailable when it cannot be started, TargetNotRun once it is gone
        for the run."""
        self._case = case
        self._check_stopped()
        t = self.current
        if t is not None and (
            key != self._key or not t.usable() or (self.one_client and t in self._used)
        ):
            self._retire(t)
        if self.current is None:
            self._start()
        self._key = key
        handle = TargetHandle(self, self.current)
        handle.case = case
        return handle

    def release(self, handle: TargetHandle) -> CrashInfo | None:
        """After a test: take the after-snapshot, look at the process, retire it if needed.

        Returns CrashInfo if the server was killed by a signal and the test's
        verdict does not say so yet.
        """
        t = handle.target
        if handle.connected:
            self._used.add(t)
            self.settle(t, handle.before.fds if handle.before else None)
            handle.after = t.snapshot()
            if not handle.hung:  # it served the test's client: does it serve another?
                self._second_client(t)
        crash = None
        rc = t.poll()
        if rc is not None:
            crash = self.crash_of(t)
            if crash is not None and handle.crash_reported:
                crash = None
            if crash is None and rc >= 0 and handle.connected and not handle.crash_reported:
                self.note_nonpersistent(rc)
        if crash is not None:
            handle.crash_reported = True
        key = self._key
        # One that exits after its clients but still runs after this one is left behind: in a
        # state of its own, not the next case's to meet.
        left_behind = rc is None and handle.connected and self.exits_after_clients
        if rc is not None or handle.hung or left_behind or self.settings.restart == "per-test":
            if t is self.current:
                self._retire(t)
        if handle.hung and crash is None and rc is None:
            self._still_answering(handle)
            if self.current is not None:
                self._key = key  # the fresh server serves the rest of the scope
        return crash

    def replace(self, handle: TargetHandle) -> None:
        """Give ``handle`` a brand-new process."""
        if handle.target is self.current:
            self._retire(handle.target)
        self._start()
        handle.target = self.current

    def note_nonpersistent(self, returncode: int) -> None:
        self.persistent = False
        if self.persistence_note is None:
            self.persistence_note = (
                f"the server does not persist across clients: it exited (status {returncode}) "
                "after a client disconnected; each such test got a fresh server"
            )

    def _second_client(self, t: Target | ExternalTarget) -> None:
        """The first time a server of ours outlived its client: does it serve a new one?

        If not (it accepts, but never answers VERSION), it serves one client per process:
        from now on each case gets a server no client has used (ONE_CLIENT_NOTE)."""
        if self._probed or self.persistent is not True or self.probe is None or not t.managed:
            return
        self._probed = True
        before = t.fd_count()
        error = self.probe(t.socket_path)
        self.settle(t, before)  # the next test's snapshot must not count the probe's socket
        if error is not None and t.wait(DEATH_WAIT) is not None:
            # It was on its way out (a loaded machine let it exit later than PROBE_SECONDS):
            # a server that exits after its clients, not one that lives on serving none.
            self.survived = False
            self.note_nonpersistent(t.poll())
        elif error is not None:
            self.one_client = True
            self.persistence_note = ONE_CLIENT_NOTE

    def _still_answering(self, handle: TargetHandle) -> None:
        """After a HANG: does a fresh server answer VERSION? If not, the target stopped
        answering and the run's remaining cases are not run (pointing at this one)."""
        self.answering_after_hang(handle, f"{handle.case or 'a case'} got no reply in time")

    def answering_after_hang(
        self,
        handle: TargetHandle,
        after: str,
        first: Callable[[str], BaseException] | None = None,
    ) -> bool:
        """After ``after`` (a wait that timed out on ``handle``'s server): does a fresh
        server answer VERSION? If not, the target stopped answering: found by the handle's
        case, or with ``first`` (a wait outside any case's own) by the first case to ask,
        which raises ``first(message)``. False when the target is gone (for this or
        another reason)."""
        if self.stopped is not None:
            return False
        if self.probe is None or not handle.managed:
            return True
        try:
            if self.current is None:
                self._start()
        except TargetUnavailable:
            return False  # self.stopped says why
        t = self.current
        self._used.add(t)
        before = t.fd_count()
        error = self.probe(t.socket_path)
        if error is None:
            self.settle(t, before)
            return True
        self.block(
            (_TARGET,),
            STOPPED_ANSWERING,
            f"a fresh server did not answer VERSION either ({error}), after {after}",
            handle.case if first is None else "",
            first or TargetUnavailable,
        )
        self._retire(t)
        return False

    @property
    def stopped(self) -> str | None:
        """Why the target is gone for the run (None while it is not)."""
        b = self._blocks.get(_TARGET)
        return b.message if b is not None else None

    @property
    def stopped_by(self) -> str:
        """The case judged for the target being gone ("" while none is)."""
        b = self._blocks.get(_TARGET)
        return b.case if b is not None else ""

    def block(
        self,
        needs: tuple[str, ...],
        what: str,
        detail: str,
        case: str = "",
        first: Callable[[str], BaseException] = TargetUnavailable,
    ) -> None:
        """What the cases needing any of ``needs`` need is gone for the run: ``what``
        (``detail``), found by ``case`` or, when it is "", by the first case to ask
        (``check``), which raises ``first(message)``. Said once, in the notes."""
        b = _Block(what, detail, case, first)
        for need in needs:
            self._blocks.setdefault(need, b)
        self.notes.append(b.message)

    def check(self, need: str = _TARGET) -> None:
        """For a case needing ``need`` (and the target): TargetNotRun when it is gone for
        the run, pointing at the case judged for it; if none was yet (it was found outside
        a case: at collection, by discovery), the case asking now is, and raises the
        block's ``first``."""
        for key in dict.fromkeys((_TARGET, need)):
            b = self._blocks.get(key)
            if b is None:
                continue
            if not b.case and self._case:
                b.case = self._case
                raise b.first(b.message)
            by = f" (see {b.case})" if b.case else ""
            raise TargetNotRun(f"not run: {b.what}{by}")

    def _stop(self, what: str, detail: str, case: str) -> None:
        """The target is gone for the run: ``what`` (``detail``), found by ``case``."""
        self.block((_TARGET,), what, detail, case)

    def _check_stopped(self) -> None:
        self.check(_TARGET)

    def stop_all(self) -> None:
        """At session end (or when interrupted): stop every server (SIGTERM, then SIGKILL;
        all they forked with them)."""
        with deferred_signals():
            for t in dict.fromkeys([*self._live, self.current]):
                if t is not None:
                    self._retire(t)

    # -- watching
    def settle(self, t: Target | ExternalTarget, fds_before: int | None) -> None:
        """After a client closed: wait (briefly) until the server let go of it, or exited.

        The first time, also watch for PROBE_SECONDS whether the server exits
        after a client (some serve one client and quit); once it has been seen
        to (and never to outlive one), wait for that exit every time, so the next
        test finds it gone. A server somebody else runs is not ours to wait for.
        """
        if not t.managed:
            return
        deadline = time.monotonic() + SETTLE_SECONDS
        # A server seen to outlive a client exits only now and then (on errors, say):
        # waiting out SETTLE_SECONDS after each of its clients would only cost time.
        if self.persistent is not False or self.survived:
            while t.poll() is None and time.monotonic() < deadline:
                fds = t.fd_count()
                if fds_before is None or fds is None or fds <= fds_before:
                    break
                time.sleep(0.002)
            if self.persistent is None and t.poll() is None:
                deadline = min(deadline, time.monotonic() + PROBE_SECONDS)
            else:
                deadline = 0.0
        while t.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        # Its fds may be gone while it still dumps core or exits: the verdict must see how.
        dying_until = time.monotonic() + DYING_WAIT
        while t.poll() is None and is_exiting(t.pid) and time.monotonic() < dying_until:
            time.sleep(0.005)
        if t.poll() is None and not self.exits_after_clients:  # a left-behind one does not
            self.survived = True  # count: it neither exits nor serves another
            if self.persistent is None:
                self.persistent = True

    @property
    def exits_after_clients(self) -> bool:
        """Whether the server was seen to exit after its clients and never to outlive one
        (one still running after a client then is left behind, ``TargetHandle.left_behind``);
        a server seen to outlive its clients that exits now and then (on errors) is not."""
        return self.persistent is False and not self.survived

    def crash_of(self, t: Target | ExternalTarget, wait: float = 0.0) -> CrashInfo | None:
        if t in self._ours_stopped:
            return None
        crash = CrashInfo.of(t, wait)
        return None if t in self._ours_stopped else crash  # stopped by us while waiting

    def use_once(
        self, handle: TargetHandle, what: str, use: Callable[[], str | None]
    ) -> tuple[str | None, CrashInfo | None]:
        """Run ``use()``, which talks to the handle's server outside any test (device
        discovery), and keep the books as a test's release would: wait for the server to
        settle, note a crash or an exit after the client, and give the handle a fresh
        server when this one is gone or hung. ``use`` returns an error text (with
        "Timeout" in it when the server did not answer in time) or None. The result: that
        text, and what killed the server if a signal did (noted)."""
        t = handle.target
        before = t.snapshot().fds
        self._used.add(t)
        error = use()
        self.settle(t, before)
        if error is None:
            self._second_client(t)
        crash = self.crash_of(t, wait=0.2 if error else 0.0)
        if crash is not None:
            self.notes.append(f"the server crashed during {what}: " + crash.message())
        elif t.poll() is not None and error is None:
            self.note_nonpersistent(t.poll())
        gone = t.poll() is not None or (error and "Timeout" in error) or self.one_client
        if gone and handle.managed:
            self.replace(handle)
        return error, crash

    # -- starting and stopping
    def _start(self) -> None:
        """A new current target; MAX_START_FAILURES tries in a row, then the target could
        not start: TargetUnavailable now (the root cause), TargetNotRun from then on."""
        self._check_stopped()
        for _ in range(MAX_START_FAILURES if self.settings.socket is None else 1):
            try:
                return self._start_once()
            except TargetUnavailable as e:
                error = e
        message = str(error).removeprefix("target failed to start: ")
        self._stop(COULD_NOT_START, message.removeprefix("cannot start target: "), self._case)
        raise TargetUnavailable(self.stopped)

    def _start_once(self) -> None:
        if self.settings.socket is not None:
            t = ExternalTarget(self.settings.socket)
            try:
                t.start(timeout=0.0)
            except TargetStartError as e:
                raise TargetUnavailable(
                    f"{e}\n  hint: start the server before the suite, or use --vfu-server"
                ) from None
            self.current = t
            return
        t = Target(
            self.settings.server,
            env=self.settings.env,
            base_dir=self.base_dir,
            startup_timeout=self.settings.start_timeout,
        )
        self._live.append(t)  # an interruption during start() finds it here
        try:
            t.start()
        except TargetStartError as e:
            t.keep()  # stopped; its directory stays: the message points at the stderr log
            self._live.remove(t)
            raise TargetUnavailable(_with_hints(str(e), e.returncode, self.settings)) from None
        except OSError as e:
            t.cleanup()
            self._live.remove(t)
            raise TargetUnavailable(
                f"cannot start the server: {e}\n  command: {t.command}"
            ) from None
        except BaseException:  # interrupted: start() killed it, that is no crash
            self._ours_stopped.add(t)
            raise
        self.starts += 1
        if t.command and t.command not in self.commands:
            self.commands.append(t.command)
        if t.daemonized:
            self._note_once(
                DAEMONIZES,
                f"the process the suite starts exits (status {t.started_status}) and leaves "
                f"another one listening (pid {t.pid}); the suite follows that process and "
                "stops it",
            )
        self.current = t

    def _note_once(self, what: str, detail: str) -> None:
        if not any(n.startswith(what) for n in self.notes):
            self.notes.append(f"{what}: {detail}")

    def _retire(self, t: Target | ExternalTarget) -> None:
        """Stop ``t`` (if it is still running) and forget it.

        The directory with its logs is removed, unless it crashed (the crash
        message names its stderr log): that one is kept.
        """
        if t.managed:  # a server of ours is stopped; somebody else's keeps running
            was_running = t.poll() is None
            if was_running:
                self._ours_stopped.add(t)
            t.stop()
            if was_running:
                self.stops.append(t.sigterm_honoured)
            if t.escaped:
                self._note_once(
                    ESCAPES,
                    f"pid {', '.join(map(str, t.escaped))} at one stop; the suite stops them "
                    "with the server",
                )
            if self.crash_of(t) is None:
                t.cleanup()
            else:
                t.keep()
        if t in self._live:
            self._live.remove(t)
        if t is self.current:
            self.current = None
            self._key = None


def _reap_if_dying(t: Target | ExternalTarget, wait: float) -> int | None:
    """``t``'s exit status if it ends within ``wait`` s; a process that is not on its way
    out (exiting, dumping core) after DEATH_GRACE is not waited for any longer."""
    start = time.monotonic()
    while (rc := t.poll()) is None:
        elapsed = time.monotonic() - start
        if elapsed >= wait or (elapsed >= DEATH_GRACE and not is_exiting(t.pid)):
            return None
        t.wait(min(wait - elapsed, 0.01))
    return rc


@dataclass(frozen=True)
class _Standalone:
    """TargetSettings of a standalone manager: one server for the whole session."""

    server: tuple[str, ...] | str | None
    socket: str | None
    env: dict[str, str]
    restart: str = "per-session"
    embedded: bool = False
    start_timeout: float = DEFAULT_STARTUP_TIMEOUT

    @property
    def command_text(self) -> str:
        if self.server is None:
            return ""
        return self.server if isinstance(self.server, str) else " ".join(self.server)


def _with_hints(message: str, returncode: int | None, settings: TargetSettings) -> str:
    """target.py's message plus what to try."""
    hints = []
    if returncode == 127 or "No such file" in message:
        hints.append(
            "the program was not found: check the command, use an absolute path or fix PATH"
        )
    elif returncode == 126 or "Permission denied" in message:
        hints.append("the program is not executable (chmod +x?)")
    elif "not listening" in message:
        hints.append(
            "the server runs but nothing listens on the socket path: does the command pass "
            "{socket} where the server takes its socket path? ({fd} passes a listening socket "
            "instead)"
        )
    elif returncode is not None:
        hints.append("the server exited before listening; its stderr (above) usually says why")
    if settings.embedded:
        hints.append(
            "this is the embedded reference server: run `python -m reference_server --help`"
        )
    else:
        hints.append("try the command by hand, with a socket path in place of {socket}")
    return message + "".join(f"\n  hint: {h}" for h in hints)
