"""Device profiles: a TOML description of the device under test.

A server implementer writes a profile so the conformance suite knows what the
device should report and which parts of it tests may touch.  Every table and
every key is optional; an empty file (or no profile at all, see
``Profile.empty()``) means "expect nothing, touch nothing beyond what the
protocol itself allows".

Schema
======

``[profile]``
    ``name``  (string)  Free text shown in reports.  Default: the file name
              without its extension, or ``"unnamed"`` for a profile not read
              from a file.
    ``spec``  (string)  Protocol version the server implements, ``"0.9.1"`` or
              ``"0.9.2"``.  Default: none (the command line decides).
    ``hooks`` (string)  Dotted name of a Python module implementing the
              ``pytest_vfu_*`` hooks (trigger an interrupt, run a DMA, read
              device state) for this device; the plugin imports and
              registers it.  Default: none (a conftest.py or ``-p`` works too).

``[device]``  Expected ``VFIO_USER_DEVICE_GET_INFO`` reply values.
    ``flags``        List of names (``reset`` = bit 0, ``pci`` = bit 1) or an
                     integer bit mask.  The exact expected value of the field.
    ``num_regions``  Integer, expected number of regions.
    ``num_irqs``     Integer, expected number of IRQ types.

``[features]``  Optional features the device has: ``name = true | false``.
    Known names are listed in ``FEATURES``; any other name is an error.  A
    feature left out means "the profile does not say" (tests may probe).

``[[regions]]``  One table per region the profile describes.
    ``index``         Integer, required, unique among ``[[regions]]``.
    ``size``          Integer, expected region size in bytes.
    ``flags``         List of names (``read`` = bit 0, ``write`` = bit 1,
                      ``mmap`` = bit 2, ``caps`` = bit 3) or an integer mask:
                      the exact expected ``GET_REGION_INFO`` flags.
    ``scratch``       List of ``[offset, length]`` ranges that tests may write
                      and read back.  Lengths are positive, ranges of one
                      region do not overlap and lie within ``size`` if given.
    ``reset_values``  List of ``[offset, "hex bytes"]``: what the device holds
                      at that offset after ``VFIO_USER_DEVICE_RESET``.  Same
                      non-overlap and size rules as ``scratch``.

``[[irqs]]``  One table per IRQ type the profile describes.
    ``index``  Integer, required, unique among ``[[irqs]]``.
    ``count``  Integer, expected ``GET_IRQ_INFO`` count.
    ``flags``  List of names (``eventfd`` = bit 0, ``maskable`` = bit 1,
               ``automasked`` = bit 2, ``noresize`` = bit 3) or an integer
               mask: the exact expected ``GET_IRQ_INFO`` flags.

``[baseline]``  Expected failures: ``"case/id" = "reason"`` for every
    parametrization of a case (its family), ``"case/id[params]" = "reason"`` for
    one (its id in the reports); the entry of a parametrization wins over its
    family's.  Reasons must be non-empty strings.

Cross-checks: features that exist in only one revision (``FEATURE_REVISIONS``:
``migration_v1`` in 0.9.1; ``migration_v2``, ``write_multiple``,
``twin_socket`` in 0.9.2) may not be true when ``profile.spec`` names the
other one; a region or IRQ index must be below ``device.num_regions`` /
``device.num_irqs`` when those are given; ``features.reset`` must agree with the
reset bit of ``device.flags``; ``features.mmap = false`` contradicts a region
whose flags include ``mmap``; ``scratch`` needs a region whose flags (if given)
include read and write, ``reset_values`` one whose flags include read.

Any invalid input raises ``ProfileError`` with a message naming the source file
and the key path, e.g. ``profile.toml: regions[2].scratch[0]: length must be
positive, got 0``.  ``regions[2]`` is the third ``[[regions]]`` table in the
file, not the region with index 2.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

from pytest_vfiouser.protocol import FEATURE_REVISIONS, FEATURES, REVISIONS

__all__ = [
    "DEVICE_FLAGS",
    "IRQ_FLAGS",
    "REGION_FLAGS",
    "DeviceExpectation",
    "IrqProfile",
    "Profile",
    "ProfileError",
    "RegionProfile",
    "load_profile",
    "parse_profile",
]

# Flag name -> bit, as in <linux/vfio.h> and the vfio-user spec.
DEVICE_FLAGS: Mapping[str, int] = MappingProxyType({"reset": 1 << 0, "pci": 1 << 1})
REGION_FLAGS: Mapping[str, int] = MappingProxyType(
    {"read": 1 << 0, "write": 1 << 1, "mmap": 1 << 2, "caps": 1 << 3}
)
IRQ_FLAGS: Mapping[str, int] = MappingProxyType(
    {"eventfd": 1 << 0, "maskable": 1 << 1, "automasked": 1 << 2, "noresize": 1 << 3}
)

_U32 = 32
_U64 = 64


class ProfileError(Exception):
    """An unreadable or invalid profile.

    ``source`` is the file (or ``"<string>"``), ``key`` the dotted key path
    (``None`` for file-level problems), ``detail`` the bare message.
    """

    def __init__(self, source: str, key: str | None, detail: str) -> None:
        self.source = source
        self.key = key
        self.detail = detail
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {detail}")


@dataclass(frozen=True)
class DeviceExpectation:
    """Expected ``DEVICE_GET_INFO`` values; ``None`` means "not checked"."""

    flags: int | None = None
    num_regions: int | None = None
    num_irqs: int | None = None


@dataclass(frozen=True)
class RegionProfile:
    """One ``[[regions]]`` table.  Flags are bit masks; ranges keep file order."""

    index: int
    size: int | None = None
    flags: int | None = None
    scratch: tuple[tuple[int, int], ...] = ()
    reset_values: tuple[tuple[int, bytes], ...] = ()


@dataclass(frozen=True)
class IrqProfile:
    """One ``[[irqs]]`` table.  ``flags`` is a bit mask."""

    index: int
    count: int | None = None
    flags: int | None = None


@dataclass(frozen=True)
class Profile:
    """A parsed device profile.

    The dict fields are plain dicts (so the object pickles and compares
    simply); treat them as read-only.
    """

    name: str = "unnamed"
    spec: str | None = None
    device: DeviceExpectation = field(default_factory=DeviceExpectation)
    features: dict[str, bool] = field(default_factory=dict)
    regions: dict[int, RegionProfile] = field(default_factory=dict)
    irqs: dict[int, IrqProfile] = field(default_factory=dict)
    baseline: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    # A module implementing the pytest_vfu_* hooks for this device; the
    # plugin imports and registers it (the pytest way: -p module works too).
    hooks: str | None = None

    @classmethod
    def empty(cls) -> Profile:
        """The profile used when none is given: expects nothing."""
        return cls(name="none")

    def has_feature(self, name: str) -> bool | None:
        """True/False if the profile says whether the device has ``name``, else None.

        ``reset`` is also answered by ``device.flags`` when that is given,
        since it is the exact expected DEVICE_GET_INFO value.
        """
        if name not in FEATURES:
            # A typo in a test should fail loudly, not read as "unknown".
            raise ValueError(f"unknown feature {name!r}; known: {', '.join(sorted(FEATURES))}")
        if name in self.features:
            return self.features[name]
        if name == "reset" and self.device.flags is not None:
            return bool(self.device.flags & DEVICE_FLAGS["reset"])
        return None

    def spec_conflicts(self, spec: str) -> tuple[str, ...]:
        """Features the profile marks true that do not exist in revision ``spec``.

        Loading already rejects conflicts with ``profile.spec``; the plugin
        calls this when the revision comes from the command line instead.
        """
        return tuple(
            sorted(
                name
                for name, present in self.features.items()
                if present and spec not in FEATURE_REVISIONS.get(name, frozenset({spec}))
            )
        )

    def scratch_ranges(self, region_index: int) -> tuple[tuple[int, int], ...]:
        """The ``(offset, length)`` ranges tests may write in a region (may be empty)."""
        region = self.regions.get(region_index)
        return region.scratch if region is not None else ()

    def baseline_entry(self, key: str) -> tuple[str, str] | None:
        """The ``[baseline]`` entry that names the case ``key`` (``section/name[params]``, its
        id in the reports) and its reason: the entry of that parametrization, else the one of
        the bare case id (every parametrization of the case); None if none does."""
        for entry in dict.fromkeys((key, key.split("[", 1)[0])):
            if entry in self.baseline:
                return entry, self.baseline[entry]
        return None


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read and validate a profile file; raise ProfileError on any problem."""
    source = os.fspath(path)
    try:
        with open(path, "rb") as fp:
            data = tomllib.load(fp)
    except OSError as exc:
        raise ProfileError(source, None, f"cannot read profile: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ProfileError(source, None, f"not UTF-8 text (at line {line})") from exc
    except tomllib.TOMLDecodeError as exc:
        # The message carries "(at line N, column M)".
        raise ProfileError(source, None, f"invalid TOML: {exc}") from exc
    return parse_profile(data, source=source, path=Path(path))


def parse_profile(
    data: Mapping[str, Any], source: str = "<string>", path: Path | None = None
) -> Profile:
    """Validate already-decoded TOML data; raise ProfileError on any problem."""
    return _Parser(source).profile(data, path)


# ---------------------------------------------------------------------------
# Validation.  Each helper takes the key path of the value it checks so that
# every error can point at the exact spot in the file.


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(parent: str, key: str) -> str:
    # Quote keys the way TOML would need them, so the path can be pasted back.
    if not _BARE_KEY.fullmatch(key):
        key = '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"{parent}.{key}" if parent else key


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str | None, detail: str) -> ProfileError:
        return ProfileError(self.source, key, detail)

    # -- primitives ---------------------------------------------------------

    def check_keys(self, table: Mapping[str, Any], where: str, valid: frozenset[str]) -> None:
        for key in table:
            if key not in valid:
                hint = difflib.get_close_matches(key, sorted(valid), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.error(
                    _join(where, key),
                    f"unknown key{extra}; valid keys: {', '.join(sorted(valid))}",
                )

    def table(self, value: Any, where: str) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.error(where, f"expected a table, got {_type_name(value)}")
        return value

    def array(self, value: Any, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.error(where, f"expected an array, got {_type_name(value)}")
        return value

    def string(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise self.error(where, f"expected a string, got {_type_name(value)}")
        return value

    def uint(self, value: Any, where: str, bits: int) -> int:
        # bool is an int subclass in Python; `true` is never a valid number here.
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(where, f"expected an integer, got {_type_name(value)}")
        if value < 0:
            raise self.error(where, f"must not be negative, got {value}")
        if value >= 1 << bits:
            raise self.error(where, f"must fit in {bits} bits, got {value}")
        return value

    def flags(self, value: Any, where: str, names: Mapping[str, int]) -> int:
        """A flag field: a list of names or an integer mask (for bits we do not name)."""
        if isinstance(value, int) and not isinstance(value, bool):
            return self.uint(value, where, _U32)
        if not isinstance(value, list):
            raise self.error(
                where, f"expected an array of flag names or an integer, got {_type_name(value)}"
            )
        mask = 0
        for i, name in enumerate(value):
            item = f"{where}[{i}]"
            name = self.string(name, item)
            if name not in names:
                raise self.error(item, f"unknown flag {name!r}; valid flags: {', '.join(names)}")
            mask |= names[name]
        return mask

    def ranges(
        self, entries: list[tuple[int, int]], where: str, what: str, size: int | None
    ) -> None:
        """Ranges (offset, length) in file order: check size bound and no overlap."""
        for i, (offset, length) in enumerate(entries):
            if size is not None and offset + length > size:
                raise self.error(
                    f"{where}[{i}]",
                    f"range [{offset}, {length}] ends at {offset + length}, "
                    f"past the region size {size}",
                )
        order = sorted(range(len(entries)), key=lambda i: entries[i][0])
        for a, b in zip(order, order[1:], strict=False):  # adjacent pairs
            a_off, a_len = entries[a]
            b_off, b_len = entries[b]
            if b_off < a_off + a_len:
                later, earlier = max(a, b), min(a, b)
                raise self.error(
                    f"{where}[{later}]",
                    f"range {list(entries[later])} overlaps {what}[{earlier}] "
                    f"{list(entries[earlier])}",
                )

    # -- tables -------------------------------------------------------------

    _TOP = frozenset({"profile", "device", "features", "regions", "irqs", "baseline"})
    _PROFILE = frozenset({"name", "spec", "hooks"})
    _DEVICE = frozenset({"flags", "num_regions", "num_irqs"})
    _REGION = frozenset({"index", "size", "flags", "scratch", "reset_values"})
    _IRQ = frozenset({"index", "count", "flags"})

    def profile(self, data: Any, path: Path | None) -> Profile:
        data = self.table(data, "")
        self.check_keys(data, "", self._TOP)

        meta = self.table(data.get("profile", {}), "profile")
        self.check_keys(meta, "profile", self._PROFILE)
        default_name = path.stem if path is not None else "unnamed"
        name = self.string(meta.get("name", default_name), "profile.name")
        spec = None
        if "spec" in meta:
            spec = self.string(meta["spec"], "profile.spec")
            if spec not in REVISIONS:
                raise self.error(
                    "profile.spec", f"must be one of {', '.join(REVISIONS)}, got {spec!r}"
                )

        hooks = None
        if "hooks" in meta:
            hooks = self.string(meta["hooks"], "profile.hooks")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", hooks):
                raise self.error("profile.hooks", f"must be a dotted module name, got {hooks!r}")

        device = self.device(data.get("device", {}))
        features = self.features(data.get("features", {}))
        regions = self.indexed(
            data, "regions", "region", self.region, device.num_regions, "device.num_regions"
        )
        irqs = self.indexed(data, "irqs", "IRQ", self.irq, device.num_irqs, "device.num_irqs")
        baseline = self.baseline(data.get("baseline", {}))
        self.cross_check(device, features, regions)

        profile = Profile(
            name=name,
            spec=spec,
            device=device,
            features=features,
            regions=regions,
            irqs=irqs,
            baseline=baseline,
            path=path,
            hooks=hooks,
        )
        if spec is not None and (conflicts := profile.spec_conflicts(spec)):
            raise self.error(
                f"features.{conflicts[0]}",
                f"true, but the feature does not exist in profile.spec {spec}",
            )
        return profile

    def device(self, value: Any) -> DeviceExpectation:
        table = self.table(value, "device")
        self.check_keys(table, "device", self._DEVICE)
        return DeviceExpectation(
            flags=(
                self.flags(table["flags"], "device.flags", DEVICE_FLAGS)
                if "flags" in table
                else None
            ),
            num_regions=(
                self.uint(table["num_regions"], "device.num_regions", _U32)
                if "num_regions" in table
                else None
            ),
            num_irqs=(
                self.uint(table["num_irqs"], "device.num_irqs", _U32)
                if "num_irqs" in table
                else None
            ),
        )

    def features(self, value: Any) -> dict[str, bool]:
        table = self.table(value, "features")
        result: dict[str, bool] = {}
        for key, flag in table.items():
            where = _join("features", key)
            if key not in FEATURES:
                hint = difflib.get_close_matches(key, sorted(FEATURES), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                raise self.error(
                    where, f"unknown feature{extra}; known features: {', '.join(sorted(FEATURES))}"
                )
            if not isinstance(flag, bool):
                raise self.error(where, f"expected true or false, got {_type_name(flag)}")
            result[key] = flag
        return result

    def indexed(
        self,
        data: Mapping[str, Any],
        key: str,
        what: str,
        parse_one: Callable[[Mapping[str, Any], str], Any],
        limit: int | None,
        limit_key: str,
    ) -> dict[int, Any]:
        """Parse ``[[regions]]`` / ``[[irqs]]`` into a dict keyed by index."""
        if key not in data:
            return {}
        entries = data[key]
        if not isinstance(entries, list):
            raise self.error(
                key, f"expected an array of tables ([[{key}]]), got {_type_name(entries)}"
            )
        result: dict[int, Any] = {}
        first_seen: dict[int, int] = {}
        for i, entry in enumerate(entries):
            where = f"{key}[{i}]"
            item = parse_one(self.table(entry, where), where)
            if item.index in first_seen:
                raise self.error(
                    f"{where}.index",
                    f"duplicate {what} index {item.index} (also {key}[{first_seen[item.index]}])",
                )
            if limit is not None and item.index >= limit:
                raise self.error(
                    f"{where}.index",
                    f"{what} index {item.index} is not below {limit_key} = {limit}",
                )
            first_seen[item.index] = i
            result[item.index] = item
        return dict(sorted(result.items()))

    def region(self, table: Mapping[str, Any], where: str) -> RegionProfile:
        self.check_keys(table, where, self._REGION)
        if "index" not in table:
            raise self.error(f"{where}.index", "required key is missing")
        index = self.uint(table["index"], f"{where}.index", _U32)
        size = self.uint(table["size"], f"{where}.size", _U64) if "size" in table else None
        flags = (
            self.flags(table["flags"], f"{where}.flags", REGION_FLAGS) if "flags" in table else None
        )

        scratch_key = f"{where}.scratch"
        scratch: list[tuple[int, int]] = []
        for i, entry in enumerate(self.array(table.get("scratch", []), scratch_key)):
            item = f"{scratch_key}[{i}]"
            offset, length = self.pair(entry, item, "[offset, length]")
            offset = self.uint(offset, f"{item}[0]", _U64)
            length = self.uint(length, f"{item}[1]", _U64)
            if length == 0:
                raise self.error(item, f"length must be positive, got {length}")
            scratch.append((offset, length))
        self.ranges(scratch, scratch_key, "scratch", size)

        reset_key = f"{where}.reset_values"
        reset_values: list[tuple[int, bytes]] = []
        for i, entry in enumerate(self.array(table.get("reset_values", []), reset_key)):
            item = f"{reset_key}[{i}]"
            offset, text = self.pair(entry, item, '[offset, "hex bytes"]')
            offset = self.uint(offset, f"{item}[0]", _U64)
            reset_values.append((offset, self.hex(text, f"{item}[1]")))
        self.ranges([(off, len(val)) for off, val in reset_values], reset_key, "reset_values", size)

        if flags is not None:
            # The profile contradicting itself is a profile bug; say so now rather
            # than have a test fail mysteriously later.
            rw = REGION_FLAGS["read"] | REGION_FLAGS["write"]
            if scratch and flags & rw != rw:
                raise self.error(
                    scratch_key, "scratch ranges need a region with read and write flags"
                )
            if reset_values and not flags & REGION_FLAGS["read"]:
                raise self.error(reset_key, "reset_values need a region with the read flag")

        return RegionProfile(
            index=index,
            size=size,
            flags=flags,
            scratch=tuple(scratch),
            reset_values=tuple(reset_values),
        )

    def irq(self, table: Mapping[str, Any], where: str) -> IrqProfile:
        self.check_keys(table, where, self._IRQ)
        if "index" not in table:
            raise self.error(f"{where}.index", "required key is missing")
        return IrqProfile(
            index=self.uint(table["index"], f"{where}.index", _U32),
            count=self.uint(table["count"], f"{where}.count", _U32) if "count" in table else None,
            flags=self.flags(table["flags"], f"{where}.flags", IRQ_FLAGS)
            if "flags" in table
            else None,
        )

    def pair(self, value: Any, where: str, shape: str) -> tuple[Any, Any]:
        if not isinstance(value, list) or len(value) != 2:
            got = f"{len(value)} items" if isinstance(value, list) else _type_name(value)
            raise self.error(where, f"expected {shape}, got {got}")
        return value[0], value[1]

    def hex(self, value: Any, where: str) -> bytes:
        text = self.string(value, where)
        try:
            data = bytes.fromhex(text)  # also accepts spaces between bytes: "de ad be ef"
        except ValueError:
            raise self.error(where, f"not a hex byte string: {text!r}") from None
        if not data:
            raise self.error(where, "hex byte string is empty")
        return data

    def baseline(self, value: Any) -> dict[str, str]:
        table = self.table(value, "baseline")
        result: dict[str, str] = {}
        for case_id, reason in table.items():
            where = _join("baseline", case_id)
            if not case_id.strip():
                raise self.error(where, "case id is empty")
            reason = self.string(reason, where)
            if not reason.strip():
                raise self.error(where, "reason must not be empty")
            result[case_id] = reason
        return result

    def cross_check(
        self,
        device: DeviceExpectation,
        features: Mapping[str, bool],
        regions: Mapping[int, RegionProfile],
    ) -> None:
        if "reset" in features and device.flags is not None:
            has_reset = bool(device.flags & DEVICE_FLAGS["reset"])
            if features["reset"] != has_reset:
                raise self.error(
                    "features.reset",
                    f"{str(features['reset']).lower()} contradicts device.flags, which "
                    f"{'has' if has_reset else 'lacks'} the reset flag",
                )
        if features.get("mmap") is False:
            for region in regions.values():
                if region.flags is not None and region.flags & REGION_FLAGS["mmap"]:
                    raise self.error(
                        "features.mmap",
                        f"false contradicts region {region.index}, whose flags include mmap",
                    )
