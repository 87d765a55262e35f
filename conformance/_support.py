"""Helpers shared by the conformance modules (keep each one small).

The robustness pattern: after something invalid, the server either answers
with an error reply (Error bit set, header only, msg_id and command echoed)
or closes the connection cleanly; it never crashes or hangs (the plugin
reports those as CRASH and HANG). If it replied, the connection must still be
framed; if it closed, a new connection must work.
"""

from __future__ import annotations

import contextlib
import functools
import os
import select
import time

import pytest

from pytest_vfiouser import SHOULD, Unmet, watch_client
from pytest_vfiouser.client import Client, ConnectionClosed
from pytest_vfiouser.protocol import Command, DeviceInfo, MigrationStateV1, Version, command_name
from pytest_vfiouser.target import Target, TargetStartError, spinning

# Waits: every wait for an answer is the client's timeout (--vfu-timeout). The
# spec sets no shorter deadline for refusing something invalid, so a shorter wait
# here would call a slow but correct server hung.


# After a message it refused (or dropped), a server that reads the rest of that message as
# the next header answers messages nobody sent. The spec defines where a message ends but not
# what a server does with one it cannot use: keeping the stream framed is a SHOULD.
FRAMING = (
    'the server should go on framing by msg_size ("Message size contains the size of the '
    'entire message, including the header.")'
)


def out_of_step(text: str) -> Unmet:
    """The failure of a server that lost the framing after a message it refused: a SHOULD."""
    return Unmet(f"{text}: {FRAMING}", SHOULD)


def assert_framed(client, after: str = "the previous message", refused: bool = False) -> None:
    """The connection still works: DEVICE_GET_INFO gets its full, correct reply. After a
    message the server ``refused`` (or dropped), losing the framing is a SHOULD not met."""
    reply = client.device_get_info()
    if not (reply.ok and len(reply.payload) == DeviceInfo.SIZE):
        text = f"after {after}, DEVICE_GET_INFO got {reply!r}: the connection is no longer framed"
        if refused:
            raise out_of_step(text)
        raise AssertionError(text)


def new_client(connect, after: str = "its client left"):
    """A new connection to ``connect``'s server (the vfu_connect fixture), negotiated; None
    when the server has exited instead, or serves one client per process (the spec lets a
    server exit once its client is gone: "the server can automatically exit", and does not
    promise a second client); a crash fails."""
    target = connect.target
    if target.serves_one_client:  # seen by the suite: asking again would only wait
        return None
    if _left_behind(target, after):
        return None
    try:
        client = connect()
        client.negotiate()
        return client
    except (OSError, ConnectionClosed):
        # A server that serves one client closes its listening socket and exits: wait for
        # the exit before calling a refused or dropped connection a failure.
        deadline = time.monotonic() + connect.timeout
        while target.alive and time.monotonic() < deadline:
            time.sleep(0.01)
        if not target.alive:
            crash = target.crash()
            assert crash is None, crash.message()
            return None
        raise


def _left_behind(target, after: str) -> bool:
    """Whether a server seen to exit after its clients still runs after this one left: it
    is left behind (like one that serves one client, which the spec allows; no new client
    is asked). One that spins meanwhile fails a SHOULD."""
    busy = target.left_behind()
    if busy is not None and (wrong := spinning(busy)):
        raise Unmet(f"after {after}, {wrong}", SHOULD)
    return busy is not None


def assert_new_connection_works(connect, after: str = "the previous message") -> None:
    """After ``after`` closed the connection, a new connection negotiates and is served, or
    the server has exited (allowed). The new connection is closed afterwards (a server may
    serve one client at a time)."""
    try:
        client = new_client(connect, after)
    except (OSError, ConnectionClosed) as e:
        raise AssertionError(
            f"after closing the connection on {after}, the server no "
            f"longer accepts connections, and it is still running: {e}"
        ) from e
    if client is None:
        return
    assert_framed(client, after)
    client.close()


def answer(
    client,
    msg_id: int,
    command: int,
    connect,
    what: str,
    timeout: float | None = None,
    header_only: bool = True,
):
    """The server's answer to ``what`` (sent as ``msg_id``): its Reply, or None if it
    closed the connection cleanly. Either way the connection (or a new one) is then
    checked to work. An error reply must be header-only (unless ``header_only`` is
    False: the caller judges another rule of it); a success reply may be anything (the
    caller judges it)."""
    name = command_name(command)
    try:
        reply = client.recv_reply(timeout=timeout)
    except ConnectionClosed as e:
        assert not e.partial_bytes, (
            f"on {what}, the server closed the connection in the middle of a message ({e})"
        )
        assert_new_connection_works(connect, what)
        return None
    assert reply.is_reply, f"on {what}, the server sent {reply!r} instead of a reply"
    assert reply.msg_id == msg_id, (
        f"the reply to {what} has msg_id {reply.msg_id}, not the command's {msg_id}"
    )
    assert reply.command == command, (
        f"the reply to {what} has command {command_name(reply.command)}, not {name}"
    )
    if not reply.ok:
        reply.close_fds()
        assert not header_only or not reply.payload, (
            f"the error reply to {what} carries {len(reply.payload)} payload bytes; "
            "an error reply must only include the reply header"
        )
    assert_framed(client, what, refused=not reply.ok)
    return reply


def refused(
    client,
    msg_id: int,
    command: int,
    connect,
    what: str,
    observe=None,
    timeout: float | None = None,
):
    """Assert the server refused ``what``: an error reply (returned) or a clean close
    (None; noted through ``observe`` when given)."""
    reply = answer(client, msg_id, command, connect, what, timeout)
    if reply is None:
        if observe is not None:
            observe(f"the server closed the connection instead of replying with an error to {what}")
        return None
    reply.close_fds()
    assert not reply.ok, (
        f"the server accepted {what}: {command_name(command)} succeeded "
        f"({len(reply.payload)} payload bytes) where it should have been refused"
    )
    return reply


def send_refused(
    client,
    command: int,
    payload: bytes,
    connect,
    what: str,
    observe=None,
    fds=(),
    timeout: float | None = None,
):
    """Send ``payload`` (raw bytes) as ``command`` and assert it is refused (see refused)."""
    try:
        msg_id = client.send(command, payload, fds)
    except ConnectionClosed:  # closed while the message was still going out
        assert_new_connection_works(connect, what)
        if observe is not None:
            observe(f"the server closed the connection while {what} was being sent")
        return None
    return refused(client, msg_id, command, connect, what, observe, timeout)


def accepted(reply, what: str):
    """Assert ``reply`` is a success reply; return it."""
    assert reply.ok, (
        f"the server refused {what}: error reply with errno {reply.error}"
        if reply.error
        else f"the server refused {what} (error reply, errno 0)"
    )
    return reply


__all__ = [
    "accepted",
    "answer",
    "assert_framed",
    "assert_new_connection_works",
    "new_client",
    "out_of_step",
    "refused",
    "send_refused",
]


# -- server resources and eventfds (IRQ, disconnect and DMA modules)


def server_max_msg_fds(client) -> int:
    """The most fds one message to the server may carry (its VERSION max_msg_fds, default 1)."""
    caps = client.server_caps
    return caps.max_msg_fds if caps is not None else 1


def wait_server_fds(target, limit: int, timeout: float) -> int | None:
    """Poll the server's open fd count until it is at most ``limit`` (or the server is
    gone, or ``timeout`` passes); the last count, None when unknown or gone."""
    deadline = time.monotonic() + timeout
    while True:
        fds = target.snapshot().fds
        if fds is None or fds <= limit or time.monotonic() >= deadline:
            return fds
        time.sleep(0.01)


# An interrupt is a side effect, not a reply: a short wait for the signal (it ends as
# soon as the eventfd is signalled), and a shorter one for eventfds that must stay quiet.
SIGNAL_WAIT = 1.0
QUIET_WAIT = 0.05


def make_eventfd() -> int:
    """A new non-blocking eventfd (the caller closes it)."""
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def eventfd_value(fd: int, timeout: float = 0.0) -> int:
    """Wait up to ``timeout`` s for ``fd`` to be signalled; read (and so reset) its counter."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    if not poller.poll(int(timeout * 1000)):
        return 0
    try:
        return os.eventfd_read(fd)
    except BlockingIOError:
        return 0


__all__ += [
    "QUIET_WAIT",
    "SIGNAL_WAIT",
    "eventfd_value",
    "make_eventfd",
    "server_max_msg_fds",
    "wait_server_fds",
]


# -- messages the server may answer, drop, or close on (header and version modules)


def answer_or_silence(
    client, msg_id: int, command: int, connect, what: str, timeout: float | None = None
):
    """Like answer(), for a message the server may also drop without a reply, and on
    a connection not yet negotiated too: a probe request follows ``what`` at once
    (DEVICE_GET_INFO, or VERSION before negotiation) and must get its own reply,
    which shows the connection is still framed. Returns the Reply to ``what`` (an
    error reply is checked to be header-only), False if none came before the
    probe's, or None if the server closed the connection before replying (a new
    connection is then checked to work)."""
    negotiated = client.negotiated is not None
    probe = Command.DEVICE_GET_INFO if negotiated else Command.VERSION
    probe_id = (msg_id + 1) & 0xFFFF
    try:
        client.send(
            probe, DeviceInfo(DeviceInfo.SIZE) if negotiated else Version(0, 0), msg_id=probe_id
        )
    except ConnectionClosed:
        pass  # closed after ``what``: what it sent before that is still read below
    reply = None
    try:
        first = client.recv_message(timeout)
        first.close_fds()
        if not (first.is_reply and first.msg_id == probe_id and first.command == probe):
            if not (first.is_reply and first.msg_id == msg_id and first.command == command):
                raise out_of_step(
                    f"after {what}, the server sent {first!r}: neither the reply to it "
                    f"(msg_id {msg_id}, {command_name(command)}) nor to the request that "
                    "followed"
                )
            assert first.ok or not first.payload, (
                f"the error reply to {what} carries {len(first.payload)} payload bytes; "
                "an error reply must only include the reply header"
            )
            reply = first
            first = client.recv_message(timeout)
            first.close_fds()
        if not (first.is_reply and first.msg_id == probe_id and first.command == probe):
            raise out_of_step(
                f"after {what}, the server sent {first!r} where the reply to "
                f"{command_name(probe)} msg_id {probe_id} was due: it is out of step"
            )
        if negotiated and not (first.ok and len(first.payload) == DeviceInfo.SIZE):
            raise out_of_step(
                f"after {what}, DEVICE_GET_INFO got {first!r}: the connection is no longer framed"
            )
    except ConnectionClosed as e:
        assert not e.partial_bytes, (
            f"on {what}, the server closed the connection in the middle of a message ({e})"
        )
        assert_new_connection_works(connect, what)
        return reply
    return reply if reply is not None else False


__all__ += ["answer_or_silence"]


def first_scratch(device, most: int | None = None) -> tuple[int, int, int]:
    """(region, offset, length) of the profile's first scratch range, at most ``most``
    bytes long; skips the case (UNIMPLEMENTED) when the profile gives none."""
    ranges = device.scratch_ranges()
    if not ranges:
        pytest.skip("needs profile: a scratch range (regions[].scratch) tests may write")
    region, offset, length = ranges[0]
    return region, offset, length if most is None else min(length, most)


def pattern(n: int, first: int, step: int) -> bytes:
    """``n`` bytes counting from ``first`` by ``step``, modulo 256: data that shows where it
    came from. Made of its 256-byte period: migration cases write megabytes of it."""
    return (_cycle(first & 0xFF, step & 0xFF) * (n // 256 + 1))[:n]


@functools.cache
def _cycle(first: int, step: int) -> bytes:
    return bytes((first + step * i) & 0xFF for i in range(256))


__all__ += ["first_scratch", "pattern"]


# -- 0.9.1 migration: device_state values (migration and fuzz modules)

S = MigrationStateV1
STATE_NAMES = {
    S.STOPPED: "stopped",
    S.RUNNING: "running",
    S.STOP_AND_COPY: "stop-and-copy",
    S.PRE_COPY: "pre-copy",
    S.RESUMING: "resuming",
    S.INVALID_101: "invalid-101",
    S.ERROR: "error-110",
    S.INVALID_111: "invalid-111",
}
# The valid transitions that lead from each state back to running.
BACK = {
    S.RUNNING: (),
    S.STOPPED: (S.RUNNING,),
    S.STOP_AND_COPY: (S.RUNNING,),
    S.PRE_COPY: (S.STOP_AND_COPY, S.RUNNING),
    S.RESUMING: (S.RUNNING,),
}


def state_name(state: int) -> str:
    return STATE_NAMES.get(state, f"{state:#x}")


__all__ += ["BACK", "STATE_NAMES", "state_name"]


# -- a second server process (the migration modules' destination)


@contextlib.contextmanager
def second_server(request):
    """Another process of the server under test (a migration's destination), started from
    the same command template (``vfu_target.template``; fresh() would replace the target,
    not add a second one): yields ``connect()``, a new watched, unnegotiated client of it.
    Skips with --vfu-socket; fails if it does not start or is killed by a signal."""
    handle = request.getfixturevalue("vfu_target")
    if handle.template is None:
        pytest.skip(
            "needs a server the suite starts (--vfu-server), not --vfu-socket: a whole "
            "migration needs a second server process as the destination"
        )
    settings = request.getfixturevalue("vfu_settings")
    timeout = settings.timeout
    target = Target(handle.template, env=handle.env, startup_timeout=settings.start_timeout)
    try:
        target.start()
    except TargetStartError as e:
        pytest.fail(f"the second server process (the migration destination) did not start: {e}")
    clients: list[Client] = []

    def connect() -> Client:
        client = Client.connect(target.socket_path, timeout=timeout)
        clients.append(client)
        watch_client(client)
        return client

    try:
        yield connect
        for client in clients:
            client.close()
        signal = target.signal_name if target.poll() is not None else None
        assert signal is None, (
            f"the destination server process was killed by {signal}:\n{target.stderr_tail()}"
        )
    finally:
        for client in clients:
            client.close()
        target.stop()
        target.cleanup()
