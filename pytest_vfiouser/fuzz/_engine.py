"""Fuzzing a vfio-user server: the engine behind ``conformance/test_fuzz_*.py`` and
``benchmarks/fuzz_campaign.py``.

* Settings profiles (registered once, loaded per case with
  ``settings(parent=settings.get_profile(...))`` so that nobody else's
  Hypothesis settings change): ``ci`` (the default: bounded, derandomized,
  repeatable) and ``campaign`` (``--vfu-fuzz=campaign``: many random
  examples), also Hypothesis's own ``--hypothesis-profile vfu-fuzz-ci`` /
  ``vfu-fuzz-campaign`` (``mode_of_profile``). See ``fuzz_settings``.
  Hypothesis's files go to a temporary directory (``private_storage``), not
  ``.hypothesis/`` where the suite runs.
* ``Fuzzer``: one connection to the target reused across examples while it
  stays framed (a new one after the server closed it), and the properties
  checked for every example (``transmit``): every message the server can
  frame is answered with a well-formed reply (Reply type, msg_id and command
  echoed, an error reply header-only) or the connection is closed cleanly;
  no crash (the process is alive), no hang (an answer or a close within the
  timeout); a probe (DEVICE_GET_INFO) sent after the example gets its
  correct reply. ``finish`` checks the server afterwards: a new connection
  negotiates and is served, and its open fds are back to where they were.
* Failure output: the example as decoded messages and raw bytes (the wire
  log of that example) in the assertion message, and a standalone
  reproducer (``reproducer.write_reproducer``) under the fuzz directory
  (``--vfu-fuzz-dir``, default ``reports/fuzz-repro``). A crash or a hang
  stops the run at once and is reported as found (not shrunk: shrinking
  would need a new server process, or a timeout, per attempt); any other
  failure is shrunk by Hypothesis, and the last example run is the shrunk one,
  for at most ``shrink_seconds`` (``SHRINK_SECONDS`` of the mode): the attempts
  after that are rejected unrun, and the smallest failing example so far stands.
* The modes and the run's counters are ``_run``'s (imported without Hypothesis).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, Phase, currently_in_test_context, given, reject, settings
from hypothesis import event as _hypothesis_event
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.control import current_build_context
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase
from hypothesis.stateful import run_state_machine_as_test
from hypothesis.statistics import collector as statistics_collector
from hypothesis.statistics import describe_statistics

from pytest_vfiouser.client import (
    DEFAULT_TIMEOUT,
    Client,
    ClientError,
    ConnectionClosed,
    MalformedReply,
    Timeout,
    UnexpectedReply,
    errno_text,
)
from pytest_vfiouser.protocol import (
    COMMANDS_BY_REVISION,
    FLAG_NO_REPLY,
    HEADER_SIZE,
    TYPE_MASK,
    CodecError,
    Command,
    DeviceInfo,
    Header,
    MessageReader,
    command_name,
    decode,
)
from pytest_vfiouser.target import spinning
from pytest_vfiouser.verdict import Unmet

from ._reproducer import _fd_kinds, write_reproducer
from ._run import DEFAULT_FUZZ_MODE, FUZZ_MODES, PROFILES, REDIS_SCHEMES

__all__ = [
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
]

# After bytes the server cannot frame, once it has read them: how long it gets to close (a
# server decides on what it read at once; one that does not close is closed by us).
QUIET = 0.05
STALLED_QUIET = 0.25  # after a write that did not go out: how long answers get to arrive
SETTLE = 1.0  # seconds the server gets to release fds after the last client closed
# A message whose msg_size promises more than was sent is completed with zero
# bytes up to this size (so the server sees a whole message and answers it);
# above it the connection is left to the server (it may close, or wait).
PAD_LIMIT = (1 << 20) + (1 << 16)
# Replies of at most this many bytes may be left unread while more is sent.
UNREAD_LIMIT = 64 << 10
_PROBE = int(Command.DEVICE_GET_INFO)
_PROBE_PAYLOAD = DeviceInfo(DeviceInfo.SIZE).pack()

STORAGE_VARIABLE = "HYPOTHESIS_STORAGE_DIRECTORY"  # where Hypothesis keeps its files, if set
_registered = False


def register_profiles() -> None:
    """The ``ci`` and ``campaign`` Hypothesis profiles (idempotent)."""
    global _registered
    if _registered:
        return
    common = dict(
        deadline=None,
        database=None,
        # One failure shrunk (the engine keeps the other kinds met on the way): with several,
        # Hypothesis stops looking for more 10 s after the first, so what a run finds would
        # depend on the machine's speed.
        report_multiple_bugs=False,
        print_blob=False,
        # explain re-runs examples against the server for a note of little use here
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    # ci: the default run must stay under 30 s with every other case (README goal).
    settings.register_profile(
        PROFILES["ci"], max_examples=120, derandomize=True, stateful_step_count=25, **common
    )
    settings.register_profile(
        PROFILES["campaign"],
        max_examples=20000,
        derandomize=False,
        stateful_step_count=100,
        **common,
    )
    _registered = True


def private_storage() -> Callable[[], None]:
    """Hypothesis's files for this process (its cache of the constants of the code under
    test, written whatever the settings' database) in a temporary directory instead of
    ``.hypothesis/`` where the suite runs, unless HYPOTHESIS_STORAGE_DIRECTORY chooses
    where. Returns what puts things back and removes the directory."""
    if os.environ.get(STORAGE_VARIABLE):
        return lambda: None
    directory = tempfile.mkdtemp(prefix="vfu-hypothesis-")
    set_hypothesis_home_dir(directory)

    def restore() -> None:
        set_hypothesis_home_dir(None)
        shutil.rmtree(directory, ignore_errors=True)

    return restore


def fuzz_settings(
    mode: str = DEFAULT_FUZZ_MODE, share: float = 1.0, database: str | None = None, **overrides
) -> settings:
    """The settings of one fuzz case: the ``mode`` profile, with ``share`` times its
    max_examples (cases that cost more per example take a smaller share); with
    ``database`` (``example_database``), the failures kept there are replayed first."""
    if mode not in PROFILES:
        raise ValueError(f"unknown fuzz mode {mode!r}; use one of {', '.join(FUZZ_MODES)}")
    register_profiles()
    parent = settings.get_profile(PROFILES[mode])
    overrides.setdefault("max_examples", max(1, round(parent.max_examples * share)))
    if database is not None:
        overrides["database"] = example_database(database)
        overrides["phases"] = (Phase.explicit, Phase.reuse, *parent.phases[1:])
    return settings(parent=parent, **overrides)


def example_database(where: str) -> ExampleDatabase:
    """Hypothesis's database at ``where``: a redis:// URL (Hypothesis's Redis database,
    which needs the redis package) or a directory."""
    if where.startswith(REDIS_SCHEMES):
        from hypothesis.extra.redis import RedisExampleDatabase  # noqa: PLC0415 (optional)
        from redis import Redis  # noqa: PLC0415

        return RedisExampleDatabase(Redis.from_url(where))
    return DirectoryBasedExampleDatabase(where)


# ---------------------------------------------------------------- failures


class FuzzFailure(Unmet):
    """A property of the fuzzed server does not hold (the message says which); ``level``:
    that of the sentence it rests on, when weaker than the case's (``Unmet``)."""


class TargetLost(FuzzFailure):
    """The server crashed, exited, or no longer accepts connections."""


class Hang(FuzzFailure):
    """No answer within the timeout (raised from the client's Timeout)."""


def _fail(text: str, level: str | None = None):
    raise FuzzFailure(text, level)


def _step_level(replies: list) -> str | None:
    """The level of losing step in an exchange: SHOULD when the server refused something
    in it (an error reply): what it then does with the rest of a message it refused, the
    spec does not say, though it defines where each message ends; else the case's."""
    return "should" if any(not r.ok for r in replies) else None


def event(text: str) -> None:
    """hypothesis.event (for --hypothesis-show-statistics), ignored outside a test."""
    try:
        _hypothesis_event(text)
    except Exception:
        pass


# ---------------------------------------------------------------- framing


@dataclass(frozen=True, slots=True)
class Frame:
    """One message as the server will frame it out of what was sent."""

    msg_id: int
    command: int
    flags: int
    size: int
    payload: bytes  # what the server gets after the header (padding included)

    @property
    def type(self) -> int:
        return self.flags & TYPE_MASK

    def required(self, commands: frozenset[int]) -> bool:
        """Must the server answer it? A command (type 0) of the spec's table without
        No_reply: "Each command message in Commands_ must be replied to with a reply
        message, unless the message sets the No_Reply bit." (Or close the connection.)"""
        return self.type == 0 and not self.flags & FLAG_NO_REPLY and self.command in commands

    def reply_bound(self) -> int:
        """How many bytes its reply could take (REGION_READ data, bitmaps, ...)."""
        p = self.payload
        if self.command == Command.REGION_READ and len(p) >= 16:
            return int.from_bytes(p[12:16], "little")
        if (
            self.command
            in (
                Command.DMA_UNMAP,
                Command.DIRTY_PAGES,
                Command.MIG_DATA_READ,
                Command.DEVICE_GET_REGION_INFO,
                Command.DEVICE_GET_REGION_IO_FDS,
                Command.DEVICE_FEATURE,
            )
            and len(p) >= 8
        ):
            field_at = 4 if self.command == Command.MIG_DATA_READ else 0
            return int.from_bytes(p[field_at : field_at + 4], "little")
        return 256

    def describe(self) -> str:
        return Header(self.msg_id, self.command, self.size, self.flags).describe()


def plan_frames(stream: bytes, pad_limit: int = PAD_LIMIT) -> tuple[list[Frame], int, str]:
    """How the server frames ``stream``: (frames, zero bytes to append, ending).

    The ending is "framed" when ``stream`` plus the padding ends exactly at a
    message boundary; "unframeable" when a header's msg_size is below 16 (the
    stream cannot be framed past it); "oversized" when the last message
    promises more than ``pad_limit`` bytes. A partial header is completed with
    zero bytes, and so is a message shorter than its msg_size (up to the limit).
    """
    # The codec's framer, fed zero bytes wherever the server would wait for more.
    reader = MessageReader(max_msg_size=1 << 32)  # any u32: pad_limit is judged here
    reader.feed(stream)
    frames: list[Frame] = []
    pad = 0
    while True:
        try:
            message = reader.next_message()
        except CodecError:  # msg_size below the header size
            return frames, pad, "unframeable"
        if message is not None:
            header, payload = message
            frames.append(
                Frame(header.msg_id, header.command, header.flags, header.msg_size, payload)
            )
            continue
        pending = reader.pending_header
        if pending is None and not reader.buffered:
            return frames, pad, "framed"
        if pending is None:
            need = HEADER_SIZE - reader.buffered
        elif pending.msg_size > pad_limit:
            return frames, pad, "oversized"
        else:
            need = pending.msg_size - HEADER_SIZE - reader.buffered
        reader.feed(bytes(need))
        pad += need


# ---------------------------------------------------------------- the engine


@dataclass
class _Record:
    """A failing example: what went wrong, what was sent, the conversation."""

    error: BaseException
    description: str
    conversations: list[list[dict]]
    log_text: str
    fatal: bool


class Fuzzer:
    """Fuzz one target over one reused connection (see the module docstring).

    ``target``: what ``vfu_target`` gives (``socket_path``, ``alive``,
    ``snapshot()``, ``crash(wait)``, ``managed``, ``fresh()``,
    ``note_connect()``); the benchmark passes an adapter with the same
    attributes. ``device_info``: the expected DEVICE_GET_INFO reply payload (the
    probe's answer), or None to accept any 16-byte one. ``on_connect``: called with
    every client the fuzzer makes (the suite judges what each receives).
    """

    def __init__(
        self,
        target,
        *,
        spec: str = "0.9.1",
        timeout: float = DEFAULT_TIMEOUT,
        negotiate: bool = True,
        capabilities: dict | None = None,
        device_info: DeviceInfo | None = None,
        case_id: str = "fuzz",
        repro_dir: str | os.PathLike | None = None,
        observe: Callable[[str], None] | None = None,
        on_connect: Callable[[Client], None] | None = None,
        shrink_seconds: float | None = None,
    ):
        self.target = target
        self.on_connect = on_connect
        self.spec = spec
        self.timeout = timeout
        self.negotiate = negotiate
        self.capabilities = capabilities
        self.device_info = device_info.pack() if device_info is not None else None
        self.case_id = case_id
        self.repro_dir = Path(repro_dir) if repro_dir is not None else Path("reports/fuzz-repro")
        self.observe = observe or (lambda text: None)
        self.commands = frozenset(int(c) for c in COMMANDS_BY_REVISION.get(spec, ()))
        self.client: Client | None = None
        self._preamble: dict[int, list[dict]] = {}
        self._touched: list[Client] = []
        self._probe_id = 0xF000
        self.fatal: _Record | None = None
        self.failure: _Record | None = None
        # Failures of another kind met on the way (while Hypothesis shrank the first),
        # the smallest example of each: a property may find several bugs in one run.
        self.others: dict[str, _Record] = {}
        self.shrink_seconds = shrink_seconds  # None: Hypothesis's own limits
        self._failed_at: float | None = None  # when the first failure was recorded
        self.shrink_cut = False  # attempts were rejected once shrink_seconds were spent
        self.examples = 0
        self.first_failing = 0  # the number of the first example that failed (0: none)
        self.messages = 0
        self.restarts = 0
        self.closes = 0  # connections the server closed after messages it could frame
        self.first_close: str | None = None
        self.exits: list[str] = []
        self.seconds = 0.0
        self.fresh_connections = False  # each example on a new connection
        self._why: str | None = None  # why _connect is connecting, for its messages
        self.probe = True  # a DEVICE_GET_INFO after each example (False: not negotiated)
        self.replies: list = []  # (Frame, Reply) of the last transmit
        self.reproducer_written: str | None = None
        self.statistics: list[str] = []  # Hypothesis's, one text a run (run_with)
        snap = target.snapshot()
        self.fd_baseline = snap.fds if snap is not None else None

    # -- connections

    def _connect(self, negotiate: bool | None = None) -> Client:
        """A new connection (negotiated unless the fuzzer does not negotiate);
        TargetLost if the server is gone."""
        negotiate = self.negotiate if negotiate is None else negotiate
        for attempt in (0, 1):
            if getattr(self.target, "serves_one_client", False) and self.target.connected:
                self._fresh_process("it serves one client per process")
            elif getattr(self.target, "connected", False) and self._left_behind():
                self._fresh_process(
                    "it stayed running after its client, though it exits after others"
                )
            note = getattr(self.target, "note_connect", None)
            if note is not None:
                note()
            try:
                client = Client.connect(self.target.socket_path, timeout=self.timeout)
            except OSError as e:
                if attempt == 0 and self._server_gone(f"a new connection failed ({e})"):
                    continue
                raise TargetLost(f"the server does not accept a new connection: {e}") from e
            if self.on_connect is not None:
                self.on_connect(client)
            try:
                if negotiate:
                    client.negotiate(capabilities=self.capabilities)
            except (ClientError, OSError) as e:
                client.close()
                if isinstance(e, Timeout):
                    after = f" (after the server {self._why})" if self._why else ""
                    raise Hang(
                        f"a new connection{after} got no VERSION reply within {self.timeout:g} s"
                    ) from e
                if attempt == 0 and self._server_gone(
                    f"VERSION on a new connection failed ({type(e).__name__}: {e})"
                ):
                    continue
                raise TargetLost(
                    f"VERSION on a new connection failed: {type(e).__name__}: {e}"
                ) from None
            self._preamble[id(client)] = client.wire_log.to_dicts()
            client.wire_log.clear()
            self._touched.append(client)
            return client
        raise TargetLost("the server does not accept connections")  # not reached

    def _left_behind(self) -> bool:
        """Whether a server seen to exit after its clients still runs after ours left (it
        is not asked for another client); one that spins meanwhile fails a SHOULD."""
        left_behind = getattr(self.target, "left_behind", None)
        busy = left_behind() if left_behind is not None else None
        if busy is not None and (wrong := spinning(busy)):
            after = f" (after the server {self._why})" if self._why else ""
            _fail(f"after its client left{after}, {wrong}", "should")
        return busy is not None

    def _server_gone(self, what: str) -> bool:
        """After a failed connection: raise TargetLost for a crash (or a server that is
        gone for good); True when a server that exited was replaced (try again)."""
        crash = self.target.crash(wait=1.0)
        if crash is not None:
            raise TargetLost(f"the server crashed: {crash.message()}")
        if self.target.alive:
            raise TargetLost(f"the server is running, but {what}")
        if not self.target.managed:
            raise TargetLost(f"the server is gone: {what}")
        self._fresh_process(what)
        return True

    def _fresh_process(self, why: str) -> None:
        """A new server process for the next connection (noted with ``why``)."""
        self.exits.append(why)
        self.restarts += 1
        self.fd_baseline = None  # another process: nothing to compare with
        self.target.fresh()

    def connection(self) -> Client:
        if self.client is None:
            self.client = self._connect()
        return self.client

    def drop(self) -> None:
        """Close our connection (the next example gets a new one), once the server has read
        all we sent: it sees what the example sent, then the close, whatever the timing."""
        if self.client is not None:
            # The server gets to read all we sent before the close (up to the timeout: a
            # loaded machine must not change what it sees), whatever it sends meanwhile.
            self.client.wait_peer_read(self.timeout, discard=True)
            self.client.close()
            self.client = None

    def _server_closed(self) -> None:
        """The server closed our connection: make sure it still serves (a new connection
        negotiates), which also catches a crash while the evidence is fresh."""
        self.drop()
        if not self.target.alive:
            self._server_gone("it closed the connection and exited")
        self._reconnect("closed the connection")

    def _reconnect(self, why: str) -> None:
        """A new connection, negotiated now (kept when the fuzzer negotiates)."""
        self._why = why
        try:
            client = self._connect(negotiate=True)
        finally:
            self._why = None
        if self.negotiate:
            self.client = client
        else:
            client.close()

    # -- examples

    def begin(self, fresh: bool = False) -> None:
        """Start an example: its wire log starts empty (plus the handshake). Once the
        shrinking of a failure has had its ``shrink_seconds``, the attempt is rejected
        (Hypothesis's final replay of the failing example still runs)."""
        if self._shrink_spent():
            self.shrink_cut = True
            reject()
        if fresh:
            self.drop()
        self._touched = []
        keep = self._preamble.get(id(self.client)) if self.client is not None else None
        self._preamble = {id(self.client): keep} if keep is not None else {}
        if self.client is not None:
            self.client.wire_log.clear()
            self._touched.append(self.client)
        self.examples += 1

    def _shrink_spent(self) -> bool:
        if self._failed_at is None or self.shrink_seconds is None:
            return False
        if time.monotonic() - self._failed_at <= self.shrink_seconds:
            return False
        return currently_in_test_context() and not current_build_context().is_final

    def conversations(self) -> list[list[dict]]:
        """The example's conversation: per connection, handshake + what followed."""
        out = []
        for c in self._touched:
            log = c.wire_log.to_dicts()
            if log:
                out.append(self._preamble.get(id(c), []) + log)
        return out

    def log_text(self, last: int = 60) -> str:
        parts = []
        for n, c in enumerate(self._touched):
            text = c.wire_log.render(hexdump=True, last=last)
            if text:
                parts.append(f"-- connection {n}:\n{text}")
        return "\n".join(parts)

    def example(self, body: Callable, value, describe: Callable | None = None) -> None:
        """Run ``body(value)`` as one example (inside a Hypothesis test); with
        ``fresh_connections`` set, on a connection of its own."""
        if self.fatal is not None:
            return  # the server died or hung: the run is over (see run_examples)
        # Once an example failed, Hypothesis only shrinks it: each attempt on a connection
        # of its own, so that the shrunk example fails by itself (and its reproducer, which
        # replays it on a new connection, does too).
        self.begin(fresh=self.fresh_connections or self.failure is not None)
        try:
            body(value)
        except BaseException as e:
            self.record(e, value, describe)
            raise

    def record(self, e: BaseException, value, describe: Callable | None) -> None:
        """Keep ``e`` raised by the example ``value`` (described by ``describe``) with its
        conversations, for the final error and the reproducer."""
        if not isinstance(e, Exception):
            return
        text = describe(value) if describe is not None else _describe(value)
        rec = _Record(e, text, self.conversations(), self.log_text(), _is_fatal(e))
        if self._failed_at is None:
            self._failed_at = time.monotonic()
            self.first_failing = self.examples
        if rec.fatal:
            self.fatal = rec
        else:
            kind = _kind(e)
            if self.failure is None or _kind(self.failure.error) == kind:
                self.failure = rec
            elif kind not in self.others or len(text) < len(self.others[kind].description):
                self.others[kind] = rec
            self.drop()  # start the next example on a clean connection

    # -- sending an example and checking the answers

    def _fds(self, data: bytes, nfds: int) -> list[int]:
        fds = []
        try:
            for kind, size in _fd_kinds(data, nfds):
                if kind == "memfd":
                    fd = os.memfd_create("vfu-fuzz", os.MFD_CLOEXEC)
                    fds.append(fd)
                    os.ftruncate(fd, size)
                else:
                    fds.append(os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return fds

    def transmit(self, tx) -> str:
        """Send a Transmission and check what comes back. Returns how it ended:
        "framed" (every answer well formed, the probe answered), "closed" (the server
        closed the connection cleanly), "unframeable" / "oversized" (bytes the server
        cannot frame, or a message too large to complete: anything but a crash goes),
        "skipped" (not sent: it could fill both socket buffers, a deadlock of the test,
        not of the server)."""
        client = self.connection()
        stream = tx.stream()
        frames, pad, ending = plan_frames(stream)
        if sum(min(f.reply_bound(), 1 << 24) for f in frames[:-1]) > UNREAD_LIMIT:
            # Large replies left unread while much is still to be sent would fill both
            # socket buffers (the server blocks on its reply, we on our send): complete
            # the last message only if it is small, and send no large example after them.
            if pad > UNREAD_LIMIT:
                frames, pad, ending = plan_frames(stream, UNREAD_LIMIT)
            if len(stream) + pad > 2 * UNREAD_LIMIT:
                event("skipped: large replies and a large example")
                return "skipped"
        writes = tx.writes()
        if pad:  # the rest of the message the example left unfinished: with its last write
            last, nfds = writes[-1]
            writes[-1] = (last + bytes(pad), nfds)
        self.messages += len(frames) + (ending != "framed")
        self.replies = []
        try:
            for i, (data, nfds) in enumerate(writes):
                if i and tx.cuts:  # a split example: the server gets each piece apart
                    client.wait_peer_read(self.timeout)
                fds = self._fds(data, nfds) if nfds else []
                try:
                    client.send_raw(data, fds)
                finally:
                    for fd in fds:
                        os.close(fd)
            if ending != "framed":
                return self._drain(client, frames, ending)
            if not self.probe:
                return self._collect_required(client, frames)
            probe = self._next_probe_id(frames)
            client.send(_PROBE, _PROBE_PAYLOAD, msg_id=probe)
            self.messages += 1
        except ConnectionClosed:
            return self._drain(client, frames, "closed")
        except Timeout as e:
            stalled = e  # judged below, outside this handler: a wrong answer is no hang
        else:
            return self._collect(client, frames, probe)
        if self._unread_answers_fit(client, frames):
            # It answered and waits for us to read: our stall, not the server's.
            event("skipped: the server's answers filled the socket while we wrote")
            self.drop()
            return "skipped"
        raise Hang(
            f"the server stopped reading: a write of the example did not go "
            f"out within {self.timeout:g} s"
        ) from stalled

    def _unread_answers_fit(self, client: Client, frames: list[Frame]) -> bool:
        """After a write that did not go out: read what the server sent meanwhile (it may
        be blocked writing answers nobody read) and check it, in order, against the
        messages; a wrong one fails the example. Whether there were any, all fitting."""
        replies: list = []
        while True:
            try:
                reply = self._recv(client, STALLED_QUIET, frames, replies)
            except (Timeout, ConnectionClosed):
                return bool(replies)
            self._take(reply, frames, replies)

    def _next_probe_id(self, frames: list[Frame]) -> int:
        used = {f.msg_id for f in frames}
        while True:
            self._probe_id = 0xF000 + (self._probe_id + 1) % 0x1000
            if self._probe_id not in used:
                return self._probe_id

    def _recv(self, client: Client, timeout: float, frames, replies: list):
        """The next reply (the server's DMA requests are served meanwhile)."""
        try:
            return client.recv_reply(timeout=timeout)
        except UnexpectedReply as e:
            _fail(
                f"after {self._pending(frames, replies)}, the server sent "
                f"{e.reply!r}: a message that is neither a reply nor a DMA_READ/DMA_WRITE "
                "request (the Type bits of a reply are 1)"
            )
        except MalformedReply as e:
            _fail(
                f"after {self._pending(frames, replies)}, the server sent bytes that cannot "
                f"be framed: {e} (Message size contains the size of the entire message)"
            )

    def _pending(self, frames, replies: list) -> str:
        missing = self._unanswered(frames, replies)
        return missing.describe() if missing is not None else "the messages of the example"

    # -- matching answers to messages: in order, each command answered unless No_reply
    # (several messages may share a msg_id and command: any order-preserving assignment
    # that answers every message that must be answered will do)

    def _assignment(self, frames: list[Frame], replies: list, complete: bool) -> list[int] | None:
        """Indexes of the frames ``replies`` answer, in order, or None if they cannot be
        the answers. ``complete``: every frame that must be answered is."""
        keys = [(f.msg_id, f.command) for f in frames]
        need = [f.required(self.commands) for f in frames]
        got = [(r.msg_id, r.command) for r in replies]
        memo: dict = {}

        def fit(i: int, j: int):
            if (i, j) in memo:
                return memo[i, j]
            out = None
            if i == len(got):
                out = [] if not complete or not any(need[j:]) else None
            else:
                for k in range(j, len(frames)):
                    if keys[k] == got[i]:
                        rest = fit(i + 1, k + 1)
                        if rest is not None:
                            out = [k, *rest]
                            break
                    if need[k]:
                        break  # a message that must be answered cannot be skipped
            memo[i, j] = out
            return out

        return fit(0, 0)

    def _order_failure(self, frames: list[Frame], replies: list, complete: bool) -> str:
        """Why ``replies`` cannot be the answers to ``frames`` (for the message)."""
        cursor = 0
        for r in replies:
            j = next(
                (
                    k
                    for k in range(cursor, len(frames))
                    if (frames[k].msg_id, frames[k].command) == (r.msg_id, r.command)
                ),
                None,
            )
            if j is None:
                if any((f.msg_id, f.command) == (r.msg_id, r.command) for f in frames):
                    return (
                        f"the server sent {r!r} after the answers to every message it can "
                        "answer: a reply too many, or out of order"
                    )
                sent = "; ".join(f.describe() for f in frames) or "nothing it could frame"
                return (
                    f"the server sent {r!r}, which answers none of the messages sent "
                    f"({sent}): Message ID and Command are echoed in the command's reply"
                )
            missed = [g for g in frames[cursor:j] if g.required(self.commands)]
            if missed:
                return (
                    f"the server answered {frames[j].describe()} before "
                    f"{missed[0].describe()}, which it did not answer: each command must be "
                    "replied to, and the server processes commands in the order they are "
                    "received"
                )
            cursor = j + 1
        missing = [f for f in frames[cursor:] if f.required(self.commands)]
        if complete and missing:
            return (
                f"the server did not answer {missing[0].describe()} (it answered the "
                "DEVICE_GET_INFO sent after it): each command must be replied to unless it "
                "sets No_reply"
            )
        return "the server's answers do not match the messages sent, in order"

    def _unanswered(self, frames: list[Frame], replies: list) -> Frame | None:
        """The first message that must be answered and is not yet (given ``replies``)."""
        done = self._assignment(frames, replies, complete=False) or []
        after = done[-1] + 1 if done else 0
        return next((f for f in frames[after:] if f.required(self.commands)), None)

    def _take(self, reply, frames: list[Frame], replies: list) -> None:
        """Check one answer and that the answers so far fit the messages, in order."""
        frame = next(
            (f for f in frames if (f.msg_id, f.command) == (reply.msg_id, reply.command)), None
        )
        replies.append(reply)
        if frame is None or self._assignment(frames, replies, complete=False) is None:
            _fail(self._order_failure(frames, replies, False), _step_level(replies))
        self._check_reply(frame, reply)
        event("reply: error" if not reply.ok else "reply: success")

    def _assigned(self, frames: list[Frame], replies: list) -> None:
        done = self._assignment(frames, replies, complete=False) or []
        self.replies = [(frames[k], r) for k, r in zip(done, replies, strict=False)]

    def _check_reply(self, frame: Frame, reply) -> None:
        what = frame.describe()
        if not reply.ok:
            reply.close_fds()
            if reply.payload:
                _fail(
                    f"the error reply to {what} carries {len(reply.payload)} payload "
                    "bytes: if an error occurs, the reply message must only include the "
                    "reply header"
                )
            if reply.errno >= 4096:
                _fail(
                    f"the error reply to {what} has error field {reply.errno:#x}, which is "
                    "no UNIX errno"
                )
            return
        reply.close_fds()
        try:
            decode(reply.command, True, reply.payload)
        except CodecError as e:
            _fail(f"the success reply to {what} does not decode: {e}")

    def _collect(self, client: Client, frames: list[Frame], probe: int) -> str:
        """Read answers until the probe's; check each one."""
        replies: list = []
        while True:
            try:
                reply = self._recv(client, self.timeout, frames, replies)
            except ConnectionClosed as e:
                return self._closed(e, frames, replies)
            except Timeout as e:
                missing = self._unanswered(frames, replies)
                what = (
                    f"the reply to {missing.describe()}"
                    if missing is not None
                    else "the reply to DEVICE_GET_INFO sent after the example"
                )
                raise Hang(
                    f"{what} did not come within {self.timeout:g} s, nor did the "
                    "server close the connection"
                ) from e
            if reply.msg_id == probe and reply.command == _PROBE:
                if self._assignment(frames, replies, complete=True) is None:
                    _fail(self._order_failure(frames, replies, True), _step_level(replies))
                self._assigned(frames, replies)
                self._check_probe(reply, frames, replies)
                if client.buffered:
                    extra = self._recv(client, 0.05, frames, replies)
                    _fail(
                        f"{extra!r} came after the reply to the DEVICE_GET_INFO sent last: "
                        "the server answered out of order",
                        _step_level([*replies, extra]),
                    )
                event("answers: framed")
                return "framed"
            self._take(reply, frames, replies)

    def _collect_required(self, client: Client, frames: list[Frame]) -> str:
        """Without a probe: read answers until every message that must be answered is."""
        replies: list = []
        while self._assignment(frames, replies, complete=True) is None:
            try:
                reply = self._recv(client, self.timeout, frames, replies)
            except ConnectionClosed as e:
                return self._closed(e, frames, replies)
            except Timeout as e:
                missing = self._unanswered(frames, replies)
                raise Hang(
                    f"the reply to {missing.describe() if missing else 'a message'} did "
                    f"not come within {self.timeout:g} s, nor did the server close the "
                    "connection"
                ) from e
            self._take(reply, frames, replies)
        self._assigned(frames, replies)
        return "framed"

    def _check_probe(self, reply, frames: list[Frame], replies: list) -> None:
        if (
            reply.ok
            and len(reply.payload) == DeviceInfo.SIZE
            and (self.device_info is None or reply.payload == self.device_info)
        ):
            return
        if any(f.command in (Command.VERSION, Command.DEVICE_RESET) for f in frames):
            self.drop()  # a renegotiation or reset may change what the connection serves
            return
        got = (
            f"an error reply ({errno_text(reply.errno)})"
            if not reply.ok
            else f"a {len(reply.payload)}-byte payload {reply.payload.hex()}"
        )
        _fail(
            f"after the example, DEVICE_GET_INFO got {got} instead of the device's "
            "16-byte info: the connection no longer serves requests correctly",
            _step_level(replies),
        )

    def _closed(self, e: ConnectionClosed, frames: list[Frame], replies: list) -> str:
        if e.partial_bytes:
            _fail(
                f"the server closed the connection in the middle of a message ({e}): "
                "a reply must be whole"
            )
        self._assigned(frames, replies)
        self.closes += 1
        missing = self._unanswered(frames, replies)
        if self.first_close is None and missing is not None:
            self.first_close = missing.describe()
        event("answers: connection closed")
        self._server_closed()
        return "closed"

    def _drain(self, client: Client, frames: list[Frame], ending: str) -> str:
        """After bytes the server cannot frame (or a close while sending): the messages
        before them that must be answered are (or the connection is closed); then wait
        briefly for the server to close, close ourselves if it does not, and check that a
        new connection is served."""
        replies: list = []
        strict = ending != "closed"  # a close while sending: whatever came, came
        read_all = False
        while True:
            pending = strict and self._assignment(frames, replies, complete=True) is None
            if not pending and not read_all:  # QUIET counts from when it has read them
                read_all = client.wait_peer_read(self.timeout)
            try:
                reply = self._recv(client, self.timeout if pending else QUIET, frames, replies)
            except ConnectionClosed as e:
                if e.partial_bytes:
                    _fail(
                        f"the server closed the connection in the middle of a message "
                        f"({e}): a reply must be whole"
                    )
                self._assigned(frames, replies)
                event(f"ending: {ending}, closed")
                self._server_closed()
                return ending
            except Timeout as e:
                if pending:
                    missing = self._unanswered(frames, replies)
                    raise Hang(
                        f"the reply to {missing.describe() if missing else 'a message'} "
                        f"did not come within {self.timeout:g} s, nor did the server "
                        "close the connection (what followed that message cannot be "
                        "framed)"
                    ) from e
                self._assigned(frames, replies)
                event(f"ending: {ending}, quiet")
                self.drop()  # the stream cannot be framed any further: we close it
                self._reconnect("stayed silent after bytes it cannot frame")
                return ending
            if strict and not pending and self._answers_unframed(reply, frames, replies):
                continue
            self._take(reply, frames, replies)

    def _answers_unframed(self, reply, frames: list[Frame], replies: list) -> bool:
        """Whether ``reply`` is a header-only error reply that answers none of ``frames``:
        the server's answer to the bytes past them, which it framed its own way (a
        16-byte header of msg_id 0 and command 0 made of padding, say). The spec says
        nothing of bytes that cannot be framed; a well-formed error reply is not wrong."""
        if reply.ok or reply.payload:
            return False
        if self._assignment(frames, [*replies, reply], complete=False) is not None:
            return False
        reply.close_fds()
        event("reply: error to bytes that cannot be framed")
        return True

    # -- single requests (state machines)

    def request(
        self,
        command: int,
        payload=b"",
        fds=(),
        what: str | None = None,
        timeout: float | None = None,
    ):
        """One request and its reply; None if the server closed the connection (a new
        one is then checked to work; ``connection()`` gives it). A hang raises Hang;
        an error reply with a payload fails."""
        client = self.connection()
        what = what or command_name(command)
        try:
            reply = client.request(command, payload, fds, timeout=timeout or self.timeout)
        except Timeout as e:
            raise Hang(f"no reply to {what} within {timeout or self.timeout:g} s") from e
        except ConnectionClosed as e:
            if e.partial_bytes:
                _fail(f"the server closed the connection in the middle of the reply to {what}")
            self.closes += 1
            self._server_closed()
            return None
        except (UnexpectedReply, MalformedReply) as e:
            _fail(f"the reply to {what} is not its reply: {e}")
        self.messages += 1
        if not reply.ok and reply.payload:
            _fail(
                f"the error reply to {what} carries {len(reply.payload)} payload bytes: an "
                "error reply must only include the reply header"
            )
        return reply

    def send(self, command: int, payload=b"", fds=(), no_reply: bool = True) -> None:
        """A request with No_reply (its effect is checked by the next request)."""
        try:
            self.connection().send(command, payload, fds, no_reply=no_reply)
        except ConnectionClosed:
            self.closes += 1
            self._server_closed()
        self.messages += 1

    # -- the end

    def finish(self, expected_info: DeviceInfo | None = None) -> int | None:
        """Close our connection; check that a new one negotiates and gets DEVICE_GET_INFO
        right; return how many more fds the server holds than before the run (None when
        unknown: no pid, or the server was restarted)."""
        self.drop()
        client = self._connect()
        try:
            reply = client.device_get_info()
            want = expected_info.pack() if expected_info is not None else self.device_info
            if (
                not reply.ok
                or len(reply.payload) != DeviceInfo.SIZE
                or (want is not None and reply.payload != want)
            ):
                _fail(
                    f"after the fuzzing, DEVICE_GET_INFO on a new connection got {reply!r} "
                    f"({reply.payload.hex()}), not the device's info"
                )
        except Timeout as e:
            raise Hang("after the fuzzing, DEVICE_GET_INFO on a new connection got no reply") from e
        finally:
            client.close()
        return self.fd_growth()

    def fd_growth(self) -> int | None:
        if self.fd_baseline is None or self.restarts:
            return None
        deadline = time.monotonic() + SETTLE
        while True:
            snap = self.target.snapshot()
            if snap.fds is None:
                return None
            if snap.fds <= self.fd_baseline or time.monotonic() >= deadline:
                return max(0, snap.fds - self.fd_baseline)
            time.sleep(0.01)

    def close(self) -> None:
        self.drop()

    # -- reporting

    def reproducer_path(self, n: int = 1) -> Path:
        name = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.case_id).strip("-") or "fuzz"
        return self.repro_dir / (f"{name}.py" if n == 1 else f"{name}-{n}.py")

    def _write_reproducer(self, path: Path, rec: _Record):
        """Write ``rec``'s reproducer at ``path``: the path, an error text, or None."""
        if not rec.conversations:
            return None
        try:
            return write_reproducer(
                path,
                rec.conversations,
                f"{self.case_id}: {_first_line(rec.error)}\n\nThe example:\n{rec.description}",
            )
        except OSError as err:
            return f"(not written: {err})"

    def final_error(self, e: BaseException) -> BaseException:
        """The exception a failed run ends with: the recorded failure with the example,
        its wire log and a reproducer; ``e`` itself when no example failed."""
        rec = self.fatal or self.failure
        if rec is None:
            return e
        others = dict(self.others)
        if not rec.fatal and _kind(e) in others and not _same_failure(rec.error, e):
            # Hypothesis ended on the other kind: that one is the shrunk example.
            others[_kind(rec.error)] = rec
            rec = others.pop(_kind(e))
        shrunk = rec
        if not rec.fatal:  # the verdict rests on the strongest sentence broken: it leads
            lead = min([rec, *others.values()], key=lambda r: _weakness(r.error))
            if lead is not rec:
                others[_kind(rec.error)] = rec
                rec = others.pop(_kind(lead.error))
        path = self._write_reproducer(self.reproducer_path(), rec)
        how = (
            "as found: a crash or a hang is not shrunk, each attempt would need a new "
            "server process or a timeout"
            if rec.fatal
            else f"shrunk by Hypothesis for its {self.shrink_seconds:g} s"
            if rec is shrunk and self.shrink_cut
            else "shrunk by Hypothesis"
            if rec is shrunk
            else "not shrunk: Hypothesis shrank another failure, below"
        )
        text = [_exc_text(rec.error), "", f"The failing example ({how}):", rec.description]
        if not rec.fatal and not _same_failure(rec.error, e):
            text += [
                "(Hypothesis could not make this example fail again when it replayed it: "
                "the failure depends on what the connection went through before it; "
                f"it ended with {type(e).__name__})"
            ]
        notes = [n for n in getattr(e, "__notes__", []) if "state." in n or "Draw " in n]
        if notes and not rec.fatal:  # a state machine's steps, as Hypothesis lists them
            listing = "\n".join(notes)
            text += [
                "",
                "Hypothesis' listing of the steps:",
                listing if len(listing) < 4000 else listing[:4000] + "\n...",
            ]
        for n, other in enumerate(others.values(), 2):
            where = self._write_reproducer(self.reproducer_path(n), other)
            text += [
                "",
                f"Another failure this run found ({n} of {len(others) + 1}; "
                f"{'shrunk by Hypothesis' if other is shrunk else 'not shrunk'}):",
                _exc_text(other.error).splitlines()[0],
                other.description,
            ]
            if where is not None:
                text.append(f"Its reproducer: {where}")
        if rec.log_text:
            text += ["", "Its wire log (decoded messages and raw bytes):", rec.log_text]
        if path is not None:
            text += [
                "",
                f"Standalone reproducer: {path}",
                f"    python3 {path} /path/to/server.sock",
            ]
            self.reproducer_written = str(path)
        err = (
            Hang
            if isinstance(rec.error, Hang)
            else TargetLost
            if isinstance(rec.error, TargetLost)
            else FuzzFailure
        )("\n".join(text))
        err.level = getattr(rec.error, "level", None)
        if _has_timeout(rec.error):
            err.__cause__ = rec.error  # the verdict: HANG
        err.__suppress_context__ = True
        return err


def _weakness(e: BaseException) -> int:
    """0 for a failure at its case's level, 1 for one resting on a SHOULD, 2 on a MAY."""
    return {None: 0, "should": 1, "may": 2}.get(getattr(e, "level", None), 0)


def _describe(value) -> str:
    describe = getattr(value, "describe", None)
    return describe() if callable(describe) else repr(value)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _kind(e: BaseException) -> str:
    """What failed, without the example's particulars: the rule a failure message ends
    with (after its last ": "), else its first line with the numbers left out."""
    line = _first_line(e)
    rule = line.rsplit(": ", 1)[-1] if ": " in line else re.sub(r"0x[0-9a-f]+|\d+", "N", line)
    return f"{type(e).__name__}: {rule}"


def _exc_text(e: BaseException) -> str:
    if isinstance(e, FuzzFailure):
        return str(e)
    return f"{type(e).__name__}: {e}"


def _chain(e: BaseException | None):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _has_timeout(e: BaseException) -> bool:
    return any(isinstance(x, Timeout) for x in _chain(e))


def _is_fatal(e: BaseException) -> bool:
    return isinstance(e, (TargetLost, Hang)) or _has_timeout(e)


def _same_failure(recorded: BaseException, raised: BaseException) -> bool:
    return (
        recorded is raised
        or any(x is recorded for x in _chain(raised))
        or (type(recorded) is type(raised) and str(recorded) == str(raised))
    )


# ---------------------------------------------------------------- targets outside pytest


# ---------------------------------------------------------------- running Hypothesis


def run_examples(
    fuzzer: Fuzzer, strategy, body: Callable, fuzz: settings, describe: Callable | None = None
) -> None:
    """Run ``body(example)`` for the examples of ``strategy`` under ``fuzz`` settings;
    on failure raise ``fuzzer.final_error`` (the example, its wire log, a reproducer)."""

    def fuzz_examples(value):
        fuzzer.example(body, value, describe)

    # Every case's examples are this function: the case id keeps their database keys apart.
    fuzz_examples._hypothesis_internal_add_digest = fuzzer.case_id.encode()
    run_with(fuzzer, fuzz(given(strategy)(fuzz_examples)))


def run_machine(fuzzer: Fuzzer, machine: type, fuzz: settings) -> None:
    """Run a RuleBasedStateMachine whose instances use ``fuzzer`` (each run one example:
    its __init__ calls ``fuzzer.begin``)."""
    run_with(fuzzer, lambda: run_state_machine_as_test(machine, settings=fuzz))


def run_with(fuzzer: Fuzzer, fn: Callable[[], None]) -> None:
    """Run ``fn`` (examples over ``fuzzer``), its failure turned into the fuzzer's final
    error (with the wire log and reproducer of the failing example)."""
    start = time.monotonic()
    try:
        # Hypothesis's statistics of the run, for --hypothesis-show-statistics: its pytest
        # plugin collects them only for tests that are @given themselves.
        with statistics_collector.with_value(
            lambda stats: fuzzer.statistics.append(describe_statistics(stats))
        ):
            fn()
    except Exception as e:
        fuzzer.drop()  # a server serving one client at a time is free for the reproducer
        if fuzzer.fatal is None and fuzzer.failure is None:
            raise
        err = fuzzer.final_error(e)
        raise err from err.__cause__  # a Timeout stays in the chain: the verdict is HANG
    finally:
        fuzzer.seconds += time.monotonic() - start
    if fuzzer.fatal is not None:  # the run passed only because examples stopped running
        err = fuzzer.final_error(fuzzer.fatal.error)
        raise err from err.__cause__
