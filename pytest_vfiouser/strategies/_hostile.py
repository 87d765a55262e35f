"""Hostile input: bytes that are no message, and VERSION proposals for a
connection not yet negotiated, with hostile version data."""

from __future__ import annotations

import json
import struct

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from pytest_vfiouser.protocol import (
    Command,
    encode,
)

from ._integers import enum_or_any, u16s, u32s
from ._json import version_json
from ._messages import headers
from ._mutations import mutated
from ._request_mutations import mutate_request
from ._wire import RawBytes, WireMessage


def garbage(max_size: int = 256) -> SearchStrategy[RawBytes]:
    """Bytes that are no message: random; a random header (any msg_size) with random
    bytes after it; a header whose msg_size matches random payload bytes; now and
    then with fds."""
    random_bytes = st.binary(min_size=1, max_size=max_size)
    header_then_bytes = st.builds(
        lambda h, tail: h.pack() + tail, headers(), st.binary(max_size=64)
    )
    framed_junk = st.builds(
        lambda msg_id, command, flags, payload: encode(msg_id, command, payload, flags),
        st.integers(0, 0xFFFF),
        enum_or_any(Command, 16),
        st.one_of(st.just(0), st.just(0), u32s()),
        st.binary(max_size=max_size),
    )
    nfds = st.sampled_from((0, 0, 0, 0, 1, 2))
    return st.builds(RawBytes, st.one_of(random_bytes, header_then_bytes, framed_junk), nfds)


_JSON_HOSTILE = [
    b"",
    b"{",
    b"}",
    b"[]",
    b"null",
    b"0",
    b'"x"',
    b"{}{}",
    b'{"capabilities":',
    b'{"capabilities":null}',
    b'{"capabilities":[]}',
    b'{"capabilities":"x"}',
    b'{"capabilities":{"max_msg_fds":-1}}',
    b'{"capabilities":{"max_msg_fds":1.5}}',
    b'{"capabilities":{"max_msg_fds":"16"}}',
    b'{"capabilities":{"max_msg_fds":18446744073709551616}}',
    b'{"capabilities":{"max_data_xfer_size":0}}',
    b'{"capabilities":{"max_data_xfer_size":1e999}}',
    b'{"capabilities":{"migration":{"pgsize":3}}}',
    b'{"capabilities":{"migration":{"pgsize":0}}}',
    b'{"capabilities":{"migration":[]}}',
    b'{"capabilities":{"max_msg_fds":1,"max_msg_fds":2}}',
    b'{"capabilities":{}, "capabilities":{"max_msg_fds":99999999999}}',
    b'{"a":NaN}',
    b'{"a":Infinity}',
    b'{"\xff\xfe":1}',
    b'{"a":"\xed\xa0\x80"}',
    b"[" * 100000 + b"]" * 100000,
    b'{"a":' * 50000 + b"1" + b"}" * 50000,
    b'{"a":"' + b"x" * 60000 + b'"}',
    b"1" * 5000,
]


def _json_bytes() -> SearchStrategy[bytes]:
    """The version data: valid JSON objects, and JSON-ish text a parser can choke on,
    NUL-terminated or not."""
    valid = version_json().map(lambda obj: json.dumps(obj, separators=(",", ":")).encode())
    hostile_text = st.one_of(st.sampled_from(_JSON_HOSTILE), mutated(valid), st.binary(max_size=64))
    return st.builds(
        lambda text, nul: text + nul,
        st.one_of(valid, hostile_text),
        st.sampled_from((b"\0", b"\0", b"", b"\0\0", b"\0x")),
    )


def version_proposals() -> SearchStrategy[WireMessage]:
    """VERSION requests for a connection not yet negotiated: major 0 mostly (others
    now and then), any minor, valid and hostile version data, mutated framing."""

    def build(msg_id, major, minor, text):
        return WireMessage(msg_id, int(Command.VERSION), struct.pack("<HH", major, minor) + text)

    plain = st.builds(
        build,
        st.integers(0, 0xFFFF),
        st.one_of(st.just(0), st.just(0), st.just(0), u16s()),
        u16s(),
        st.one_of(st.just(b""), _json_bytes()),
    )

    @st.composite
    def damaged(draw):
        msg = draw(plain)
        ops = (
            "msg_size_short",
            "msg_size_long",
            "truncate",
            "trailing",
            "type",
            "header_flags",
            "error_bit",
            "no_reply",
            "fds_extra",
            "bytes",
        )
        return mutate_request(draw, msg, None, ops)

    return st.one_of(plain, plain, damaged())
