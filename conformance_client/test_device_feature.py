"""VFIO_USER_DEVICE_FEATURE (0.9.2), as the client sends it."""

from __future__ import annotations

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.protocol import DeviceFeatureFlags

from ._support import FEATURE_HEAD, features, listed

_GET, _SET, _PROBE = (int(f) for f in DeviceFeatureFlags)


@case("client/device_feature/get-set-exclusive", MUST, revisions=("0.9.2",))
def test_get_set_exclusive(vfu_sessions):
    """No DEVICE_FEATURE sets both GET and SET but with PROBE.

    Spec (VFIO_USER_DEVICE_FEATURE): "VFIO_DEVICE_FEATURE_GET and VFIO_DEVICE_FEATURE_SET
    are mutually exclusive, except for use with VFIO_DEVICE_FEATURE_PROBE."
    """
    bad = [
        f"{m.describe()}: flags {flags:#x}"
        for m, _, flags in features(vfu_sessions)
        if flags & _GET and flags & _SET and not flags & _PROBE
    ]
    assert not bad, listed(bad)


@case("client/device_feature/probe-no-data", SHOULD, revisions=("0.9.2",))
def test_probe_no_data(vfu_sessions):
    """A PROBE carries no feature data.

    Spec (VFIO_USER_DEVICE_FEATURE): "data is specific to the particular feature. It is not
    used for probing."
    """
    bad = [
        f"{m.describe()}: {len(m.payload) - FEATURE_HEAD.size} data bytes"
        for m, _, flags in features(vfu_sessions)
        if flags & _PROBE and len(m.payload) > FEATURE_HEAD.size
    ]
    assert not bad, listed(bad)


@case("client/device_feature/argsz-covers-reply", SHOULD, revisions=("0.9.2",))
def test_argsz_covers_reply(vfu_sessions):
    """A SET or PROBE's argsz covers its reply, which is the request itself.

    Spec (VFIO_USER_DEVICE_FEATURE): "argsz is the maximum size of the reply payload.";
    "The reply payload must be the same as the request payload for setting or probing a
    feature."
    """
    bad = [
        f"{m.describe()}: argsz {argsz}, the request (and its reply) {len(m.payload)} bytes"
        for m, argsz, flags in features(vfu_sessions)
        if flags & (_SET | _PROBE) and argsz < len(m.payload)
    ]
    assert not bad, listed(bad)
