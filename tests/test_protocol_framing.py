"""Framing: MessageReader turns a byte stream into (Header, payload), and encode*.

The reader is fed whatever the socket returned: whole messages, a message
split anywhere, several messages at once. It must refuse a msg_size below
the header size or above its limit from the header alone, without allocating
what the header claims.
"""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_vfiouser import protocol as p
from pytest_vfiouser import strategies as s
from pytest_vfiouser.protocol import CodecError, Command, MessageReader

PROPS = s.CODEC_SETTINGS
MiB = 1 << 20


def raw_header(msg_id: int, command: int, msg_size: int, flags: int = 0, error: int = 0):
    # Header table: Message ID 0/2, Command 2/2, Message size 4/4, Flags 8/4, Error 12/4.
    return struct.pack("<HHIII", msg_id, command, msg_size, flags, error)


def drain(reader: MessageReader) -> list[tuple[p.Header, bytes]]:
    out = []
    while (msg := reader.next_message()) is not None:
        out.append(msg)
    return out


DMA_MAP = p.encode(5, Command.DMA_MAP, p.DmaMap(32, 3, 0, 0x1000, 0x2000).pack())
VERSION = p.encode(1, Command.VERSION, p.Version.with_capabilities(0, 1, max_msg_fds=8).pack())
RESET = p.encode(9, Command.DEVICE_RESET)


class TestWholeMessages:
    def test_one_message(self):
        reader = MessageReader(MiB)
        reader.feed(DMA_MAP)
        hdr, body = reader.next_message()
        assert hdr == p.Header(5, Command.DMA_MAP, 48, 0, 0)
        assert p.decode(hdr.command, hdr.is_reply, body) == p.DmaMap(32, 3, 0, 0x1000, 0x2000)
        assert reader.next_message() is None
        assert reader.buffered == 0 and reader.pending_header is None

    def test_header_only_message(self):
        reader = MessageReader(MiB)
        reader.feed(RESET)
        assert reader.next_message() == (p.Header(9, Command.DEVICE_RESET, 16), b"")

    def test_nothing_fed(self):
        reader = MessageReader(MiB)
        assert reader.next_message() is None
        reader.feed(b"")
        assert reader.next_message() is None

    def test_several_messages_in_one_feed(self):
        reader = MessageReader(MiB)
        reader.feed(VERSION + DMA_MAP + RESET + DMA_MAP)
        msgs = drain(reader)
        assert [h.command for h, _ in msgs] == [1, 2, 13, 2]
        assert b"".join(h.pack() + b for h, b in msgs) == VERSION + DMA_MAP + RESET + DMA_MAP
        assert reader.buffered == 0

    def test_several_messages_and_a_part(self):
        reader = MessageReader(MiB)
        reader.feed(VERSION + DMA_MAP[:20])
        assert len(drain(reader)) == 1
        assert reader.pending_header == p.Header(5, Command.DMA_MAP, 48)
        assert reader.buffered == 4
        reader.feed(DMA_MAP[20:])
        assert drain(reader) == [(p.Header(5, Command.DMA_MAP, 48), DMA_MAP[16:])]

    @pytest.mark.parametrize(
        "message", [VERSION, DMA_MAP, RESET], ids=["version", "dma_map", "reset"]
    )
    def test_split_at_every_byte_boundary(self, message):
        for cut in range(len(message) + 1):
            reader = MessageReader(MiB)
            reader.feed(message[:cut])
            got = reader.next_message()
            if cut < len(message):
                assert got is None, cut
                assert (reader.pending_header is not None) == (cut >= 16)
                reader.feed(message[cut:])
                got = reader.next_message()
            assert got is not None and got[0].pack() + got[1] == message, cut
            assert reader.next_message() is None and reader.buffered == 0

    def test_one_byte_at_a_time(self):
        stream = VERSION + DMA_MAP + RESET
        reader = MessageReader(MiB)
        out = []
        for i in range(len(stream)):
            reader.feed(stream[i : i + 1])
            out += drain(reader)
        assert b"".join(h.pack() + b for h, b in out) == stream

    @PROPS
    @given(st.lists(s.messages(), min_size=1, max_size=6), st.data())
    def test_any_messages_in_any_chunks(self, messages, data):
        stream = b"".join(h.pack() + b for h, b in messages)
        cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
        reader = MessageReader(MiB)
        out = []
        for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
            reader.feed(stream[start:end])
            out += drain(reader)
        assert out == messages
        assert reader.buffered == 0 and reader.pending_header is None


class TestMsgSizeLimits:
    @pytest.mark.parametrize("msg_size", [0, 1, 15])
    def test_below_header_size(self, msg_size):
        reader = MessageReader(MiB)
        reader.feed(raw_header(1, Command.VERSION, msg_size) + b"\0" * 32)
        with pytest.raises(CodecError) as info:
            reader.next_message()
        assert info.value.field == "msg_size"
        # The stream cannot be framed any more: it keeps refusing.
        with pytest.raises(CodecError):
            reader.next_message()

    def test_above_limit_refused_before_allocating(self):
        reader = MessageReader(max_msg_size=MiB)
        tracemalloc.start()
        try:
            reader.feed(raw_header(1, Command.DMA_WRITE, 2**32 - 1))
            with pytest.raises(CodecError) as info:
                reader.next_message()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert info.value.field == "msg_size"
        assert "4294967295" in info.value.detail
        assert peak < 64 * 1024
        assert reader.buffered == 16 and reader.pending_header is None

    def test_limit_itself_accepted(self):
        limit = 64
        reader = MessageReader(max_msg_size=limit)
        reader.feed(raw_header(1, Command.REGION_WRITE, limit) + b"\0" * (limit - 16))
        hdr, body = reader.next_message()
        assert hdr.msg_size == limit and len(body) == limit - 16
        reader.feed(raw_header(2, Command.REGION_WRITE, limit + 1))
        with pytest.raises(CodecError):
            reader.next_message()

    def test_refused_from_the_header_alone(self):
        # No payload bytes have arrived: the header is enough to refuse.
        reader = MessageReader(max_msg_size=MiB)
        reader.feed(raw_header(1, Command.REGION_READ, MiB + 1))
        with pytest.raises(CodecError):
            reader.next_message()

    def test_check_msg_size(self):
        p.check_msg_size(p.Header(0, 1, 16), 16)
        for size, limit in [(15, 100), (101, 100), (2**32 - 1, MiB)]:
            with pytest.raises(CodecError):
                p.check_msg_size(p.Header(0, 1, size), limit)

    @PROPS
    @given(s.u32s(), s.u32s())
    def test_any_msg_size_and_limit(self, msg_size, limit):
        reader = MessageReader(max_msg_size=limit)
        reader.feed(raw_header(1, 1, msg_size))
        if 16 <= msg_size <= limit:
            assert reader.next_message() is None or msg_size == 16
        else:
            with pytest.raises(CodecError):
                reader.next_message()

    @PROPS
    @given(st.binary(max_size=200))
    def test_garbage_raises_only_codec_error(self, garbage):
        reader = MessageReader(max_msg_size=4096)
        reader.feed(garbage)
        try:
            msgs = drain(reader)
        except CodecError:
            return
        assert sum(h.msg_size for h, _ in msgs) + reader.buffered == len(garbage)


class TestEncode:
    def test_encode(self):
        payload = b"\1\2\3\4"
        assert p.encode(0x0102, Command.REGION_WRITE, payload, p.FLAG_NO_REPLY) == (
            raw_header(0x0102, 10, 20, 0x10) + payload
        )

    def test_encode_defaults(self):
        assert p.encode(7, Command.DEVICE_RESET) == raw_header(7, 13, 16, 0, 0)

    def test_encode_reply(self):
        payload = p.DeviceInfo(16, 3, 9, 5).pack()
        msg = p.encode_reply(42, Command.DEVICE_GET_INFO, payload)
        assert msg == raw_header(42, 4, 32, 0x1) + payload
        assert p.Header.unpack(msg[:16]).is_reply

    @pytest.mark.parametrize("errno_value", [0, 1, 22, 0xFFFFFFFF])
    def test_encode_error_is_header_only(self, errno_value):
        # "If an error occurs, the reply message must only include the reply header."
        msg = p.encode_error(3, Command.DMA_MAP, errno_value)
        assert msg == raw_header(3, 2, 16, 0x21, errno_value)
        h = p.Header.unpack(msg)
        assert (h.is_reply, h.is_error, h.error, h.msg_size) == (True, True, errno_value, 16)

    def test_header_field_out_of_range(self):
        for fields in [(1 << 16, 1, 16), (0, 1 << 16, 16), (0, 1, 1 << 32), (-1, 1, 16)]:
            with pytest.raises(CodecError):
                p.Header(*fields).pack()

        class Huge(bytes):  # claims 4 GiB without holding it
            def __len__(self):
                return 1 << 32

        with pytest.raises(CodecError):
            p.encode(0, 1, Huge())  # msg_size cannot hold 16 + 2**32

    @pytest.mark.parametrize("size", [0, 15, 17, 32])
    def test_header_unpack_wrong_size(self, size):
        with pytest.raises(CodecError):
            p.Header.unpack(b"\0" * size)
