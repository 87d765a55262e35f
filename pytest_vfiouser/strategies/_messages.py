"""Headers, valid encodings of each payload type, and whole messages: a header
and the payload of a request or reply."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from pytest_vfiouser.protocol import (
    FLAG_ERROR,
    FLAG_NO_REPLY,
    HEADER_SIZE,
    REPLY_TYPES,
    REQUEST_TYPES,
    Command,
    Header,
    MsgType,
    Payload,
)

from ._integers import enum_or_any, u16s, u32s
from ._payloads import PAYLOAD_STRATEGIES


def headers(
    command: SearchStrategy[int] | None = None, flags: SearchStrategy[int] | None = None
) -> SearchStrategy[Header]:
    """Headers with any field values (msg_size need not match anything)."""
    if command is None:
        command = enum_or_any(Command, 16)
    if flags is None:
        flags = st.one_of(
            st.sampled_from(
                [
                    MsgType.COMMAND,
                    MsgType.REPLY,
                    MsgType.COMMAND | FLAG_NO_REPLY,
                    MsgType.REPLY | FLAG_ERROR,
                ]
            ),
            u32s(),
        )
    return st.builds(
        Header, msg_id=u16s(), command=command, msg_size=u32s(), flags=flags, error=u32s()
    )


def encodings(cls: type) -> SearchStrategy[bytes]:
    """Valid encodings of a payload class (or of Header)."""
    strategy = headers() if cls is Header else PAYLOAD_STRATEGIES[cls]
    return strategy.map(lambda p: p.pack())


@functools.cache
def message_payloads(command: int, reply: bool) -> SearchStrategy[Payload | None]:
    """The payload of a request or reply of ``command``: None where it carries none."""
    table = REPLY_TYPES if reply else REQUEST_TYPES
    cls = table.get(command)
    if cls is None:
        return st.none()
    if command == Command.DIRTY_PAGES and reply:  # START and STOP replies are empty
        return st.one_of(st.none(), PAYLOAD_STRATEGIES[cls])
    return PAYLOAD_STRATEGIES[cls]


def _message(
    command: int, reply: bool, payload: Payload | None, msg_id: int, no_reply: bool
) -> tuple[Header, bytes]:
    body = b"" if payload is None else payload.pack()
    flags = MsgType.REPLY if reply else (FLAG_NO_REPLY if no_reply else MsgType.COMMAND)
    return Header(msg_id, command, HEADER_SIZE + len(body), flags), body


def messages(
    commands: Iterable[int] = tuple(Command), replies: Iterable[bool] = (False, True)
) -> SearchStrategy[tuple[Header, bytes]]:
    """Whole, well-framed messages: the header and the payload bytes.

    ``encode(...)`` of the header's fields and the payload gives the wire bytes;
    ``header.pack() + payload`` is the same thing.
    """
    return st.one_of(
        *[
            st.builds(
                _message,
                st.just(int(command)),
                st.just(reply),
                message_payloads(int(command), reply),
                u16s(),
                st.booleans(),
            )
            for command in commands
            for reply in replies
        ]
    )
