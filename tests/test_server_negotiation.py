"""VERSION negotiation against the reference server."""

from __future__ import annotations

import errno
import json

import pytest
from test_server_support import client, ref_server  # noqa: F401  (fixtures)

from pytest_vfiouser.protocol import Command, DeviceInfo, Version
from reference_server import registers as R


@pytest.fixture
def raw(ref_server):  # noqa: F811
    c = ref_server.connect(negotiate=False)
    yield c
    c.close()


def version_payload(major=0, minor=0, text: bytes | None = None) -> bytes:
    head = major.to_bytes(2, "little") + minor.to_bytes(2, "little")
    return head if text is None else head + text


def caps_json(caps) -> bytes:
    return json.dumps({"capabilities": caps}).encode() + b"\0"


def test_echoes_only_proposed_capabilities_with_server_values(raw):
    r = raw.request(
        Command.VERSION,
        Version.with_capabilities(
            0, 0, max_msg_fds=3, max_data_xfer_size=4096, something_new={"x": 1}
        ),
    )
    v = r.check().body
    assert (v.major, v.minor) == (0, 0)
    assert v.json == {
        "capabilities": {
            "max_msg_fds": R.DEFAULT_MAX_MSG_FDS,
            "max_data_xfer_size": R.DEFAULT_MAX_DATA_XFER_SIZE,
        }
    }


def test_subset_and_empty_capabilities(raw):
    v = raw.request(Command.VERSION, Version.with_capabilities(0, 0, max_msg_fds=1)).check().body
    assert v.json == {"capabilities": {"max_msg_fds": R.DEFAULT_MAX_MSG_FDS}}


def test_no_json_is_accepted(raw):
    v = raw.request(Command.VERSION, version_payload()).check().body
    assert (v.major, v.minor, v.json) == (0, 0, None)
    assert raw.device_get_info().check().body.num_irqs == 5


def test_json_without_capabilities(raw):
    v = raw.request(Command.VERSION, version_payload(text=b'{"other": 1}\0')).check().body
    assert v.json == {"capabilities": {}}


def test_minor_is_at_most_proposed_and_servers(raw):
    v = raw.request(Command.VERSION, Version(0, 7, None)).check().body
    assert (v.major, v.minor) == (0, 0)


def test_other_major_is_refused_then_retry_works(raw):
    r = raw.request(Command.VERSION, Version(1, 0, None))
    assert r.error == errno.ENOTSUP and not r.payload
    assert raw.request(Command.VERSION, Version(0, 0, None)).ok


@pytest.mark.parametrize(
    "text",
    [
        b'{"capabilities": {}}',  # no NUL
        b'{"capabilities": {}\0',  # invalid JSON
        b"[1, 2]\0",  # not an object
        b'"x"\0',
        b'{"capabilities": []}\0',
        b'{"capabilities": {"max_msg_fds": "8"}}\0',
        b'{"capabilities": {"max_msg_fds": -1}}\0',
        b'{"capabilities": {"max_msg_fds": 1.5}}\0',
        b'{"capabilities": {"max_msg_fds": true}}\0',
        b'{"capabilities": {"max_data_xfer_size": 0}}\0',
        b'{"capabilities": {"max_data_xfer_size": 18446744073709551616}}\0',
        b'{"capabilities": {"migration": 4096}}\0',
        b'{"capabilities": {"migration": {"pgsize": 3000}}}\0',
        b'{"a": 1}\0{"b": 2}\0',  # NUL inside
        b"\xff\xfe\0",  # not UTF-8
        b"[" * 100000 + b"\0",  # deep nesting
    ],
)
def test_malformed_version_data(raw, text):
    r = raw.request(Command.VERSION, version_payload(text=text))
    assert r.error == errno.EINVAL and not r.payload
    # Still unnegotiated, still framed: a good VERSION now works.
    assert raw.request(Command.VERSION, Version(0, 0, None)).ok


def test_short_payload(raw):
    assert raw.request(Command.VERSION, b"\0\0\0").error == errno.EINVAL
    assert raw.request(Command.VERSION, b"").error == errno.EINVAL


def test_commands_before_version_are_refused(raw):
    r = raw.request(Command.DEVICE_GET_INFO, DeviceInfo(16))
    assert r.error == errno.EINVAL
    r = raw.request(Command.DEVICE_RESET)
    assert r.error == errno.EINVAL
    raw.negotiate()
    assert raw.device_get_info().check().body.num_regions == R.NUM_REGIONS


def test_second_version_is_refused(client):  # noqa: F811
    assert client.request(Command.VERSION, Version(0, 0, None)).error == errno.EINVAL
    assert client.device_get_info().ok


def test_negotiation_is_per_connection(ref_server):  # noqa: F811
    for _ in range(2):
        with ref_server.connect(negotiate=False) as c:
            assert c.device_get_info().error == errno.EINVAL
            c.negotiate(capabilities={})
            assert c.device_get_info().ok


def test_small_client_max_msg_fds_zero_gets_no_mmap(ref_server):  # noqa: F811
    with ref_server.connect(capabilities={"max_msg_fds": 0}) as c:
        r = c.region_info(R.RAM_REGION).check()
        assert r.fd_count == 0 and not r.body.flags & 4
        io = c.region_io_fds(R.REGISTERS_REGION).check()
        assert io.body.count == 0 and io.fd_count == 0
