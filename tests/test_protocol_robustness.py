"""unpack and decode of hostile bytes: CodecError and nothing else, and no blow-up.

A conformance suite reads whatever a broken server sends. The codec's promise
is that ``unpack`` raises only CodecError on any input, and never allocates
more than the input justifies. Three kinds of tests hold it to that:

* every payload class (and Header) fed arbitrary bytes and mutations of
  valid encodings (truncated, extended, bits flipped, counts set huge);
* ``decode(command, reply, bytes)`` the same way, over every command;
* hand-made hostile inputs: capability chains that loop or point out of
  bounds, counts of 2**32-1 and 2**64-1, JSON that is not UTF-8, not
  terminated, not an object, nested 100000 deep, or with huge numbers;
  the ones that could allocate are run under tracemalloc.

When hostile bytes do decode, the result must encode, and decode again to
itself: the codec never accepts what it cannot represent.
"""

from __future__ import annotations

import json
import struct
import time
import tracemalloc

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pytest_vfiouser import protocol as p
from pytest_vfiouser import strategies as s
from pytest_vfiouser.protocol import CodecError

PROPS = s.CODEC_SETTINGS
CLASSES = [p.Header, *sorted(s.PAYLOAD_STRATEGIES, key=lambda c: c.__name__)]
HOSTILE = {cls: s.hostile(s.encodings(cls)) for cls in CLASSES}


def unpack_or_codec_error(cls, data: bytes):
    """cls.unpack(data), or None for a CodecError; any other exception fails the test."""
    try:
        obj = cls.unpack(data)
    except CodecError as e:
        assert isinstance(e.message, str) and isinstance(e.field, str)
        assert isinstance(e.detail, str)
        return None
    assert type(obj) is cls
    # What decodes re-encodes, and decodes to the same thing again.
    assert cls.unpack(obj.pack()) == obj
    return obj


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
@PROPS
@given(data=st.data())
def test_unpack_of_hostile_bytes_raises_only_codec_error(cls, data):
    unpack_or_codec_error(cls, data.draw(HOSTILE[cls]))


# ---- decode() over every command, both directions

UNKNOWN_COMMANDS = [0, 14 + 100, 19, 0xFFFF]
DIRECTIONS = [(int(c), r) for c in p.Command for r in (False, True)]


def _decode_input(command: int, reply: bool):
    payload = s.message_payloads(command, reply).filter(lambda x: x is not None)
    cls = (p.REPLY_TYPES if reply else p.REQUEST_TYPES)[command]
    if cls is None:
        return st.binary(max_size=64)
    return s.hostile(payload.map(lambda x: x.pack()))


DECODE_INPUTS = {key: _decode_input(*key) for key in DIRECTIONS}


def decode_or_codec_error(command: int, reply: bool, data: bytes):
    try:
        decoded = p.decode(command, reply, data)
    except CodecError:
        return
    cls = p.payload_type(command, reply)
    if decoded is None:
        assert data == b""
    else:
        assert type(decoded) is cls
        assert cls.unpack(decoded.pack()) == decoded


@pytest.mark.parametrize(
    "command, reply",
    DIRECTIONS,
    ids=[f"{p.command_name(c)}-{'reply' if r else 'request'}" for c, r in DIRECTIONS],
)
@settings(PROPS, max_examples=40)  # each unpack is fuzzed above; this is dispatch
@given(data=st.data())
def test_decode_of_hostile_bytes_raises_only_codec_error(command, reply, data):
    decode_or_codec_error(command, reply, data.draw(DECODE_INPUTS[command, reply]))


@pytest.mark.parametrize("command", UNKNOWN_COMMANDS)
@pytest.mark.parametrize("reply", [False, True])
def test_decode_of_unknown_command_is_codec_error(command, reply):
    for data in (b"", b"\0" * 16):
        with pytest.raises(CodecError) as info:
            p.decode(command, reply, data)
        assert info.value.field == "command"


@pytest.mark.parametrize(
    "command, reply",
    [(c, r) for c, r in DIRECTIONS if (p.REPLY_TYPES if r else p.REQUEST_TYPES)[c] is None],
)
def test_decode_of_bytes_where_no_payload_belongs(command, reply):
    assert p.decode(command, reply, b"") is None
    with pytest.raises(CodecError):
        p.decode(command, reply, b"\0")


def test_decode_dirty_pages_reply_empty_for_start_and_stop():
    assert p.decode(p.Command.DIRTY_PAGES, True, b"") is None
    with pytest.raises(CodecError):
        p.decode(p.Command.DIRTY_PAGES, False, b"")


# ---- hand-made hostile inputs


def rejects(cls, data: bytes, field: str | None = None) -> CodecError:
    with pytest.raises(CodecError) as info:
        cls.unpack(data)
    if field is not None:
        assert info.value.field == field, info.value
    return info.value


def rejects_cheaply(
    cls, data: bytes, max_peak: int = 256 * 1024, max_seconds: float = 1.0
) -> CodecError:
    """CodecError, with tracemalloc's peak below ``max_peak`` bytes, quickly."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(CodecError) as info:
            cls.unpack(data)
        elapsed = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < max_peak, f"unpack allocated {peak} bytes for {len(data)} input bytes"
    assert elapsed < max_seconds
    return info.value


def peak_of_unpack(cls, data: bytes) -> int:
    tracemalloc.start()
    try:
        try:
            cls.unpack(data)
        except CodecError:
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak


def region_info_head(cap_offset: int, argsz: int = 0, flags: int = 0) -> bytes:
    return struct.pack("<IIIIQQ", argsz, flags | p.RegionFlags.CAPS, 0, cap_offset, 0, 0)


def cap_header(cap_id: int, next_: int, version: int = 1) -> bytes:
    return struct.pack("<HHI", cap_id, version, next_)


class TestRegionInfoChains:
    def test_self_loop(self):
        data = region_info_head(32) + cap_header(2, 32) + struct.pack("<II", 3, 1)
        assert "loop" in rejects(p.RegionInfo, data, "next").detail

    def test_two_cap_loop(self):
        data = (
            region_info_head(32)
            + cap_header(2, 48)
            + struct.pack("<II", 3, 1)
            + cap_header(0x55, 32)
            + b"\0" * 8
        )
        assert "loop" in rejects(p.RegionInfo, data, "next").detail

    @pytest.mark.parametrize("next_", [8, 31, 0x60, 0xFFFFFFFF])
    def test_next_out_of_bounds(self, next_):
        data = region_info_head(32) + cap_header(2, next_) + struct.pack("<II", 3, 1)
        rejects(p.RegionInfo, data, "next")

    @pytest.mark.parametrize("cap_offset", [4, 31, 41, 0xFFFFFFFF])
    def test_cap_offset_out_of_bounds(self, cap_offset):
        data = region_info_head(cap_offset) + cap_header(0x55, 0) + b"\0" * 2
        rejects(p.RegionInfo, data, "cap_offset")

    def test_cap_offset_zero_with_bytes_following(self):
        rejects(p.RegionInfo, region_info_head(0) + cap_header(2, 0), "cap_offset")

    def test_header_cut_short(self):
        rejects(p.RegionInfo, region_info_head(32) + cap_header(2, 0)[:7])

    @pytest.mark.parametrize("nr_areas", [1, 2, 0x10000, 0xFFFFFFFF])
    def test_sparse_nr_areas_beyond_the_reply(self, nr_areas):
        body = struct.pack("<II", nr_areas, 0)  # no areas follow
        data = region_info_head(32) + cap_header(1, 0) + body
        err = rejects_cheaply(p.RegionInfo, data, max_peak=64 * 1024)
        assert err.field.endswith("nr_areas")

    def test_sparse_nr_areas_huge_in_a_large_reply(self):
        body = struct.pack("<II", 0xFFFFFFFF, 0) + b"\xff" * (1 << 20)
        data = region_info_head(32) + cap_header(1, 0) + body
        rejects_cheaply(p.RegionInfo, data, max_peak=4 * len(data))

    def test_type_cap_cut_short(self):
        data = region_info_head(32) + cap_header(2, 0) + b"\3\0\0\0"
        rejects(p.RegionInfo, data)

    def test_backward_chain_does_not_copy_the_tail_for_each_cap(self):
        """Caps linked from the end of the reply back to the start: each cap's
        body must not run to the end of the reply (quadratic in the size)."""
        size = 32 * 1024
        buf = bytearray(region_info_head(size - 8))
        for pos in range(32, size, 8):
            buf += cap_header(0x55, pos - 8 if pos > 32 else 0)
        assert len(buf) == size
        info_peak = peak_of_unpack(p.RegionInfo, bytes(buf))
        assert info_peak < 200 * size, f"{info_peak} bytes allocated for {size} input bytes"

    def test_backward_chain_decodes_each_cap_once(self):
        size = 32 + 3 * 8
        buf = bytearray(region_info_head(48))
        buf += cap_header(0x55, 0) + cap_header(0x56, 32) + cap_header(0x57, 40)
        info = p.RegionInfo.unpack(bytes(buf))
        assert len(buf) == size
        assert [c.id for c in info.caps] == [0x57, 0x56, 0x55]
        assert info.cap_offsets == (48, 40, 32)
        assert all(c.data == b"" for c in info.caps)

    def test_forward_chain_with_a_gap(self):
        """Bytes between one capability and the next belong to the first."""
        data = (
            region_info_head(32)
            + cap_header(0x55, 48)
            + b"\xaa" * 8
            + cap_header(2, 0)
            + struct.pack("<II", 3, 1)
        )
        info = p.RegionInfo.unpack(data)
        assert info.caps == (p.UnknownCap(0x55, b"\xaa" * 8), p.RegionTypeCap(3, 1))


class TestCounts:
    def test_region_write_multi_wr_cnt_max(self):
        one = struct.pack("<QII", 0, 0, 4) + b"\1\2\3\4\0\0\0\0"
        for wr_cnt in (2**64 - 1, 2**63, 2**32, 2, 0):
            err = rejects_cheaply(p.RegionWriteMulti, struct.pack("<Q", wr_cnt) + one)
            assert err.field == "wr_cnt"

    def test_region_write_multi_partial_entry(self):
        rejects(p.RegionWriteMulti, struct.pack("<Q", 1) + b"\0" * 23, "wr_cnt")

    @pytest.mark.parametrize("count", [0, 3, 0xFFFFFFFF])
    def test_region_io_fds_count_does_not_fit(self, count):
        head = struct.pack("<IIII", 16 + 2 * 40, 0, 0, count)
        rejects_cheaply(p.RegionIoFdsReply, head + b"\0" * 80)

    def test_region_io_fds_entries_below_40(self):
        head = struct.pack("<IIII", 16 + 2 * 32, 0, 0, 2)
        rejects(p.RegionIoFdsReply, head + b"\0" * 64, "count")

    @pytest.mark.parametrize(
        "cls, head",
        [
            (p.RegionReadReply, struct.pack("<QII", 0, 0, 0xFFFFFFFF)),
            (p.RegionWrite, struct.pack("<QII", 0, 0, 0xFFFFFFFF)),
            (p.DmaReadReply, struct.pack("<QQ", 0, 2**64 - 1)),
            (p.DmaWrite, struct.pack("<QQ", 0, 2**64 - 1)),
            (p.MigDataReadReply, struct.pack("<II", 0, 0xFFFFFFFF)),
            (p.MigDataWrite, struct.pack("<II", 0, 0xFFFFFFFF)),
            (p.DmaLoggingControl, struct.pack("<QII", 4096, 0xFFFFFFFF, 0)),
        ],
        ids=lambda x: x.__name__ if isinstance(x, type) else "",
    )
    def test_count_larger_than_the_data(self, cls, head):
        rejects_cheaply(cls, head + b"\0" * 32)

    def test_dma_unmap_bitmap_size_larger_than_the_data(self):
        data = struct.pack("<IIQQ", 0, 1, 0, 4096) + struct.pack("<QQ", 4096, 2**64 - 1) + b"\1"
        rejects_cheaply(p.DmaUnmap, data)

    def test_dma_unmap_partial_bitmap_header(self):
        rejects(p.DmaUnmap, struct.pack("<IIQQ", 0, 1, 0, 4096) + b"\0" * 15, "bitmap")

    def test_dirty_pages_bitmap_size_larger_than_the_data(self):
        rng = struct.pack("<QQQQ", 0, 1 << 30, 4096, 2**64 - 1)
        rejects_cheaply(p.DirtyPages, struct.pack("<II", 0, 4) + rng + b"\1")

    def test_dirty_pages_40_byte_range_reading_is_refused(self):
        """Errata 4: the 40/48 reading of the table is not the wire format.

        (The conformance layer reports it as information; the codec refuses it.)"""
        rng = struct.pack("<QQQQQ", 0, 4096 * 64, 4096, 8, 0)
        rejects(p.DirtyPages, struct.pack("<II", 48 + 8, 4) + rng + b"\xff" * 8)

    def test_dma_logging_report_partial_word(self):
        rejects(p.DmaLoggingReport, struct.pack("<QQQ", 0, 4096, 4096) + b"\0" * 7, "bitmap")


def version_bytes(text: bytes, major: int = 0, minor: int = 1) -> bytes:
    return struct.pack("<HH", major, minor) + text


class TestVersionData:
    @pytest.mark.parametrize(
        "text",
        [
            b"\xff\xfe{}\0",
            b'{"capabilities":{"x":"\xc3"}}\0',
            b'{"a":"\xed\xa0\x80"}\0',  # a UTF-8 encoded surrogate
        ],
        ids=["bom16", "truncated-seq", "surrogate"],
    )
    def test_invalid_utf8(self, text):
        assert "UTF-8" in rejects(p.Version, version_bytes(text), "version data").detail

    @pytest.mark.parametrize("text", [b"{}", b'{"capabilities":{}}', b"{} "])
    def test_not_nul_terminated(self, text):
        assert "NUL" in rejects(p.Version, version_bytes(text), "version data").detail

    def test_nul_inside(self):
        rejects(p.Version, version_bytes(b'{"a":1}\0{}\0'), "version data")

    @pytest.mark.parametrize("text", [b"\0", b"{\0", b"{'a':1}\0", b'{"a":1,}\0', b"{}}\0"])
    def test_not_json(self, text):
        rejects(p.Version, version_bytes(text), "version data")

    @pytest.mark.parametrize("text", [b"[]", b"1", b"null", b'"{}"', b"true"])
    def test_not_an_object(self, text):
        assert "object" in rejects(p.Version, version_bytes(text + b"\0")).detail

    @pytest.mark.parametrize("text", [b"NaN", b"Infinity", b"-Infinity"])
    def test_non_json_constants(self, text):
        """json.loads reads NaN and Infinity; JSON (RFC 8259) has neither."""
        rejects(p.Version, version_bytes(b'{"x":' + text + b"}\0"), "version data")

    @pytest.mark.parametrize("text", [b"1e999", b"-1E400"])
    def test_numbers_beyond_a_double(self, text):
        """They would read as infinity, which cannot be written back as JSON."""
        rejects(p.Version, version_bytes(b'{"x":' + text + b"}\0"), "version data")

    def test_largest_double_is_kept(self):
        assert p.Version.unpack(version_bytes(b'{"x":1.7976931348623157e308}\0')).json == {
            "x": 1.7976931348623157e308
        }

    @pytest.mark.parametrize("opener, closer", [(b"[", b"]"), (b'{"a":', b"}")])
    def test_nested_100000_deep(self, opener, closer):
        rejects_cheaply(
            p.Version, version_bytes(opener * 100000 + b"\0"), max_peak=64 << 20, max_seconds=5
        )
        rejects_cheaply(
            p.Version,
            version_bytes(b'{"x":' + opener * 100000 + closer * 100000 + b"}\0"),
            max_peak=64 << 20,
            max_seconds=5,
        )

    @pytest.mark.parametrize("digits", [5000, 100000])
    def test_huge_integer_strings(self, digits):
        number = b"9" * digits
        for text in (b'{"x":' + number + b"}", b'{"capabilities":{"max_msg_fds":' + number + b"}}"):
            rejects_cheaply(p.Version, version_bytes(text + b"\0"), max_peak=16 << 20)

    def test_huge_but_parseable_integers(self):
        # Below the int-from-string limit: parsed, then refused as out of range.
        big = str(10**4000).encode()
        err = rejects(p.Version, version_bytes(b'{"capabilities":{"pgsizes":' + big + b"}}\0"))
        assert err.field == "capabilities.pgsizes"
        assert p.Version.unpack(version_bytes(b'{"vendor":' + big + b"}\0")).json == {
            "vendor": 10**4000
        }

    @pytest.mark.parametrize("text", [b"1.5", b"4096.0", b"-1", b"true", b'"8"'])
    def test_non_integer_numbers_in_capabilities(self, text):
        data = version_bytes(b'{"capabilities":{"max_msg_fds":' + text + b"}}\0")
        rejects(p.Version, data, "capabilities.max_msg_fds")

    @pytest.mark.parametrize("caps", [b"null", b"[]", b"1", b'"x"'])
    def test_capabilities_not_an_object(self, caps):
        rejects(p.Version, version_bytes(b'{"capabilities":' + caps + b"}\0"), "capabilities")

    def test_short(self):
        for n in range(4):
            rejects(p.Version, b"\0" * n, "size")

    @PROPS
    @given(st.text())
    @example("\ud800")
    @example("\0")
    def test_any_text_as_version_data(self, text):
        data = version_bytes(text.encode("utf-8", "surrogatepass") + b"\0")
        unpack_or_codec_error(p.Version, data)

    @PROPS
    @given(s.json_values(max_leaves=20))
    def test_any_json_as_version_data(self, value):
        data = version_bytes(json.dumps(value).encode() + b"\0")
        obj = unpack_or_codec_error(p.Version, data)
        if obj is not None:
            assert obj.json == value


# ---- allocation stays linear in the input, for the worst shapes of each variable part

SIZE = 64 * 1024


def _chain(step: int) -> bytes:
    """A region info whose capabilities are linked every ``step`` bytes to the end.

    With step 4 the headers overlap: each next field is also the following
    cap's id and version. The most capabilities a reply of this size can hold.
    """
    buf = bytearray(SIZE)
    buf[0:32] = region_info_head(32)
    buf[32:36] = struct.pack("<HH", 0x55, 1)
    for pos in range(32, SIZE - 8, step):
        nxt = pos + step if pos + step + 8 <= SIZE else 0
        buf[pos + 4 : pos + 8] = struct.pack("<I", nxt)
        if step >= 8 and nxt:
            buf[nxt : nxt + 4] = struct.pack("<HH", 0x55, 1)
    return bytes(buf)


def _json_array(item: bytes) -> bytes:
    n = (SIZE - 16) // (len(item) + 1)
    return version_bytes(b'{"x":[' + b",".join([item] * n) + b"]}\0")


WORST_CASES = {
    "region_info_chain_step8": (p.RegionInfo, lambda: _chain(8)),
    "region_info_chain_step4": (p.RegionInfo, lambda: _chain(4)),
    "sparse_mmap_areas": (
        p.RegionInfo,
        lambda: (
            region_info_head(32)
            + cap_header(1, 0)
            + struct.pack("<II", (SIZE - 48) // 16, 0)
            + b"\xff" * 16 * ((SIZE - 48) // 16)
        ),
    ),
    "region_write_multi": (
        p.RegionWriteMulti,
        lambda: (
            struct.pack("<Q", SIZE // 24)
            + (struct.pack("<QII", 2**40, 70000, 70000) + b"\xff" * 8) * (SIZE // 24)
        ),
    ),
    "region_io_fds_entries": (
        p.RegionIoFdsReply,
        lambda: struct.pack("<IIII", 0, 0, 0, SIZE // 40) + b"\xff" * 40 * (SIZE // 40),
    ),
    "dma_logging_ranges": (
        p.DmaLoggingControl,
        lambda: struct.pack("<QII", 0, SIZE // 16, 0) + b"\xff" * 16 * (SIZE // 16),
    ),
    "json_empty_lists": (p.Version, lambda: _json_array(b"[]")),
    "json_empty_objects": (p.Version, lambda: _json_array(b"{}")),
    "json_floats": (p.Version, lambda: _json_array(b"1.5")),
    "json_keys": (
        p.Version,
        lambda: version_bytes(b"{" + b",".join(b'"%d":0' % i for i in range(SIZE // 9)) + b"}\0"),
    ),
}


@pytest.mark.parametrize("case", list(WORST_CASES))
def test_allocation_is_linear_in_the_input(case):
    """Python objects cost tens of bytes each: allow 100 bytes per input byte,
    which any quadratic behaviour (like a backward capability chain once had)
    exceeds by far at this size."""
    cls, build = WORST_CASES[case]
    data = build()
    assert 0.9 * SIZE <= len(data) <= 1.1 * SIZE
    obj = cls.unpack(data)  # these all decode: the point is their size
    assert obj is not None
    peak = peak_of_unpack(cls, data)
    assert peak < 100 * len(data), f"{peak} bytes for {len(data)}: {peak / len(data):.0f}x"
