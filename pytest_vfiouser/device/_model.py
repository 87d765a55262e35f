"""What the device is: what the server reports, merged with what the profile says.

``discover()`` asks the server once (VERSION, DEVICE_GET_INFO, every
region's GET_REGION_INFO with its capabilities, every IRQ's GET_IRQ_INFO);
``DeviceModel`` adds the profile's expectations, scratch ranges and
features.  ``resolve_feature()`` decides whether the device has a feature:

1. features of the other spec revision: no;
2. the profile's word, if it says;
3. else what discovery shows (mmap: a region with the MMAP flag;
   sparse_mmap: a sparse mmap capability; migration_v1: a region with type
   capability 3/1; reset: the reset flag; write_multiple: the server's VERSION
   capabilities; twin_socket: a VERSION proposing it, on a connection of its
   own, enables it; migration_v2 / dma_logging: DEVICE_FEATURE PROBE of GET
   MIGRATION / SET DMA_LOGGING_START succeeds);
4. irq_trigger / dma_engine: a plugin implementing the hook that does it;
5. otherwise nobody can tell: the case needs the profile to say.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pytest_vfiouser.client import ClientError, ErrorReply, MalformedReply, Timeout
from pytest_vfiouser.protocol import (
    VFIO_REGION_SUBTYPE_MIGRATION,
    VFIO_REGION_TYPE_MIGRATION,
    Capabilities,
    CodecError,
    Command,
    DeviceFeatureFlags,
    DeviceFlags,
    DeviceInfo,
    Feature,
    IrqInfo,
    RegionFlags,
    RegionInfo,
    RegionTypeCap,
    SparseMmapCap,
    Version,
)

from ._profile import FEATURE_REVISIONS, IrqProfile, Profile, RegionProfile

__all__ = [
    "DISCOVERABLE",
    "DeviceModel",
    "DiscoveryError",
    "FEATURE_HOOKS",
    "TWIN_PROBE",
    "discover",
    "discovery_proposal",
    "probe_twin_socket",
    "resolve_feature",
]

# Features the suite can only exercise through a hook.
FEATURE_HOOKS = {"irq_trigger": "vfu_trigger_irq", "dma_engine": "vfu_trigger_dma"}
DISCOVERABLE = frozenset(
    {
        "mmap",
        "sparse_mmap",
        "reset",
        "migration_v1",
        "migration_v2",
        "dma_logging",
        "write_multiple",
        "twin_socket",
        "io_fds",
    }
)
# What discovery probes at 0.9.2: feature -> (DEVICE_FEATURE index, operation).
PROBES = {
    "migration_v2": (Feature.MIGRATION, DeviceFeatureFlags.GET),
    "dma_logging": (Feature.DMA_LOGGING_START, DeviceFeatureFlags.SET),
}
# ... and on a connection of its own (probe_twin_socket, set by the caller of discover()).
TWIN_PROBE = "twin_socket"
_MAX_REGION_INFO = 1 << 16

# What discovery shows of a feature the device lacks, for the features whose absence it
# can show (not twin_socket: a server may enable it for one connection and not another).
_ABSENT = {
    "mmap": "no region's GET_REGION_INFO flags include VFIO_REGION_INFO_FLAG_MMAP (Spec "
    '(VFIO_USER_DEVICE_GET_REGION_INFO): "VFIO_REGION_INFO_FLAG_MMAP specifies the client '
    'can mmap() the region.")',
    "sparse_mmap": "no region's GET_REGION_INFO reply carries a "
    "VFIO_REGION_INFO_CAP_SPARSE_MMAP capability",
    "migration_v1": "no region carries the region type capability VFIO_REGION_TYPE_MIGRATION "
    '(3) / VFIO_REGION_SUBTYPE_MIGRATION (1) (Spec (VFIO Device Migration Info): "A device '
    'may contain a migration region (of type VFIO_REGION_TYPE_MIGRATION).")',
    "reset": "the DEVICE_GET_INFO flags lack VFIO_DEVICE_FLAGS_RESET (Spec "
    '(VFIO_USER_DEVICE_GET_INFO): "VFIO_DEVICE_FLAGS_RESET indicates that the device '
    'supports the VFIO_USER_DEVICE_RESET message.")',
    "io_fds": "the server answers VFIO_USER_DEVICE_GET_REGION_IO_FDS for no region",
    "migration_v2": "DEVICE_FEATURE with PROBE and GET of VFIO_DEVICE_FEATURE_MIGRATION is "
    'refused (Spec (VFIO_DEVICE_FEATURE_MIGRATION): "This feature indicates that the device '
    'can support the migration API through VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE.")',
    "dma_logging": "DEVICE_FEATURE with PROBE and SET of VFIO_DEVICE_FEATURE_DMA_LOGGING_START "
    'is refused (Spec (VFIO_DEVICE_FEATURE_DMA_LOGGING_START): "These features can also be '
    'probed to determine whether the device supports DMA logging.")',
    "write_multiple": "the capabilities of the server's VERSION reply do not set "
    'write_multiple (Spec (VFIO_USER_VERSION): "VFIO_USER_REGION_WRITE_MULTI messages are '
    'supported if the value is true.")',
}


class DiscoveryError(Exception):
    """The server did not answer the discovery requests well enough to describe the device."""


@dataclass
class DeviceModel:
    """The device as discovered, plus the profile.  See the module docstring."""

    spec: str
    profile: Profile
    info: DeviceInfo
    regions: dict[int, RegionInfo] = field(default_factory=dict)
    irqs: dict[int, IrqInfo] = field(default_factory=dict)
    version: Version | None = None  # the server's VERSION reply
    errors: dict[str, str] = field(default_factory=dict)  # "region 8" -> what went wrong
    io_fds: dict[int, int] = field(default_factory=dict)  # region -> sub-regions it reports
    hooks: frozenset[str] = frozenset()  # hook names some plugin implements
    probed: dict[str, bool] = field(default_factory=dict)  # PROBES/TWIN_PROBE -> it succeeded

    # -- what the server said
    @property
    def flags(self) -> int:
        return self.info.flags

    @property
    def num_regions(self) -> int:
        return self.info.num_regions

    @property
    def num_irqs(self) -> int:
        return self.info.num_irqs

    @property
    def is_pci(self) -> bool:
        return bool(self.info.flags & DeviceFlags.PCI)

    @property
    def capabilities(self) -> Capabilities:
        return self.version.capabilities if self.version is not None else Capabilities()

    def region(self, index: int) -> RegionInfo | None:
        return self.regions.get(index)

    def irq(self, index: int) -> IrqInfo | None:
        return self.irqs.get(index)

    def regions_with(self, flags: int) -> list[RegionInfo]:
        """Regions whose flags include all of ``flags`` (e.g. RegionFlags.READ | WRITE)."""
        return [r for r in self.regions.values() if r.flags & flags == flags and r.size]

    # -- what the profile says
    @property
    def expected(self):
        """The profile's expected DEVICE_GET_INFO values (fields None when unchecked)."""
        return self.profile.device

    def region_profile(self, index: int) -> RegionProfile | None:
        return self.profile.regions.get(index)

    def irq_profile(self, index: int) -> IrqProfile | None:
        return self.profile.irqs.get(index)

    def scratch(self, region: int) -> tuple[tuple[int, int], ...]:
        """(offset, length) ranges of ``region`` that tests may write."""
        return self.profile.scratch_ranges(region)

    def scratch_ranges(self) -> list[tuple[int, int, int]]:
        """Every scratch range as (region, offset, length)."""
        return [
            (i, off, n) for i in self.profile.regions for off, n in self.profile.scratch_ranges(i)
        ]

    # -- features
    def has(self, feature: str) -> bool | None:
        """True/False, or None when neither the profile nor discovery can tell."""
        return resolve_feature(feature, self.spec, self.profile, self.hooks, self)[0]

    def missing(self, feature: str) -> str | None:
        """Why a case needing ``feature`` cannot run, or None if it can."""
        return resolve_feature(feature, self.spec, self.profile, self.hooks, self)[1]

    def lacks(self, feature: str) -> str | None:
        """What discovery shows when the device lacks ``feature`` (the sign the spec gives
        of it is absent), or None: it has it, or discovery cannot tell."""
        if feature not in _ABSENT or (feature == "io_fds" and "io fds" in self.errors):
            return None
        return None if _discovered(feature, self) else _ABSENT[feature]

    def negotiated(self) -> dict | None:
        """JSON-able version and capabilities, for reports."""
        if self.version is None:
            return None
        return {
            "major": self.version.major,
            "minor": self.version.minor,
            "capabilities": dict(self.version.capabilities.raw),
        }


def resolve_feature(
    name: str,
    spec: str,
    profile: Profile,
    hooks: Iterable[str],
    model: DeviceModel | None,
) -> tuple[bool | None, str | None]:
    """(has it, why a case needing it cannot run).  ``name`` may be a hook name."""
    hooks = frozenset(hooks)
    if name.startswith("vfu_"):
        return (True, None) if name in hooks else (False, missing_hook(name))
    if spec not in FEATURE_REVISIONS.get(name, frozenset({spec})):
        return False, f"{name} does not exist in spec {spec}"
    hook = FEATURE_HOOKS.get(name)
    said = profile.has_feature(name)
    if said is False:
        return False, f"device has no {name}"
    if hook is not None and hook not in hooks:
        return None, missing_hook(hook)
    if said is True or hook is not None:
        return True, None
    if name not in DISCOVERABLE:
        return None, f"needs profile: {name}"
    if model is None:
        return None, f"needs profile: {name} (device discovery failed)"
    found = _discovered(name, model)
    return found, None if found else f"device has no {name}"


def missing_hook(name: str) -> str:
    """The UNIMPLEMENTED reason of a case needing hook ``name`` that nobody implements."""
    return f"needs profile hook {name} (a plugin implementing pytest_{name})"


def _discovered(name: str, m: DeviceModel) -> bool:
    regions = m.regions.values()
    if name == "mmap":
        return any(r.flags & RegionFlags.MMAP for r in regions)
    if name == "sparse_mmap":
        return any(r.cap(SparseMmapCap) is not None for r in regions)
    if name == "migration_v1":
        return any(
            (c := r.cap(RegionTypeCap)) is not None
            and (c.type, c.subtype) == (VFIO_REGION_TYPE_MIGRATION, VFIO_REGION_SUBTYPE_MIGRATION)
            for r in regions
        )
    if name == "reset":
        return bool(m.flags & DeviceFlags.RESET)
    if name == "io_fds":  # the server answers GET_REGION_IO_FDS (even with no sub-region)
        return bool(m.io_fds)
    if name in PROBES or name == TWIN_PROBE:
        return m.probed.get(name, False)
    if name == "write_multiple":
        return bool(m.capabilities.write_multiple)
    raise ValueError(name)


def discovery_proposal(client, spec: str) -> dict:
    """The capabilities discovery proposes: the client's limits, and at 0.9.2
    write_multiple, which a server may state only when proposed ("The capability list
    must be a subset of those proposed"). Twin-socket support is proposed on a
    connection of its own (probe_twin_socket): the reply's twin_socket is what the
    twin_socket cases judge, and a defect there must not cost discovery."""
    if spec in FEATURE_REVISIONS["write_multiple"]:
        return client.proposal(write_multiple=True)
    return client.proposal()


def probe_twin_socket(client) -> bool:
    """Whether the server enables twin-socket mode for ``client`` (a fresh connection,
    left negotiated) when it proposes it: the reply decodes and sets
    twin_socket.supported. Anything else is no."""
    proposal = client.proposal(twin_socket={"supported": True})
    try:
        reply = client.request(Command.VERSION, Version(0, 0, {"capabilities": proposal}))
        if not reply.ok:
            return False
        twin = Version.unpack(reply.payload).capabilities.twin_socket
    except (ClientError, CodecError):
        return False
    finally:
        client.close()
    return isinstance(twin, dict) and twin.get("supported") is True


def discover(client, *, spec: str, profile: Profile, hooks: Iterable[str] = ()) -> DeviceModel:
    """Ask a connected client's server everything about the device; negotiates first.

    Raises DiscoveryError when VERSION or DEVICE_GET_INFO fail; a region or
    IRQ that cannot be queried is noted in ``errors`` and left out.
    Client exceptions (Timeout, ConnectionClosed) pass through.
    """
    try:
        if client.negotiated is None:
            client.negotiate()
        reply = client.device_get_info().check()
        info = reply.body
    except (ErrorReply, MalformedReply) as e:
        raise DiscoveryError(str(e)) from e
    model = DeviceModel(spec, profile, info, version=client.negotiated, hooks=frozenset(hooks))
    for index in range(min(info.num_regions, 256)):
        try:
            reply = client.region_info(index).check()
            body = reply.body
            if body.argsz > 32 and not body.caps:
                reply = client.region_info(index, argsz=min(body.argsz, _MAX_REGION_INFO)).check()
                body = reply.body
            reply.close_fds()
            model.regions[index] = body
        except (ErrorReply, MalformedReply) as e:
            model.errors[f"region {index}"] = str(e)
    for index in range(min(info.num_irqs, 256)):
        try:
            model.irqs[index] = client.irq_info(index).check().body
        except (ErrorReply, MalformedReply) as e:
            model.errors[f"irq {index}"] = str(e)
    _discover_io_fds(client, model)
    if spec in FEATURE_REVISIONS["migration_v2"]:
        _probe_features(client, model)
    return model


def _probe_features(client, model: DeviceModel) -> None:
    """DEVICE_FEATURE PROBE of each of PROBES (0.9.2)."""
    for name, (feature, operation) in PROBES.items():
        try:
            reply = client.device_feature(int(DeviceFeatureFlags.PROBE | operation | feature))
        except Timeout as e:
            model.errors["device features"] = f"DEVICE_FEATURE PROBE of {name}: {e}"
            return
        model.probed[name] = reply.ok


def _discover_io_fds(client, model: DeviceModel) -> None:
    """Which regions the server answers GET_REGION_IO_FDS for (the command is optional),
    asked last: a server slow to refuse it leaves the rest of the description whole."""
    for index, region in sorted(model.regions.items()):
        if not region.size:
            continue
        try:
            reply = client.region_io_fds(index, 1 << 16)
        except Timeout as e:
            model.errors["io fds"] = f"GET_REGION_IO_FDS of region {index}: {e}"
            return
        reply.close_fds()
        try:
            if reply.ok:
                model.io_fds[index] = reply.body.count
        except MalformedReply as e:  # the cases of region_io_fds will say what is wrong
            model.errors[f"io fds of region {index}"] = str(e)
            model.io_fds[index] = 1
