"""VERSION capabilities: defaults when absent, validation, unknown keys kept.

Defaults are the spec's (0.9.1 and 0.9.2 "Capabilities" tables): max_msg_fds
1, max_data_xfer_size 1048576, max_dma_maps 65535, pgsizes 4096 (4k pages
only), write_multiple false; migration and twin_socket absent.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_vfiouser import protocol as p
from pytest_vfiouser import strategies as s
from pytest_vfiouser.protocol import Capabilities, CodecError, Version

PROPS = s.CODEC_SETTINGS
U64_MAX = 2**64 - 1


def version_bytes(text: bytes) -> bytes:
    return b"\0\0\2\0" + text + b"\0"


class TestDefaults:
    @pytest.mark.parametrize(
        "caps",
        [
            Capabilities(),
            Capabilities({}),
            Version(0, 1).capabilities,
            Version(0, 1, {}).capabilities,
            Version(0, 1, {"other": 1}).capabilities,
            Version.unpack(b"\0\0\1\0").capabilities,
            Version.unpack(version_bytes(b"{}")).capabilities,
            Version.unpack(version_bytes(b'{"capabilities":{}}')).capabilities,
        ],
        ids=[
            "bare",
            "empty",
            "no-json",
            "empty-json",
            "other-keys",
            "wire-no-data",
            "wire-empty-object",
            "wire-empty-capabilities",
        ],
    )
    def test_absent_capabilities_read_as_defaults(self, caps):
        assert caps.max_msg_fds == 1
        assert caps.max_data_xfer_size == 1048576
        assert caps.max_dma_maps == 65535
        assert caps.pgsizes == 4096
        assert caps.write_multiple is False
        assert caps.migration is None and caps.migration_pgsize is None
        assert caps.twin_socket is None
        caps.validate()

    def test_constants(self):
        assert (
            p.DEFAULT_MAX_MSG_FDS,
            p.DEFAULT_MAX_DATA_XFER_SIZE,
            p.DEFAULT_MAX_DMA_MAPS,
            p.DEFAULT_PGSIZES,
        ) == (1, 1048576, 65535, 4096)

    def test_stated_values_read_back(self):
        caps = Capabilities(
            {
                "max_msg_fds": 0,
                "max_data_xfer_size": 4096,
                "max_dma_maps": 1,
                "pgsizes": 0x1000 | 0x200000,
                "write_multiple": True,
                "migration": {"pgsize": 65536},
                "twin_socket": {"supported": True, "fd_index": 0},
            }
        )
        caps.validate()
        assert (
            caps.max_msg_fds,
            caps.max_data_xfer_size,
            caps.max_dma_maps,
            caps.pgsizes,
            caps.write_multiple,
        ) == (0, 4096, 1, 0x201000, True)
        assert caps.migration == {"pgsize": 65536} and caps.migration_pgsize == 65536
        assert caps.twin_socket == {"supported": True, "fd_index": 0}

    def test_migration_without_pgsize(self):
        caps = Capabilities({"migration": {}})
        caps.validate()
        assert caps.migration == {} and caps.migration_pgsize is None


# (key path, wrong value): each must be refused by validate() and by unpack.
WRONG = [
    # numbers: not integers, bool-as-int, negative, beyond u64
    ("max_msg_fds", "8"),
    ("max_msg_fds", 8.0),
    ("max_msg_fds", None),
    ("max_msg_fds", [8]),
    ("max_msg_fds", True),
    ("max_msg_fds", False),
    ("max_msg_fds", -1),
    ("max_msg_fds", U64_MAX + 1),
    ("max_data_xfer_size", 0),
    ("max_data_xfer_size", -4096),
    ("max_data_xfer_size", True),
    ("max_data_xfer_size", "1048576"),
    ("max_data_xfer_size", 1048576.5),
    ("max_dma_maps", -1),
    ("max_dma_maps", True),
    ("max_dma_maps", {}),
    ("pgsizes", 0),
    ("pgsizes", -4096),
    ("pgsizes", True),
    ("pgsizes", 4096.0),
    ("pgsizes", U64_MAX + 1),
    # objects
    ("migration", []),
    ("migration", 4096),
    ("migration", True),
    ("migration", None),
    ("migration.pgsize", 4095),
    ("migration.pgsize", 3),
    ("migration.pgsize", 0),
    ("migration.pgsize", -4096),
    ("migration.pgsize", True),
    ("migration.pgsize", "4096"),
    ("migration.pgsize", 1 << 64),
    ("twin_socket", True),
    ("twin_socket", []),
    ("twin_socket.supported", 1),
    ("twin_socket.supported", "true"),
    ("twin_socket.fd_index", -1),
    ("twin_socket.fd_index", True),
    ("twin_socket.fd_index", 0.0),
    # booleans
    ("write_multiple", 1),
    ("write_multiple", "true"),
    ("write_multiple", None),
]


def _caps_with(path: str, value) -> dict:
    if "." in path:
        outer, inner = path.split(".")
        return {outer: {inner: value}}
    return {path: value}


@pytest.mark.parametrize("path, value", WRONG, ids=[f"{k}={v!r}" for k, v in WRONG])
def test_validate_refuses(path, value):
    with pytest.raises(CodecError) as info:
        Capabilities(_caps_with(path, value)).validate()
    assert info.value.field == "capabilities." + path
    assert info.value.message == "VERSION"


@pytest.mark.parametrize("path, value", WRONG, ids=[f"{k}={v!r}" for k, v in WRONG])
def test_unpack_refuses(path, value):
    text = json.dumps({"capabilities": _caps_with(path, value)}).encode()
    with pytest.raises(CodecError) as info:
        Version.unpack(version_bytes(text))
    assert info.value.field == "capabilities." + path


# Edge values that are right.
RIGHT = [
    ("max_msg_fds", 0),
    ("max_msg_fds", U64_MAX),
    ("max_data_xfer_size", 1),
    ("max_data_xfer_size", U64_MAX),
    ("max_dma_maps", 0),
    ("pgsizes", 1),
    ("pgsizes", 0x1000 | 0x200000 | 0x40000000),  # or'ed together: not one power of two
    ("migration.pgsize", 1),
    ("migration.pgsize", 1 << 63),
    ("twin_socket.supported", False),
    ("twin_socket.fd_index", 0),
    ("write_multiple", False),
]


@pytest.mark.parametrize("path, value", RIGHT, ids=[f"{k}={v!r}" for k, v in RIGHT])
def test_validate_accepts(path, value):
    Capabilities(_caps_with(path, value)).validate()


@settings(PROPS, max_examples=100)
@given(s.capabilities(), st.sampled_from(WRONG))
def test_one_wrong_capability_spoils_the_rest(caps, wrong):
    """Valid capabilities (and unknown keys) with one wrong value: refused.

    (That valid ones pass is checked by every Version roundtrip: unpack validates.)
    """
    path, value = wrong
    outer = path.split(".")[0]
    bad = dict(caps)
    if "." in path and isinstance(caps.get(outer), dict):
        bad[outer] = {**caps[outer], path.split(".")[1]: value}
    else:
        bad.update(_caps_with(path, value))
    with pytest.raises(CodecError):
        Capabilities(bad).validate()


class TestUnknownKeys:
    def test_kept_through_pack_and_unpack(self):
        obj = {
            "capabilities": {
                "max_msg_fds": 16,
                "vendor_thing": {"nested": [1, "two", None, True, 2.5]},
                "migration": {"pgsize": 4096, "future_mig": 7},
                "twin_socket": {"supported": True, "fd_index": 1, "extra": "x"},
                "write_multiple": True,
            },
            "not_capabilities": {"a": 1},
            "": "",
        }
        v = Version(0, 2, obj)
        back = Version.unpack(v.pack())
        assert back == v
        assert back.json["capabilities"]["vendor_thing"] == obj["capabilities"]["vendor_thing"]
        assert back.capabilities.migration == {"pgsize": 4096, "future_mig": 7}
        assert back.json["not_capabilities"] == {"a": 1}

    def test_unknown_key_of_any_value_is_not_validated(self):
        for value in (None, -1, "x", [], {}, True, 1.5, 10**30):
            Capabilities({"max_msg_fds_v2": value}).validate()

    def test_with_capabilities(self):
        v = Version.with_capabilities(0, 1, max_msg_fds=8, vendor={"x": 1})
        assert v.json == {"capabilities": {"max_msg_fds": 8, "vendor": {"x": 1}}}
        assert Version.unpack(v.pack()) == v


def test_pack_refuses_what_json_cannot_write():
    for bad in ({"x": float("nan")}, {"x": float("inf")}, {"x": object()}, {"x": {1, 2}}):
        with pytest.raises(CodecError):
            Version(0, 1, bad).pack()


def test_pack_refuses_major_minor_out_of_range():
    for major, minor in [(1 << 16, 0), (0, 1 << 16), (-1, 0)]:
        with pytest.raises(CodecError):
            Version(major, minor).pack()
