"""The fuzzing strategies generate what they claim, and the framing plan is right.

* ``requests``: well-framed requests that the codec decodes as their command's
  request, fds only where they belong;
* each structure-aware mutation (``REQUEST_MUTATIONS``) does to a request what
  its name says;
* ``Transmission.writes``: the writes add up to the stream, fds go with the
  write that starts their message;
* ``plan_frames``: how a server frames a stream (padding, unframeable, oversized);
* the settings profiles: ci is repeatable, campaign is not, neither changes the
  global Hypothesis profile.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_vfiouser import fuzz as fuzzing
from pytest_vfiouser import strategies as s
from pytest_vfiouser.device import DeviceModel
from pytest_vfiouser.plugin._options import _reference_profile
from pytest_vfiouser.protocol import (
    FLAG_ERROR,
    FLAG_NO_REPLY,
    HEADER_SIZE,
    CodecError,
    Command,
    DeviceInfo,
    IrqInfo,
    IrqSetFlags,
    RegionInfo,
    Version,
    decode,
    encode,
)

PROPS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
_U64 = 1 << 64


@pytest.fixture(scope="module")
def device() -> DeviceModel:
    """The reference device as discovery would describe it (no server needed)."""
    regions = {
        0: (0x1000, 3),
        1: (0x10000, 7),
        2: (0x10000, 15),
        3: (0x1000, 1),
        4: (0x1000, 2),
        5: (0, 0),
        6: (0, 0),
        7: (256, 3),
        8: (0, 0),
        9: (0x20000, 11),
    }
    irqs = {0: (1, 7), 1: (4, 9), 2: (8, 3), 3: (1, 1), 4: (1, 1)}
    return DeviceModel(
        spec="0.9.1",
        profile=_reference_profile(),
        info=DeviceInfo(16, 3, 10, 5),
        regions={
            i: RegionInfo(32, flags, i, 0, size, i << 40) for i, (size, flags) in regions.items()
        },
        irqs={i: IrqInfo(16, flags, i, count) for i, (count, flags) in irqs.items()},
        version=Version(0, 0, {"capabilities": {"max_msg_fds": 16, "max_data_xfer_size": 1 << 20}}),
    )


def _field(msg, name):
    at, width = s.REQUEST_FIELDS[msg.command][name]
    return int.from_bytes(msg.payload[at : at + width], "little")


def test_requests_are_valid_requests(device):
    @PROPS
    @given(s.requests(device))
    def check(msg):
        raw = msg.encode()
        assert msg.msg_size is None and len(raw) == struct.unpack_from("<I", raw, 4)[0]
        assert msg.flags & ~FLAG_NO_REPLY == 0 and not msg.mutation
        decode(msg.command, False, msg.payload)  # frames as its command's request
        if msg.nfds:
            assert msg.command in (Command.DMA_MAP, Command.DEVICE_SET_IRQS)
        if msg.command == Command.DEVICE_SET_IRQS:
            flags, count = _field(msg, "flags"), _field(msg, "count")
            if flags & IrqSetFlags.DATA_BOOL and count <= s.MAX_DATA:
                assert len(msg.payload) == 20 + count
            assert msg.nfds == (
                min(count, s.MAX_FUZZ_FDS, 16) if flags & IrqSetFlags.DATA_EVENTFD else 0
            )

    check()


def test_requests_cover_every_command_of_the_revision(device):
    seen = set()

    @settings(PROPS, max_examples=400)
    @given(s.requests(device, "0.9.1"))
    def collect(msg):
        seen.add(msg.command)

    collect()
    assert seen == {int(c) for c in Command} - {1, 11, 12, 15, 16, 17, 18}  # all but VERSION


def test_requests_use_the_devices_edges(device):
    indexes, offsets = set(), set()

    @settings(PROPS, max_examples=400)
    @given(s.requests(device, commands=[Command.REGION_READ]))
    def collect(msg):
        indexes.add(_field(msg, "index"))
        offsets.add((_field(msg, "index"), _field(msg, "address")))

    collect()
    assert set(device.regions) <= indexes, "every region index of the device comes up"
    assert 10 in indexes or 11 in indexes, "indexes just past num_regions come up"
    assert any(off == device.regions[i].size for i, off in offsets if i in device.regions), (
        "an offset at the end of a region comes up"
    )


CLAIMS = {
    "msg_size_short": lambda old, new: new.msg_size is not None and new.msg_size < old.true_size,
    "msg_size_long": lambda old, new: new.msg_size is not None and new.msg_size > old.true_size,
    "argsz": lambda old, new: _field(new, "argsz") != _field(old, "argsz"),
    "flags_undefined": lambda old, new: (
        _field(new, "flags") & ~s.DEFINED_REQUEST_FLAGS.get(new.command, 0)
    ),
    "index_past_end": lambda old, new: (
        _field(new, "index")
        >= (5 if new.command in (Command.DEVICE_GET_IRQ_INFO, Command.DEVICE_SET_IRQS) else 10)
    ),
    "overflow": lambda old, new: (
        _field(new, "start") + max(_field(new, "count"), 1) >= 1 << 32
        if new.command == Command.DEVICE_SET_IRQS
        else _field(new, "address") + max(_field(new, "size"), 1) >= _U64
    ),
    "truncate": lambda old, new: len(new.payload) < len(old.payload) and new.msg_size is None,
    "trailing": lambda old, new: (
        new.payload.startswith(old.payload)
        and len(new.payload) > len(old.payload)
        and new.msg_size is None
    ),
    "type": lambda old, new: new.flags & 0xF != 0,
    "header_flags": lambda old, new: new.flags & ~0x3F != 0,
    "error_bit": lambda old, new: bool(new.flags & FLAG_ERROR),
    "error_field": lambda old, new: new.error != 0,
    "no_reply": lambda old, new: bool(new.flags & FLAG_NO_REPLY) and new.command in s.DATA_REPLIES,
    "command": lambda old, new: new.command != old.command and new.command != Command.VERSION,
    "fds_extra": lambda old, new: new.nfds > old.nfds,
    "fds_missing": lambda old, new: (
        new.nfds < old.nfds
        or (new.command == Command.DMA_MAP and new.nfds == 0 and _field(new, "offset") != 0)
    ),
    "bytes": lambda old, new: "damaged" in new.mutation,
}


def test_every_mutation_has_a_claim():
    assert set(CLAIMS) == set(s.REQUEST_MUTATIONS)


def _commands_for(op: str) -> list[int] | None:
    """The commands a mutation can apply to (None: any), so that few draws are filtered."""
    fields = {
        "argsz": ("argsz",),
        "flags_undefined": ("flags",),
        "index_past_end": ("index",),
        "overflow": ("size", "start"),
    }.get(op)
    if fields is not None:
        return [c for c, f in s.REQUEST_FIELDS.items() if any(n in f for n in fields)]
    if op == "fds_missing":
        return [Command.DMA_MAP, Command.DEVICE_SET_IRQS]
    if op == "no_reply":
        return sorted(s.DATA_REPLIES)
    return None


@pytest.mark.parametrize("op", sorted(s.REQUEST_MUTATIONS))
def test_mutation_does_what_it_says(device, op):
    applies, _ = s.REQUEST_MUTATIONS[op]
    base = s.requests(device, commands=_commands_for(op), no_reply=op != "no_reply")

    @settings(PROPS, max_examples=20)
    @given(st.data())
    def check(data):
        old = data.draw(base.filter(applies))
        new = s.mutate_request(data.draw, old, device, [op])
        assert new.mutation, "a mutated message says what was done to it"
        assert CLAIMS[op](old, new), f"{op}: {old.describe()} -> {new.describe()}"

    check()


@pytest.mark.parametrize("first", sorted(s.REQUEST_MUTATIONS))
def test_mutations_compose(device, first):
    """Any mutation after any other (each checks it applies to what the first left)."""
    applies, _ = s.REQUEST_MUTATIONS[first]
    base = s.requests(device, commands=_commands_for(first))

    @settings(PROPS, max_examples=15)
    @given(st.data())
    def check(data):
        msg = s.mutate_request(data.draw, data.draw(base.filter(applies)), device, [first])
        for _ in range(3):
            msg = s.mutate_request(data.draw, msg, device)
        msg.encode()

    check()


def test_mutated_requests_are_damaged(device):
    @PROPS
    @given(s.mutated_requests(device))
    def check(msg):
        assert msg.mutation
        msg.encode()  # always encodable, whatever was done to it

    check()


@given(
    st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=4),
    st.lists(st.integers(0, 3), max_size=4),
    st.lists(st.integers(0, 200), max_size=5),
)
@PROPS
def test_transmission_writes(chunks, nfds, cuts):
    items = tuple(s.RawBytes(c, nfds[i] if i < len(nfds) else 0) for i, c in enumerate(chunks))
    tx = s.Transmission(items, tuple(cuts))
    writes = tx.writes()
    assert b"".join(w for w, _ in writes) == tx.stream()
    assert all(w for w, _ in writes), "no empty write"
    assert sum(n for _, n in writes) == sum(i.nfds for i in items)
    starts, pos = {}, 0
    for item in items:
        starts[pos] = starts.get(pos, 0) + item.nfds
        pos += len(item.data)
    pos = 0
    for data, n in writes:
        assert n == starts.get(pos, 0), "a write carries the fds of the items starting it"
        pos += len(data)


def test_transmissions_cut_when_asked(device):
    @PROPS
    @given(s.transmissions(s.known_good_requests(device), 3, split=True))
    def check(tx):
        assert len(tx.writes()) >= 2 or len(tx.stream()) <= 1

    check()


def test_garbage_and_version_proposals():
    @PROPS
    @given(s.garbage(), s.version_proposals())
    def check(junk, version):
        assert isinstance(junk, s.RawBytes) and junk.data
        assert version.command == Command.VERSION

    check()


def test_known_good_requests_decode(device):
    @PROPS
    @given(s.known_good_requests(device))
    def check(msg):
        body = decode(msg.command, False, msg.payload)
        if msg.command == Command.REGION_WRITE:
            region, start, length = next(
                r for r in device.scratch_ranges() if r[0] == body.region and r[1] <= body.offset
            )
            assert body.offset + body.count <= start + length

    check()


# ---------------------------------------------------------------- plan_frames


def _msg(command=Command.DEVICE_GET_INFO, payload=b"\x10" + bytes(15), msg_id=1, size=None):
    raw = encode(msg_id, command, payload)
    if size is not None:
        raw = raw[:4] + struct.pack("<I", size) + raw[8:]
    return raw


def test_plan_frames_framed():
    frames, pad, ending = fuzzing.plan_frames(_msg() + _msg(msg_id=2))
    assert (len(frames), pad, ending) == (2, 0, "framed")
    assert [f.msg_id for f in frames] == [1, 2]
    assert all(f.required(frozenset({4})) for f in frames)


def test_plan_frames_pads_short_messages_and_headers():
    frames, pad, ending = fuzzing.plan_frames(_msg(size=40))  # 8 bytes promised beyond
    assert (len(frames), pad, ending) == (1, 8, "framed")
    assert frames[0].payload.endswith(bytes(8))
    frames, pad, ending = fuzzing.plan_frames(_msg() + b"\x05\x00\x04\x00")  # 4 bytes of a header
    assert ending == "unframeable" and pad == 12, "the header completed with zeros: msg_size 0"
    assert len(frames) == 1


def test_plan_frames_unframeable_and_oversized():
    assert fuzzing.plan_frames(_msg(size=15))[2] == "unframeable"
    frames, pad, ending = fuzzing.plan_frames(_msg() + _msg(size=0xFFFFFFFF))
    assert (len(frames), pad, ending) == (1, 0, "oversized")
    frames, pad, ending = fuzzing.plan_frames(_msg(size=5000), pad_limit=4096)
    assert (frames, ending) == ([], "oversized")


def test_plan_frames_shorter_msg_size_splits_the_rest_off():
    inner = encode(0x55, Command.DEVICE_RESET)  # a 16-byte payload that reads as a header
    raw = _msg(payload=inner, size=HEADER_SIZE) + _msg(msg_id=7)
    frames, pad, ending = fuzzing.plan_frames(raw)
    assert frames[0].size == HEADER_SIZE and frames[0].payload == b""
    assert [(f.msg_id, f.command) for f in frames[1:]] == [(0x55, 13), (7, 4)]
    assert (pad, ending) == (0, "framed")


def test_frame_required():
    commands = frozenset({4, 5})
    frames, _, _ = fuzzing.plan_frames(
        encode(1, 4, b"", 0)
        + encode(2, 4, b"", FLAG_NO_REPLY)
        + encode(3, 4, b"", 1)
        + encode(4, 99, b"", 0)
    )
    assert [f.required(commands) for f in frames] == [True, False, False, False]


# ---------------------------------------------------------------- settings


def test_profiles_do_not_touch_the_global_profile():
    before = settings.default
    ci = fuzzing.fuzz_settings("ci", 0.5)
    campaign = fuzzing.fuzz_settings("campaign")
    assert settings.default is before
    whole = fuzzing.fuzz_settings("ci").max_examples
    assert ci.derandomize and ci.max_examples == round(whole * 0.5) and ci.database is None
    assert not campaign.derandomize and campaign.max_examples > 10 * ci.max_examples
    with pytest.raises(ValueError):
        fuzzing.fuzz_settings("bogus")


def test_codec_error_is_the_only_decode_failure_of_mutations(device):
    """What the mutations make may not decode, but describing it never raises."""

    @PROPS
    @given(s.transmissions(s.mutated_requests(device), 3))
    def check(tx):
        assert tx.describe()
        for item in tx.items:
            try:
                decode(item.command, False, item.payload)
            except CodecError:
                pass

    check()
