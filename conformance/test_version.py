"""VFIO_USER_VERSION: the first message, version numbers, capabilities (the JSON
version data), and the max_msg_fds limits both ways."""

from __future__ import annotations

import errno
import json
import os
import struct

import pytest

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.client import SCM_MAX_FD, ConnectionClosed
from pytest_vfiouser.protocol import (
    Capabilities,
    CodecError,
    Command,
    DeviceInfo,
    DmaMap,
    DmaMapFlags,
    IrqInfoFlags,
    IrqSetFlags,
    RegionInfo,
    RegionIoFdsRequest,
    RegionWrite,
    SetIrqs,
    Version,
    command_name,
)

from ._support import (
    answer,
    answer_or_silence,
    first_scratch,
    make_eventfd,
    refused,
    send_refused,
    server_max_msg_fds,
    wait_server_fds,
)

VERSION = Command.VERSION
_MAJOR_MINOR = struct.Struct("<HH")
_DMA_ADDRESS, _DMA_SIZE = 0x4000_0000, 0x10000


def _data(obj) -> bytes:
    """Version data as a well-behaved client writes it: JSON, then NUL."""
    return json.dumps(obj, separators=(",", ":")).encode() + b"\0"


def _caps(**caps) -> bytes:
    return _data({"capabilities": caps})


def _all_capabilities(spec: str) -> dict:
    """Every capability the revision defines, with sensible values."""
    if spec == "0.9.1":
        return {"max_msg_fds": 8, "max_data_xfer_size": 1048576, "migration": {"pgsize": 4096}}
    return {
        "max_msg_fds": 8,
        "max_data_xfer_size": 1048576,
        "max_dma_maps": 1024,
        "pgsizes": 4096,
        "write_multiple": True,
        "twin_socket": {"supported": True},
    }


PROPOSALS = ["none", "empty-object", "no-capabilities", "max_msg_fds", "max_data_xfer_size", "all"]


def _proposal(name: str, spec: str) -> dict | None:
    """The JSON object proposed (None: no version data at all)."""
    return {
        "none": None,
        "empty-object": {},
        "no-capabilities": {"capabilities": {}},
        "max_msg_fds": {"capabilities": {"max_msg_fds": 4}},
        "max_data_xfer_size": {"capabilities": {"max_data_xfer_size": 65536}},
        "all": {"capabilities": _all_capabilities(spec)},
    }[name]


def _version(client, data: bytes = b"", major: int = 0, minor: int = 0):
    """Send VERSION with raw version ``data``; the reply (error or not)."""
    return client.request(VERSION, _MAJOR_MINOR.pack(major, minor) + data)


def _negotiated(client, obj: dict | None, what: str):
    """Negotiate proposing ``obj``; the success reply, its fds closed."""
    reply = client.request(VERSION, Version(0, 0, obj))
    reply.close_fds()
    assert reply.ok, f"the server refused {what}: error reply, errno {reply.error}"
    assert len(reply.payload) >= _MAJOR_MINOR.size, (
        f"the VERSION reply has a {len(reply.payload)}-byte payload: major and minor need 4"
    )
    return reply


def _reply_object(reply) -> dict:
    """The reply's JSON object ({} when it has no version data); fails on bad JSON."""
    data = reply.payload[_MAJOR_MINOR.size :]
    if not data:
        return {}
    try:
        obj = json.loads(data.rstrip(b"\0").decode("utf-8"))
    except ValueError as e:
        pytest.fail(f"the VERSION reply's version data is not UTF-8 JSON: {e}")
    assert isinstance(obj, dict), f"the VERSION reply's version data is {obj!r}, not an object"
    return obj


def _reply_caps(reply) -> dict:
    caps = _reply_object(reply).get("capabilities", {})
    assert isinstance(caps, dict), f"the VERSION reply's capabilities is {caps!r}, not an object"
    return caps


# -- VERSION first


def _first(name: str, device) -> tuple[int, bytes]:
    if name == "device_get_info":
        return Command.DEVICE_GET_INFO, DeviceInfo(DeviceInfo.SIZE).pack()
    if name == "region_info":
        return Command.DEVICE_GET_REGION_INFO, RegionInfo(32, index=0).pack()
    if name == "dma_map":
        return Command.DMA_MAP, DmaMap(
            DmaMap.SIZE, DmaMapFlags.READ | DmaMapFlags.WRITE, 0, _DMA_ADDRESS, _DMA_SIZE
        ).pack()
    raise ValueError(name)


@case("version/first-command-refused", SHOULD)
@pytest.mark.parametrize("name", ["device_get_info", "region_info", "dma_map"])
def test_first_command_refused(vfu_connect, vfu_device, vfu_observe, name):
    """A command other than VERSION as the first message is refused: an error
    reply, or the connection is closed.

    Spec (VFIO_USER_VERSION): "This is the initial message sent by the client
    after the socket connection is established" ... "Upon establishing a
    connection, the client must send a VFIO_USER_VERSION message proposing a
    protocol version and a set of capabilities." (What the server does when a
    client does not is not said: refusing is what validating input means.)
    """
    client = vfu_connect()
    command, payload = _first(name, vfu_device)
    what = f"{command_name(command)} sent before VERSION"
    msg_id = client.send(command, payload)
    reply = answer_or_silence(client, msg_id, command, vfu_connect, what)
    assert reply is not False, f"the server did not answer {what}: a command must be replied to"
    if reply is None:
        vfu_observe(f"the server closed the connection on {what}")
    else:
        assert not reply.ok, f"the server executed {what} (success reply)"


@case("version/first-command-not-executed", SHOULD)
@pytest.mark.parametrize("name", ["region_write", "dma_map"])
def test_first_command_not_executed(vfu_connect, vfu_device, vfu_observe, name):
    """A command sent before VERSION has no effect: a REGION_WRITE does not change
    the region, a DMA_MAP does not create a mapping.

    Spec (VFIO_USER_VERSION): "Upon establishing a connection, the client must
    send a VFIO_USER_VERSION message proposing a protocol version and a set of
    capabilities."
    """
    if name == "region_write":
        region, offset, length = first_scratch(vfu_device, most=64)
        before, early = os.urandom(length), os.urandom(length)
        setup = vfu_connect()
        setup.negotiate()
        setup.region_write(region, offset, before).check()
        setup.close()
        client = vfu_connect()
        what = f"REGION_WRITE of region {region} [{offset:#x}, +{length}) sent before VERSION"
        msg_id = client.send(Command.REGION_WRITE, RegionWrite(offset, region, length, early))
        answer_or_silence(client, msg_id, Command.REGION_WRITE, vfu_connect, what)
        client.close()
        check = vfu_connect()
        check.negotiate()
        data = check.region_read(region, offset, length).check().body.data
        assert data != early, f"{what} was executed: the region holds its data"
        if data != before:
            vfu_observe(
                "the scratch range did not keep what an earlier connection wrote: the "
                "device state is not retained across connections"
            )
        return
    client = vfu_connect()
    command, payload = _first(name, vfu_device)
    what = f"DMA_MAP of [{_DMA_ADDRESS:#x}, +{_DMA_SIZE:#x}) sent before VERSION"
    msg_id = client.send(command, payload)
    reply = answer_or_silence(client, msg_id, command, vfu_connect, what)
    if reply is None:
        vfu_observe(
            f"the server closed the connection on {what}: the mapping, if any, went with it"
        )
        return
    assert reply is False or not reply.ok, f"the server executed {what} (success reply)"
    # The probe that answer_or_silence sent was VERSION: the connection is negotiated now,
    # unless the server closed it after its answers.
    try:
        again = client.request(command, payload)
    except ConnectionClosed:
        vfu_observe(
            f"the server refused {what}, then closed the connection: the mapping, if any, "
            "went with it"
        )
        return
    assert again.error != errno.EEXIST, (
        f"after negotiation, the same DMA_MAP fails with EEXIST: {what} created the mapping"
    )
    if not again.ok:
        pytest.skip(
            f"DMA_MAP after negotiation failed too (errno {again.error}): cannot tell "
            "whether the early one was executed"
        )


# -- version numbers


@case("version/reply-major", MUST)
@pytest.mark.parametrize("minor", [0, 1, 0xFFFF])
def test_reply_major(vfu_connect, minor):
    """The reply's major is the proposed major (0).

    Spec (VFIO_USER_VERSION): "The major version in the reply must be the same
    as proposed."
    """
    reply = _negotiated(vfu_connect(), {"capabilities": {"max_msg_fds": 1}}, f"VERSION 0.{minor}")
    major, _ = _MAJOR_MINOR.unpack_from(reply.payload)
    assert major == 0, f"VERSION 0.{minor} was answered with major {major}, not the proposed 0"


@case("version/reply-minor", MUST)
@pytest.mark.parametrize("minor", [0, 1, 0xFFFF])
def test_reply_minor(vfu_connect, minor):
    """The reply's minor is at most the proposed minor; any proposed minor gets a
    reply (every server supports minor 0).

    Spec (VFIO_USER_VERSION): "The minor version in the reply must be equal to
    or less than the minor version proposed." ... "Both the client and server
    must support all minor versions less than the maximum minor version it
    supports."
    """
    reply = _negotiated(vfu_connect(), {"capabilities": {"max_msg_fds": 1}}, f"VERSION 0.{minor}")
    _, got = _MAJOR_MINOR.unpack_from(reply.payload)
    assert got <= minor, f"VERSION 0.{minor} was answered with minor {got}, above the proposed"


@case("version/unsupported-major", MUST)
@pytest.mark.parametrize("major", [1, 0xFFFF])
def test_unsupported_major(vfu_connect, vfu_observe, major):
    """A major the server does not support gets an error reply or a close, never a
    reply that names another major (errata 5).

    Spec (VFIO_USER_VERSION): "The major version in the reply must be the same
    as proposed. If the client does not support the proposed major, it closes
    the connection." (Errata 5: an error reply or a close both conform.)
    """
    client = vfu_connect()
    what = f"VERSION {major}.0"
    msg_id = client.send(VERSION, Version(major, 0, {"capabilities": {"max_msg_fds": 1}}))
    reply = answer_or_silence(client, msg_id, VERSION, vfu_connect, what)
    assert reply is not False, f"the server did not answer {what}"
    if reply is not None and reply.ok:
        got, _ = _MAJOR_MINOR.unpack_from(reply.payload.ljust(4, b"\0"))
        assert got == major, (
            f"{what} was answered with major {got}: the major in the reply "
            "must be the same as proposed (refuse it instead)"
        )
        vfu_observe(f"the server accepted major {major}")


# -- capabilities


@case("version/reply-caps-subset", MUST)
@pytest.mark.parametrize("proposal", PROPOSALS)
def test_reply_caps_subset(vfu_connect, vfu_spec, proposal):
    """The reply's capabilities are a subset of the proposed ones (none when none
    were proposed).

    Spec (VFIO_USER_VERSION): "The capability list must be a subset of those
    proposed."
    """
    obj = _proposal(proposal, vfu_spec)
    reply = _negotiated(vfu_connect(), obj, f"VERSION proposing {proposal}")
    proposed = set((obj or {}).get("capabilities") or {})
    extra = sorted(set(_reply_caps(reply)) - proposed)
    assert not extra, (
        f"the VERSION reply states capabilities {extra}, which were not "
        f"proposed (proposed: {sorted(proposed) or 'none'})"
    )


@case("version/reply-data-format", MUST)
@pytest.mark.parametrize("proposal", ["none", "all"])
def test_reply_data_format(vfu_connect, vfu_spec, proposal):
    """The reply's version data, if any, is NUL-terminated UTF-8 JSON: an object,
    whose capabilities (if present) is an object.

    Spec (VFIO_USER_VERSION): "version data | 4 | variable (including
    terminating NUL). Optional." ... "The version data is an optional UTF-8
    encoded JSON byte array" ... "capabilities | object"
    """
    reply = _negotiated(
        vfu_connect(), _proposal(proposal, vfu_spec), f"VERSION proposing {proposal}"
    )
    data = reply.payload[_MAJOR_MINOR.size :]
    if not data:
        return
    assert data.endswith(b"\0"), "the VERSION reply's version data is not NUL-terminated"
    assert b"\0" not in data[:-1], "the VERSION reply's version data has a NUL before its end"
    try:
        text = data[:-1].decode("utf-8")
    except UnicodeDecodeError as e:
        pytest.fail(f"the VERSION reply's version data is not UTF-8: {e}")
    try:
        obj = json.loads(text, parse_constant=_no_constant)
    except ValueError as e:
        pytest.fail(f"the VERSION reply's version data is not JSON: {e}: {text!r}")
    assert isinstance(obj, dict), f"the VERSION reply's version data {text!r} is not an object"
    caps = obj.get("capabilities", {})
    assert isinstance(caps, dict), f"the VERSION reply's capabilities {caps!r} is not an object"


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


@case("version/reply-caps-types", MUST)
def test_reply_caps_types(vfu_connect, vfu_spec):
    """Each capability in the reply has the spec's type: max_msg_fds a non-negative
    integer, max_data_xfer_size a positive integer, migration an object whose
    pgsize is a power of two (0.9.2: max_dma_maps, pgsizes numbers,
    write_multiple a boolean, twin_socket an object).

    Spec (VFIO_USER_VERSION): "max_msg_fds | number | Maximum number of file
    descriptors" ... "max_data_xfer_size | number | Maximum count for data
    transfer messages" ... "migration | object | Migration capability
    parameters" ... "pgsize | number | Page size of dirty pages bitmap"; at 0.9.2:
    "max_dma_maps | number | Maximum number DMA map windows" ... "pgsizes | number | Page
    sizes supported in DMA map operations" ... "twin_socket | object | Parameters for
    twin-socket mode" ... "write_multiple | boolean | VFIO_USER_REGION_WRITE_MULTI
    messages are supported if the value is true."
    """
    reply = _negotiated(
        vfu_connect(),
        {"capabilities": _all_capabilities(vfu_spec)},
        "VERSION proposing every capability",
    )
    try:
        Capabilities(_reply_caps(reply)).validate()
    except CodecError as e:
        pytest.fail(f"the VERSION reply's {e.field}: {e.detail}")


@case("version/migration-pgsize", MUST, revisions=("0.9.1",))
@pytest.mark.parametrize("pgsize", [4096, 65536])
def test_migration_pgsize(vfu_connect, pgsize):
    """The reply's migration pgsize is a power of two no larger than the proposed
    one.

    Spec (VFIO_USER_VERSION): "pgsize | number | Page size of dirty pages
    bitmap. The smallest between the client and the server is used."
    """
    caps = {"max_msg_fds": 1, "migration": {"pgsize": pgsize}}
    reply = _negotiated(
        vfu_connect(), {"capabilities": caps}, f"VERSION proposing migration pgsize {pgsize}"
    )
    migration = _reply_caps(reply).get("migration")
    if migration is None:
        pytest.skip("the server does not offer the migration capability")
    assert isinstance(migration, dict), f"the reply's migration {migration!r} is not an object"
    got = migration.get("pgsize")
    assert isinstance(got, int) and not isinstance(got, bool) and got > 0 and not got & (got - 1), (
        f"the reply's migration pgsize {got!r} is not a power of two"
    )
    assert got <= pgsize, (
        f"the reply's migration pgsize {got} is above the proposed {pgsize}: "
        "the smallest between the client and the server is used"
    )


@case("version/no-data-accepted", MUST)
@pytest.mark.parametrize("proposal", ["none", "empty-object", "no-capabilities"])
def test_no_data_accepted(vfu_connect, vfu_spec, proposal):
    """VERSION without version data, with an empty object, or with no capabilities
    is accepted.

    Spec (VFIO_USER_VERSION): "version data | 4 | variable (including
    terminating NUL). Optional." ... "capabilities | object | Contains common
    capabilities that the sender supports. Optional."
    """
    _negotiated(vfu_connect(), _proposal(proposal, vfu_spec), f"VERSION proposing {proposal}")


UNKNOWN = {
    "unknown-capability": {
        "capabilities": {"max_msg_fds": 1, "x-conformance-unknown": {"a": [1, 2.5, None]}}
    },
    "unknown-top-level-key": {"capabilities": {"max_msg_fds": 1}, "x-conformance-unknown": 7},
    "unknown-only": {"capabilities": {"x-conformance-number": -1, "x-conformance-text": "x"}},
}


@case("version/unknown-capability-ignored", SHOULD)
@pytest.mark.parametrize("proposal", list(UNKNOWN))
def test_unknown_capability_ignored(vfu_connect, proposal):
    """Capabilities (and keys) the server does not know are ignored: VERSION
    succeeds, and the reply does not state them.

    Spec (VFIO_USER_VERSION): "The server compares these with the versions and
    capabilities it supports and sends a VFIO_USER_VERSION reply" ... "The
    capability list must be a subset of those proposed."
    """
    obj = UNKNOWN[proposal]
    reply = _negotiated(vfu_connect(), obj, f"VERSION proposing {proposal}")
    echoed = sorted(k for k in _reply_caps(reply) if k.startswith("x-conformance"))
    assert not echoed, f"the VERSION reply states the unknown capabilities {echoed}"


_DEEP = 20000
MALFORMED = {
    "no-nul": b'{"capabilities":{}}',
    "nul-inside": b'{"capabilities":{}}\0{}\0',
    "invalid-json": b'{"capabilities":\0',
    "not-utf8": b'{"capabilities":{},"\xff\xfe":1}\0',
    "array": b"[1,2]\0",
    "number": b"42\0",
    "capabilities-array": b'{"capabilities":[]}\0',
    "max_msg_fds-string": _caps(max_msg_fds="4"),
    "max_msg_fds-bool": _caps(max_msg_fds=True),
    "max_msg_fds-fraction": _caps(max_msg_fds=1.5),
    "max_msg_fds-negative": _caps(max_msg_fds=-1),
    "max_data_xfer_size-negative": _caps(max_data_xfer_size=-4096),
    "max_data_xfer_size-object": _caps(max_data_xfer_size={}),
    "migration-not-object": _caps(migration=4096),
    "pgsize-string": _caps(migration={"pgsize": "4096"}),
}
# Odd rather than wrong: a server may accept these. Robustness only. (A huge maximum is a
# JSON number, and the spec bounds neither: a server may take the smaller of its own and it.)
ODD = {
    "nul-only": b"\0",
    "max_msg_fds-huge": _caps(max_msg_fds=2**64),
    "max_data_xfer_size-huge": _caps(max_data_xfer_size=10**30),
    "max_data_xfer_size-zero": _caps(max_data_xfer_size=0),
    "pgsize-zero": _caps(migration={"pgsize": 0}),
    "deep-nesting": (
        b'{"capabilities":{"x-conformance-deep":' + b"[" * _DEEP + b"]" * _DEEP + b"}}\0"
    ),
}
_MIGRATION = ("migration-not-object", "pgsize-string", "pgsize-zero")  # 0.9.1 capabilities


def _params(names):
    return [
        pytest.param(n, marks=pytest.mark.vfu_revision("0.9.1")) if n in _MIGRATION else n
        for n in names
    ]


@case("version/malformed-data-robust", MUST)
@pytest.mark.parametrize("variant", _params([*MALFORMED, *ODD]))
def test_malformed_data_robust(vfu_connect, vfu_observe, variant):
    """Malformed or odd version data does not crash or wedge the server: an error
    reply (the connection still framed), a close, or a well-formed acceptance.

    Spec (VFIO_USER_VERSION): "The version data is an optional UTF-8 encoded
    JSON byte array". Security Considerations: "Standard tools and mechanisms
    should be used on both sides to validate input and prevent against denial
    of service scenarios, buffer overflow, etc." (robustness)
    """
    data = MALFORMED.get(variant, ODD.get(variant))
    client = vfu_connect()
    what = f"VERSION with {variant} version data"
    msg_id = client.send(VERSION, _MAJOR_MINOR.pack(0, 0) + data)
    reply = answer_or_silence(client, msg_id, VERSION, vfu_connect, what)
    assert reply is not False, f"the server did not answer {what}"
    if reply is None:
        vfu_observe(f"the server closed the connection on {what}")
    elif reply.ok:
        assert _MAJOR_MINOR.unpack_from(reply.payload.ljust(4, b"\0"))[0] == 0, (
            f"the server accepted {what} with a reply whose major is not 0"
        )
        _reply_caps(reply)


@case("version/malformed-data-refused", SHOULD)
@pytest.mark.parametrize("variant", _params(MALFORMED))
def test_malformed_data_refused(vfu_connect, vfu_observe, variant):
    """Version data that is not NUL-terminated UTF-8 JSON of the spec's format
    (an object; capabilities an object; numbers where numbers go, in range) is
    refused: an error reply, or a close.

    Spec (VFIO_USER_VERSION): "The version data is an optional UTF-8 encoded
    JSON byte array with the following format" ... "version data | 4 |
    variable (including terminating NUL)". (The spec does not say what to do
    with data that is not; refusing it is what validating input means.)
    """
    client = vfu_connect()
    what = f"VERSION with {variant} version data"
    msg_id = client.send(VERSION, _MAJOR_MINOR.pack(0, 0) + MALFORMED[variant])
    reply = answer_or_silence(client, msg_id, VERSION, vfu_connect, what)
    assert reply is not False, f"the server did not answer {what}"
    if reply is None:
        vfu_observe(f"the server closed the connection on {what}")
    else:
        assert not reply.ok, f"the server accepted {what}"


@case("version/second-version-refused", SHOULD)
def test_second_version_refused(vfu_client, vfu_connect, vfu_observe):
    """A second VERSION on a negotiated connection is refused (error reply or
    close); the first negotiation stays in force.

    Spec (VFIO_USER_VERSION): "This is the initial message sent by the client
    after the socket connection is established" (a second one is not
    provided for).
    """
    msg_id = vfu_client.send(VERSION, Version(0, 0, {"capabilities": {"max_msg_fds": 1}}))
    refused(vfu_client, msg_id, VERSION, vfu_connect, "a second VERSION", vfu_observe)


# -- max_msg_fds


FD_PROPOSALS = {
    "max_msg_fds-0": ({"capabilities": {"max_msg_fds": 0}}, 0),
    "max_msg_fds-1": ({"capabilities": {"max_msg_fds": 1}}, 1),
    "not-proposed": ({"capabilities": {"max_data_xfer_size": 1048576}}, 1),
    "no-data": (None, 1),
}


@case("version/client-max-msg-fds", MUST)
@pytest.mark.parametrize("proposal", list(FD_PROPOSALS))
def test_client_max_msg_fds(vfu_connect, vfu_device, proposal):
    """No message from the server carries more fds than the client's max_msg_fds
    (1 when the client does not state it): every GET_REGION_INFO and
    GET_REGION_IO_FDS reply is counted.

    Spec (VFIO_USER_VERSION): "max_msg_fds | number | Maximum number of file
    descriptors that can be received by the sender in one message. Optional.
    If not specified then the receiver must assume a value of 1."
    """
    if vfu_device.has("mmap") is False and vfu_device.has("io_fds") is False:
        pytest.skip("device has no mmap and no io_fds: it sends no fds")
    obj, limit = FD_PROPOSALS[proposal]
    client = vfu_connect()
    reply = client.request(VERSION, Version(0, 0, obj))
    counts = [("VERSION", reply.fd_count + reply.closed_fds)]
    reply.close_fds()
    assert reply.ok, f"the server refused VERSION proposing {proposal}: errno {reply.error}"
    for index in range(vfu_device.num_regions):
        for command, payload in (
            (Command.DEVICE_GET_REGION_INFO, RegionInfo(4096, index=index)),
            (Command.DEVICE_GET_REGION_IO_FDS, RegionIoFdsRequest(4096, index=index)),
        ):
            reply = client.request(command, payload)
            counts.append(
                (f"{command_name(command)} of region {index}", reply.fd_count + reply.closed_fds)
            )
            reply.close_fds()
    over = [f"{what}: {n}" for what, n in counts if n > limit]
    assert not over, (
        f"with max_msg_fds {limit} ({proposal}), replies carried more fds: {', '.join(over)}"
    )


def _excess_fds(client, device) -> tuple[bytes, int, int]:
    """A SET_IRQS (TRIGGER, EVENTFD) carrying one eventfd more than the server's
    max_msg_fds: (payload, fd count, IRQ index)."""
    n = server_max_msg_fds(client) + 1
    if n > SCM_MAX_FD:
        pytest.skip(
            f"the server's max_msg_fds {n - 1}: one more is above what one message can carry"
        )
    irqs = [i for i in device.irqs.values() if i.flags & IrqInfoFlags.EVENTFD and i.count]
    if not irqs:
        pytest.skip("device has no IRQ type with VFIO_IRQ_INFO_EVENTFD")
    # An IRQ type with room for n eventfds, so that only the fd count is wrong.
    fits = [i for i in irqs if i.count >= n]
    if not fits:
        pytest.skip(
            f"cannot judge: no IRQ type has room for {n} eventfds (max_msg_fds + 1), so the "
            "request would break the IRQ type's count as well"
        )
    irq = min(fits, key=lambda i: i.count)
    return _set_irqs_eventfds(irq.index, n), n, irq.index


def _set_irqs_eventfds(index: int, n: int) -> bytes:
    flags = IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER
    return SetIrqs(SetIrqs.FIXED_SIZE, flags, index, 0, n).pack()


def _within_limit_control(client, index: int, n: int) -> None:
    """The positive control: the same SET_IRQS with ``n`` eventfds (the server's
    max_msg_fds) is accepted, or the case cannot judge what a refusal of n + 1 means."""
    fds = [make_eventfd() for _ in range(n)]
    try:
        reply = client.request(Command.DEVICE_SET_IRQS, _set_irqs_eventfds(index, n), fds)
    finally:
        for fd in fds:
            os.close(fd)
    if not reply.ok:
        pytest.skip(
            f"cannot judge: the same SET_IRQS of IRQ type {index} with {n} eventfds (within "
            f"max_msg_fds) is refused too (errno {reply.error})"
        )


@case("version/excess-fds-refused", SHOULD)
def test_excess_fds_refused(vfu_client, vfu_device, vfu_connect, vfu_observe):
    """A message carrying more fds than the server's max_msg_fds is refused (error
    reply or close).

    Spec (VFIO_USER_VERSION): "max_msg_fds | number | Maximum number of file
    descriptors that can be received by the sender in one message." (The spec
    does not say what the server does with more; refusing is what validating
    input means.)
    """
    payload, n, index = _excess_fds(vfu_client, vfu_device)
    _within_limit_control(vfu_client, index, n - 1)
    fds = [make_eventfd() for _ in range(n)]
    try:
        send_refused(
            vfu_client,
            Command.DEVICE_SET_IRQS,
            payload,
            vfu_connect,
            f"SET_IRQS of IRQ type {index} with {n} eventfds (the server's max_msg_fds is {n - 1})",
            vfu_observe,
            fds=fds,
        )
    finally:
        for fd in fds:
            os.close(fd)


@case("version/excess-fds-closed", MUST)
def test_excess_fds_closed(vfu_client, vfu_device, vfu_target, vfu_connect):
    """The server does not keep the fds of a message it refused for carrying more
    than its max_msg_fds: its open fd count does not grow.

    Spec: silent on the fds of a refused message; robustness. Security
    Considerations: "Standard tools and mechanisms should be used on both sides
    to validate input and prevent against denial of service scenarios"
    """
    before = vfu_target.snapshot().fds
    if before is None:
        pytest.skip("needs the server's open fd count (a server the suite starts, or its pid)")
    payload, n, index = _excess_fds(vfu_client, vfu_device)
    fds = [make_eventfd() for _ in range(n)]
    what = f"SET_IRQS of IRQ type {index} with {n} eventfds (max_msg_fds {n - 1})"
    try:
        msg_id = vfu_client.send(Command.DEVICE_SET_IRQS, payload, fds)
    finally:
        for fd in fds:
            os.close(fd)
    reply = answer(vfu_client, msg_id, Command.DEVICE_SET_IRQS, vfu_connect, what)
    if reply is not None and reply.ok:
        pytest.skip(
            f"the server accepted {what}: the fds are in use (see version/excess-fds-refused)"
        )
    after = wait_server_fds(vfu_target, before, vfu_client.timeout)
    assert after is None or after <= before, (
        f"the server had {before} fds open before {what} and {after} after refusing it: it "
        "kept fds of a message it refused"
    )
