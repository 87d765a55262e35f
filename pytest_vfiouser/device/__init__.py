"""What the device under test is: its profile, and the model the cases read.

* ``_profile``: device profiles (TOML), their schema and validation (``Profile``,
  ``load_profile``, ``ProfileError``; ``profile_schema()``: the same as JSON Schema,
  ``profiles/profile.schema.json``, for editors).
* ``_model``: ``discover()`` asks the server what it is; ``DeviceModel`` merges
  that with the profile (features, scratch ranges, expectations).

May import: ``protocol`` and ``client``.
"""

from pytest_vfiouser.protocol import FEATURE_REVISIONS, FEATURES

from ._model import (
    DISCOVERABLE,
    FEATURE_HOOKS,
    TWIN_PROBE,
    DeviceModel,
    DiscoveryError,
    discover,
    discovery_proposal,
    missing_hook,
    probe_twin_socket,
    resolve_feature,
)
from ._profile import (
    DEVICE_FLAGS,
    IRQ_FLAGS,
    REGION_FLAGS,
    DeviceExpectation,
    IrqProfile,
    Profile,
    ProfileError,
    RegionProfile,
    load_profile,
    parse_profile,
    profile_schema,
)

__all__ = [
    "DEVICE_FLAGS",
    "DISCOVERABLE",
    "FEATURES",
    "FEATURE_HOOKS",
    "FEATURE_REVISIONS",
    "IRQ_FLAGS",
    "REGION_FLAGS",
    "TWIN_PROBE",
    "DeviceExpectation",
    "DeviceModel",
    "DiscoveryError",
    "IrqProfile",
    "Profile",
    "ProfileError",
    "RegionProfile",
    "discover",
    "discovery_proposal",
    "probe_twin_socket",
    "load_profile",
    "missing_hook",
    "parse_profile",
    "profile_schema",
    "resolve_feature",
]
