"""Helpers shared by the conformance modules (keep each one small).

The robustness pattern: after something invalid, the server either answers
with an error reply (Error bit set, header only, msg_id and command echoed)
or closes the connection cleanly; it never crashes or hangs (the plugin
reports those as CRASH and HANG). If it replied, the connection must still be
framed; if it closed, a new connection must work.
"""

from __future__ import annotations

from pytest_vfiouser.client import ConnectionClosed
from pytest_vfiouser.protocol import DeviceInfo, command_name

ROBUST_TIMEOUT = 2.0  # seconds to wait for the answer to something invalid


def assert_framed(client, after: str = "the previous message") -> None:
    """The connection still works: DEVICE_GET_INFO gets its full, correct reply."""
    reply = client.device_get_info()
    assert reply.ok and len(reply.payload) == DeviceInfo.SIZE, (
        f"after {after}, DEVICE_GET_INFO got {reply!r}: the connection is no longer framed")


def assert_new_connection_works(connect, after: str = "the previous message") -> None:
    """``connect`` (the vfu_connect fixture): a new connection negotiates and is served."""
    try:
        client = connect()
        client.negotiate()
    except OSError as e:
        raise AssertionError(f"after closing the connection on {after}, the server no "
                             f"longer accepts connections: {e}") from e
    assert_framed(client, after)


def answer(client, msg_id: int, command: int, connect, what: str,
           timeout: float = ROBUST_TIMEOUT):
    """The server's answer to ``what`` (sent as ``msg_id``): its Reply, or None if it
    closed the connection cleanly. Either way the connection (or a new one) is then
    checked to work. An error reply must be header-only; a success reply may be anything
    (the caller judges it)."""
    name = command_name(command)
    try:
        reply = client.recv_reply(timeout=timeout)
    except ConnectionClosed as e:
        assert not e.partial_bytes, (
            f"on {what}, the server closed the connection in the middle of a message ({e})")
        assert_new_connection_works(connect, what)
        return None
    assert reply.is_reply, f"on {what}, the server sent {reply!r} instead of a reply"
    assert reply.msg_id == msg_id, (
        f"the reply to {what} has msg_id {reply.msg_id}, not the command's {msg_id}")
    assert reply.command == command, (
        f"the reply to {what} has command {command_name(reply.command)}, not {name}")
    if not reply.ok:
        reply.close_fds()
        assert not reply.payload, (
            f"the error reply to {what} carries {len(reply.payload)} payload bytes; "
            "an error reply must only include the reply header")
    assert_framed(client, what)
    return reply


def refused(client, msg_id: int, command: int, connect, what: str, observe=None,
            timeout: float = ROBUST_TIMEOUT):
    """Assert the server refused ``what``: an error reply (returned) or a clean close
    (None; noted through ``observe`` when given)."""
    reply = answer(client, msg_id, command, connect, what, timeout)
    if reply is None:
        if observe is not None:
            observe(f"the server closed the connection instead of replying with an error "
                    f"to {what}")
        return None
    reply.close_fds()
    assert not reply.ok, (
        f"the server accepted {what}: {command_name(command)} succeeded "
        f"({len(reply.payload)} payload bytes) where it should have been refused")
    return reply


def send_refused(client, command: int, payload: bytes, connect, what: str, observe=None,
                 fds=(), timeout: float = ROBUST_TIMEOUT):
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
    assert reply.ok, (f"the server refused {what}: error reply with errno {reply.error}"
                      if reply.error else f"the server refused {what} (error reply, errno 0)")
    return reply


__all__ = ["ROBUST_TIMEOUT", "accepted", "answer", "assert_framed",
           "assert_new_connection_works", "refused", "send_refused"]
