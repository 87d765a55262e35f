"""VFIO_USER_DEVICE_FEATURE (0.9.2): getting, setting and probing device features.

The rules of the message itself, on the features every migrating device has
(VFIO_DEVICE_FEATURE_MIGRATION: GET only; MIG_DEVICE_STATE: GET and SET): every case
needs ``migration_v2``. The migration features' own behaviour is test_migration_v2.py's,
DMA logging's test_dma_logging.py's.
"""

from __future__ import annotations

import struct

from conformance._support import accepted, answer, send_refused
from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import (
    Command,
    DeviceFeature,
    DeviceFeatureFlags,
    Feature,
    FeatureMigDeviceState,
)

GET, SET, PROBE = (int(f) for f in DeviceFeatureFlags)
MIGRATION, STATE = int(Feature.MIGRATION), int(Feature.MIG_DEVICE_STATE)
NOT_A_FEATURE = 3  # an index vfio-user does not define (the kernel's LOW_POWER_ENTRY)


def _request(flags: int, data: bytes = b"", argsz: int = 1 << 12) -> bytes:
    return DeviceFeature(argsz, flags, data).pack()


@case(
    "device_feature/probe-reply-is-request", MUST, requires=("migration_v2",), revisions=("0.9.2",)
)
def test_probe_reply_is_request(vfu_client):
    """A PROBE (of GET MIGRATION, of GET and SET MIG_DEVICE_STATE) is answered with its
    request payload.

    Spec (VFIO_USER_DEVICE_FEATURE): "The reply payload must be the same as the request
    payload for setting or probing a feature."
    """
    for flags in (PROBE | GET | MIGRATION, PROBE | GET | SET | STATE, PROBE | STATE):
        sent = _request(flags)
        reply = accepted(vfu_client.request(Command.DEVICE_FEATURE, sent), f"PROBE {flags:#x}")
        assert reply.payload == sent, (
            f"the reply to the PROBE {flags:#x} is {reply.payload.hex()}, not its request "
            f"{sent.hex()}"
        )


@case(
    "device_feature/probe-unsupported-method",
    MUST,
    requires=("migration_v2",),
    revisions=("0.9.2",),
)
def test_probe_unsupported_method(vfu_client, vfu_connect, vfu_observe):
    """A PROBE of SET on VFIO_DEVICE_FEATURE_MIGRATION (a feature only got) fails; the
    PROBE of GET succeeds.

    Spec (VFIO_USER_DEVICE_FEATURE): "If VFIO_DEVICE_FEATURE_GET and/or
    VFIO_DEVICE_FEATURE_SET are also set, the probe will only return success if all of
    the indicated methods are supported."
    """
    accepted(vfu_client.device_feature(PROBE | GET | MIGRATION), "PROBE of GET MIGRATION")
    send_refused(
        vfu_client,
        Command.DEVICE_FEATURE,
        _request(PROBE | SET | MIGRATION),
        vfu_connect,
        "a PROBE of SET on VFIO_DEVICE_FEATURE_MIGRATION",
        vfu_observe,
    )


@case("device_feature/get-reply", MUST, requires=("migration_v2",), revisions=("0.9.2",))
def test_get_reply(vfu_client):
    """A GET's reply carries the request's flags, then the feature's data, and argsz
    is the size of that whole reply.

    Spec (VFIO_USER_DEVICE_FEATURE): "For getting a feature's data, the data is added in
    the data section and its length is added to argsz." (Message sizes): "In a reply, the
    server sets argsz field to the size needed for a full payload size."
    """
    for flags, size in ((GET | MIGRATION, 8), (GET | STATE, 8)):
        reply = accepted(vfu_client.device_feature(flags), f"GET {flags:#x}")
        argsz, got = struct.unpack_from("<II", reply.payload)
        assert got == flags, f"the reply to GET {flags:#x} has flags {got:#x}"
        assert len(reply.payload) == 8 + size, (
            f"the reply to GET {flags:#x} carries {len(reply.payload) - 8} data bytes, not {size}"
        )
        assert argsz == len(reply.payload), (
            f"the reply to GET {flags:#x} has argsz {argsz}; the reply is {len(reply.payload)} "
            "bytes"
        )


@case("device_feature/get-small-argsz", MUST, requires=("migration_v2",), revisions=("0.9.2",))
def test_get_small_argsz(vfu_client, vfu_connect):
    """A GET whose argsz leaves no room for the data gets no more than argsz bytes: an
    error, or a reply whose argsz says the size needed.

    Spec (Message sizes): "This may be larger than the requested maximum size: in that
    case, the full payload is not included in the reply, but the argsz field in the reply
    indicates the needed size".
    """
    msg_id = vfu_client.send(Command.DEVICE_FEATURE, _request(GET | MIGRATION, argsz=8))
    reply = answer(vfu_client, msg_id, Command.DEVICE_FEATURE, vfu_connect, "a GET with argsz 8")
    if reply is None or not reply.ok:
        return  # refused (libvfio-user) or closed: nothing was sent beyond argsz
    assert len(reply.payload) == 8, (
        f"the reply to a GET with argsz 8 carries {len(reply.payload)} bytes; the full "
        "payload is not included when argsz is too small"
    )
    (argsz,) = struct.unpack_from("<I", reply.payload)
    assert argsz >= 16, f"the reply's argsz {argsz} is not the size needed (16)"


@case("device_feature/get-set-exclusive", SHOULD, requires=("migration_v2",), revisions=("0.9.2",))
def test_get_set_exclusive(vfu_client, vfu_connect, vfu_observe):
    """GET and SET together without PROBE are refused; GET alone succeeds.

    Spec (VFIO_USER_DEVICE_FEATURE): "VFIO_DEVICE_FEATURE_GET and VFIO_DEVICE_FEATURE_SET
    are mutually exclusive, except for use with VFIO_DEVICE_FEATURE_PROBE."
    """
    accepted(vfu_client.device_feature(GET | STATE), "GET MIG_DEVICE_STATE")
    data = FeatureMigDeviceState(2).pack()  # RUNNING: no change if it were taken
    send_refused(
        vfu_client,
        Command.DEVICE_FEATURE,
        _request(GET | SET | STATE, data),
        vfu_connect,
        "GET and SET of MIG_DEVICE_STATE without PROBE",
        vfu_observe,
    )


@case("device_feature/undefined-feature", SHOULD, requires=("migration_v2",), revisions=("0.9.2",))
def test_undefined_feature(vfu_client, vfu_connect, vfu_observe):
    """A PROBE of a feature index vfio-user does not define fails; that of MIGRATION
    succeeds.

    Spec (Device Features): "The only device features supported by vfio-user are those
    related to migration, although this may change in the future."
    """
    accepted(vfu_client.device_feature(PROBE | GET | MIGRATION), "PROBE of GET MIGRATION")
    send_refused(
        vfu_client,
        Command.DEVICE_FEATURE,
        _request(PROBE | GET | NOT_A_FEATURE),
        vfu_connect,
        f"a PROBE of feature index {NOT_A_FEATURE}",
        vfu_observe,
    )


@case("device_feature/no-operation", SHOULD, requires=("migration_v2",), revisions=("0.9.2",))
def test_no_operation(vfu_client, vfu_connect, vfu_observe):
    """A request with none of GET, SET and PROBE is refused; with GET it succeeds.

    Spec (VFIO_USER_DEVICE_FEATURE): "flags defines the action to be performed by the
    server and upon which feature".
    """
    accepted(vfu_client.device_feature(GET | MIGRATION), "GET MIGRATION")
    send_refused(
        vfu_client,
        Command.DEVICE_FEATURE,
        _request(MIGRATION),
        vfu_connect,
        "DEVICE_FEATURE with no action flag",
        vfu_observe,
    )


@case(
    "device_feature/set-state-short-data",
    SHOULD,
    requires=("migration_v2",),
    revisions=("0.9.2",),
)
def test_set_state_short_data(vfu_client, vfu_connect, vfu_observe):
    """A SET of MIG_DEVICE_STATE whose data is 4 bytes (device_state RUNNING, no
    data_fd) is refused; the 8-byte SET of RUNNING succeeds. (RUNNING, the state the
    device is in, so that a SET taken changes nothing the next messages depend on.)

    Spec (Security Considerations): "Standard tools and mechanisms should be used on
    both sides to validate input" (VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE): "The data
    field of the reply message, as well as the SET request message, is structured as
    follows" (device_state: 4 bytes, data_fd: 4 bytes).
    """
    running = FeatureMigDeviceState(2).pack()
    accepted(vfu_client.device_feature(SET | STATE, running), "SET of MIG_DEVICE_STATE RUNNING")
    send_refused(
        vfu_client,
        Command.DEVICE_FEATURE,
        _request(SET | STATE, struct.pack("<I", 2)),
        vfu_connect,
        "a SET of MIG_DEVICE_STATE with 4 data bytes",
        vfu_observe,
    )


@case(
    "device_feature/argsz-below-header",
    SHOULD,
    requires=("migration_v2",),
    revisions=("0.9.2",),
)
def test_argsz_below_header(vfu_client, vfu_connect, vfu_observe):
    """A GET of MIGRATION whose argsz (4) is below the 8-byte argsz and flags header is
    refused; with argsz 16 it succeeds.

    Spec (Message sizes): "In a request, it defines the maximum expected reply payload
    size, which should be at least the size of the fixed reply payload headers defined
    here." (Security Considerations): "Standard tools and mechanisms should be used on
    both sides to validate input".
    """
    accepted(vfu_client.device_feature(GET | MIGRATION, argsz=16), "GET MIGRATION, argsz 16")
    send_refused(
        vfu_client,
        Command.DEVICE_FEATURE,
        _request(GET | MIGRATION, argsz=4),
        vfu_connect,
        "a GET of MIGRATION with argsz 4",
        vfu_observe,
    )


@case(
    "device_feature/undefined-flag-bits",
    SHOULD,
    requires=("migration_v2",),
    revisions=("0.9.2",),
)
def test_undefined_flag_bits(vfu_client, vfu_connect, vfu_observe):
    """A GET of MIGRATION with flag bit 20 (not defined) set is refused; without it the
    GET succeeds.

    Spec (VFIO_USER_DEVICE_FEATURE): "flags defines the action to be performed by the
    server and upon which feature" (bits 0 to 18 defined) (Security Considerations):
    "Standard tools and mechanisms should be used on both sides to validate input".
    """
    accepted(vfu_client.device_feature(GET | MIGRATION), "GET MIGRATION")
    send_refused(
        vfu_client,
        Command.DEVICE_FEATURE,
        _request(GET | MIGRATION | 1 << 20),
        vfu_connect,
        "a GET of MIGRATION with flag bit 20 set",
        vfu_observe,
    )
