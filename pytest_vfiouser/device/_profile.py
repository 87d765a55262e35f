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
    ``extends`` (string) Path of a profile this one starts from (relative to
              this file): its tables' keys are overridden by this file's, its
              ``[[regions]]`` and ``[[irqs]]`` replaced by index, and those at or
              past this profile's ``num_regions`` / ``num_irqs`` left out. One
              device's profiles at two revisions state what differs only.
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
file, not the region with index 2.  Every error of the file is in it, one a
line, not only the first (``ProfileError.errors``).

The same schema as JSON Schema (2020-12), for editors: ``profiles/profile.schema.json``
(the cross-checks above are the parser's alone).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.resources import files
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
    "profile_schema",
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
    """An unreadable or invalid profile: every error found in it.

    ``source`` is the file (or ``"<string>"``); ``key`` (the dotted key path, ``None``
    for file-level problems) and ``detail`` (the bare message) are the first error's;
    ``errors`` holds every ``(key, detail)``, the first one and ``also``'s, in the order
    of the file. The message is ``source: key: detail`` for one error; for several, a
    line ``source: N errors`` and then one such line an error.
    """

    def __init__(
        self,
        source: str,
        key: str | None,
        detail: str,
        also: Sequence[tuple[str | None, str]] = (),
    ) -> None:
        self.source = source
        self.key = key
        self.detail = detail
        self.errors: tuple[tuple[str | None, str], ...] = ((key, detail), *also)
        lines = [f"{f'{source}: {k}' if k else source}: {d}" for k, d in self.errors]
        if len(lines) > 1:
            lines.insert(0, f"{source}: {len(lines)} errors")
        super().__init__("\n".join(lines))


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
    data = _extended(_read_toml(path), Path(path), frozenset())
    return parse_profile(data, source=os.fspath(path), path=Path(path))


def _extended(data: dict, path: Path, seen: frozenset[Path]) -> dict:
    """``data`` merged over the profile its ``profile.extends`` names (see the schema)."""
    meta = data.get("profile")
    base = meta.get("extends") if isinstance(meta, dict) else None
    if base is None:
        return data
    source = os.fspath(path)
    if not isinstance(base, str):
        raise ProfileError(source, "profile.extends", f"must be a string, got {_type_name(base)}")
    base_path = (path.parent / base).resolve()
    if base_path in seen | {path.resolve()}:
        raise ProfileError(source, "profile.extends", f"{base} extends this profile again")
    under = _extended(_read_toml(base_path), base_path, seen | {path.resolve()})
    merged: dict = {}
    for key in under.keys() | data.keys():
        low, high = under.get(key), data.get(key)
        if key in ("regions", "irqs") and isinstance(low, list) and isinstance(high, list):
            by_index = {_index_of(e): e for e in low}
            by_index.update({_index_of(e): e for e in high})
            merged[key] = list(by_index.values())
        elif isinstance(low, dict) and isinstance(high, dict):
            merged[key] = {**low, **high}
        else:
            merged[key] = high if key in data else low
    merged["profile"] = {k: v for k, v in merged["profile"].items() if k != "extends"}
    device = merged.get("device", {})
    for key, bound in (("regions", "num_regions"), ("irqs", "num_irqs")):
        n = device.get(bound) if isinstance(device, dict) else None
        if isinstance(n, int) and isinstance(merged.get(key), list):
            merged[key] = [e for e in merged[key] if not (_index_of(e) or 0) >= n]
    return merged


def _index_of(entry: Any) -> Any:
    index = entry.get("index") if isinstance(entry, dict) else None
    return index if isinstance(index, int) else id(entry)  # the parser says what is wrong


def _read_toml(path: str | os.PathLike[str]) -> dict:
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
    return data


def parse_profile(
    data: Mapping[str, Any], source: str = "<string>", path: Path | None = None
) -> Profile:
    """Validate already-decoded TOML data; raise ProfileError on any problem."""
    return _Parser(source).profile(data, path)


def profile_schema() -> dict:
    """The JSON Schema of a profile (``profiles/profile.schema.json``, shipped in the
    package), for editors; the cross-checks are the parser's alone."""
    text = files(__package__).joinpath("profiles").joinpath("profile.schema.json").read_text()
    return json.loads(text)


# ---------------------------------------------------------------------------
# Validation.  Each helper takes the key path of the value it checks so that
# every error can point at the exact spot in the file.


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")  # profile.hooks


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


class _Invalid(Exception):
    """One thing wrong at one key (the parser collects them into one ProfileError)."""

    def __init__(self, key: str | None, detail: str) -> None:
        super().__init__(key, detail)
        self.key = key
        self.detail = detail


class _Parser:
    """Validates a profile and collects every error: a helper raises ``_Invalid`` for the
    value it checks; ``attempt`` records it and carries on with the next one, so one
    ProfileError lists everything wrong with the file. A value found wrong is left out
    of what the parser builds (and of the checks that need it)."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[_Invalid] = []

    def error(self, key: str | None, detail: str) -> _Invalid:
        return _Invalid(key, detail)

    def attempt(self, check: Callable[..., Any], *args: Any) -> Any:
        """``check(*args)``, or None when it found something wrong (recorded)."""
        try:
            return check(*args)
        except _Invalid as e:
            self.errors.append(e)
            return None

    def fail(self, key: str | None, detail: str) -> None:
        """Record an error and carry on."""
        self.errors.append(_Invalid(key, detail))

    def raise_errors(self) -> None:
        if self.errors:
            first, *more = self.errors
            raise ProfileError(
                self.source, first.key, first.detail, also=[(e.key, e.detail) for e in more]
            )

    # -- primitives ---------------------------------------------------------

    def check_keys(self, table: Mapping[str, Any], where: str, valid: frozenset[str]) -> None:
        for key in table:
            if key not in valid:
                hint = difflib.get_close_matches(key, sorted(valid), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.fail(
                    _join(where, key),
                    f"unknown key{extra}; valid keys: {', '.join(sorted(valid))}",
                )

    def field(
        self,
        table: Mapping[str, Any],
        key: str,
        where: str,
        check: Callable[[Any, str], Any],
        required: bool = False,
    ) -> Any:
        """``check(table[key], its path)``; None when it is missing or wrong (recorded)."""
        path = _join(where, key)
        if key not in table:
            if required:
                self.fail(path, "required key is missing")
            return None
        return self.attempt(check, table[key], path)

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

    def u32(self, value: Any, where: str) -> int:
        return self.uint(value, where, _U32)

    def u64(self, value: Any, where: str) -> int:
        return self.uint(value, where, _U64)

    def flags(self, value: Any, where: str, names: Mapping[str, int]) -> int:
        """A flag field: a list of names or an integer mask (for bits we do not name)."""
        if isinstance(value, int) and not isinstance(value, bool):
            return self.uint(value, where, _U32)
        if not isinstance(value, list):
            raise self.error(
                where, f"expected an array of flag names or an integer, got {_type_name(value)}"
            )
        mask = 0
        wrong = []
        for i, name in enumerate(value):
            item = f"{where}[{i}]"
            if not isinstance(name, str):
                wrong.append(self.error(item, f"expected a string, got {_type_name(name)}"))
            elif name not in names:
                wrong.append(
                    self.error(item, f"unknown flag {name!r}; valid flags: {', '.join(names)}")
                )
            else:
                mask |= names[name]
        if wrong:
            *others, last = wrong
            self.errors += others
            raise last
        return mask

    def ranges(
        self, entries: list[tuple[int, int] | None], where: str, what: str, size: int | None
    ) -> None:
        """Ranges (offset, length) in file order (None: one found wrong): check the size
        bound and that none overlaps another."""
        for i, entry in enumerate(entries):
            if entry is None:
                continue
            offset, length = entry
            if size is not None and offset + length > size:
                self.fail(
                    f"{where}[{i}]",
                    f"range [{offset}, {length}] ends at {offset + length}, "
                    f"past the region size {size}",
                )

        def end(i: int) -> int:
            return entries[i][0] + entries[i][1]

        # By offset, each against the one before it that ends last: every overlap, each
        # reported at the range later in the file.
        order = sorted(
            (i for i, e in enumerate(entries) if e is not None), key=lambda i: entries[i]
        )
        furthest = None
        reported = set()
        for i in order:
            if furthest is not None and entries[i][0] < end(furthest):
                later, earlier = max(i, furthest), min(i, furthest)
                if later not in reported:
                    reported.add(later)
                    self.fail(
                        f"{where}[{later}]",
                        f"range {list(entries[later])} overlaps {what}[{earlier}] "
                        f"{list(entries[earlier])}",
                    )
            if furthest is None or end(i) > end(furthest):
                furthest = i

    # -- tables -------------------------------------------------------------

    _TOP = frozenset({"profile", "device", "features", "regions", "irqs", "baseline"})
    _PROFILE = frozenset({"name", "spec", "hooks", "extends"})
    _DEVICE = frozenset({"flags", "num_regions", "num_irqs"})
    _REGION = frozenset({"index", "size", "flags", "scratch", "reset_values"})
    _IRQ = frozenset({"index", "count", "flags"})

    def profile(self, data: Any, path: Path | None) -> Profile:
        data = self.attempt(self.table, data, "")
        self.raise_errors()  # not a table: nothing else to say
        self.check_keys(data, "", self._TOP)

        meta = self.attempt(self.table, data.get("profile", {}), "profile") or {}
        self.check_keys(meta, "profile", self._PROFILE)
        default_name = path.stem if path is not None else "unnamed"
        name = self.attempt(self.string, meta.get("name", default_name), "profile.name")
        spec = self.field(meta, "spec", "profile", self.spec)
        hooks = self.field(meta, "hooks", "profile", self.hooks)

        device = self.device(data.get("device", {}))
        features = self.features(data.get("features", {}))
        regions = self.indexed(
            data, "regions", "region", self.region, device.num_regions, "device.num_regions"
        )
        irqs = self.indexed(data, "irqs", "IRQ", self.irq, device.num_irqs, "device.num_irqs")
        baseline = self.baseline(data.get("baseline", {}))
        self.cross_check(device, features, regions)

        profile = Profile(
            name=name if name is not None else default_name,
            spec=spec,
            device=device,
            features=features,
            regions=regions,
            irqs=irqs,
            baseline=baseline,
            path=path,
            hooks=hooks,
        )
        if spec is not None:
            for conflict in profile.spec_conflicts(spec):
                self.fail(
                    f"features.{conflict}",
                    f"true, but the feature does not exist in profile.spec {spec}",
                )
        self.raise_errors()
        return profile

    def spec(self, value: Any, where: str) -> str:
        spec = self.string(value, where)
        if spec not in REVISIONS:
            raise self.error(where, f"must be one of {', '.join(REVISIONS)}, got {spec!r}")
        return spec

    def hooks(self, value: Any, where: str) -> str:
        hooks = self.string(value, where)
        if not MODULE_NAME.fullmatch(hooks):
            raise self.error(where, f"must be a dotted module name, got {hooks!r}")
        return hooks

    def device(self, value: Any) -> DeviceExpectation:
        table = self.attempt(self.table, value, "device") or {}
        self.check_keys(table, "device", self._DEVICE)
        return DeviceExpectation(
            flags=self.field(table, "flags", "device", self.device_flags),
            num_regions=self.field(table, "num_regions", "device", self.u32),
            num_irqs=self.field(table, "num_irqs", "device", self.u32),
        )

    def device_flags(self, value: Any, where: str) -> int:
        return self.flags(value, where, DEVICE_FLAGS)

    def features(self, value: Any) -> dict[str, bool]:
        table = self.attempt(self.table, value, "features") or {}
        result: dict[str, bool] = {}
        for key, flag in table.items():
            where = _join("features", key)
            if key not in FEATURES:
                hint = difflib.get_close_matches(key, sorted(FEATURES), n=1)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                self.fail(
                    where, f"unknown feature{extra}; known features: {', '.join(sorted(FEATURES))}"
                )
            elif not isinstance(flag, bool):
                self.fail(where, f"expected true or false, got {_type_name(flag)}")
            else:
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
            self.fail(key, f"expected an array of tables ([[{key}]]), got {_type_name(entries)}")
            return {}
        result: dict[int, Any] = {}
        first_seen: dict[int, int] = {}
        for i, entry in enumerate(entries):
            where = f"{key}[{i}]"
            table = self.attempt(self.table, entry, where)
            item = parse_one(table, where) if table is not None else None
            if item is None:
                continue
            if item.index in first_seen:
                self.fail(
                    f"{where}.index",
                    f"duplicate {what} index {item.index} (also {key}[{first_seen[item.index]}])",
                )
                continue
            if limit is not None and item.index >= limit:
                self.fail(
                    f"{where}.index",
                    f"{what} index {item.index} is not below {limit_key} = {limit}",
                )
            first_seen[item.index] = i
            result[item.index] = item
        return dict(sorted(result.items()))

    def region(self, table: Mapping[str, Any], where: str) -> RegionProfile | None:
        """The region, or None when its index is missing or wrong (its other keys are still
        checked)."""
        self.check_keys(table, where, self._REGION)
        index = self.field(table, "index", where, self.u32, required=True)
        size = self.field(table, "size", where, self.u64)
        flags = self.field(table, "flags", where, self.region_flags)

        scratch_key = f"{where}.scratch"
        scratch = [
            self.scratch_range(entry, f"{scratch_key}[{i}]")
            for i, entry in enumerate(self.field(table, "scratch", where, self.array) or [])
        ]
        self.ranges(scratch, scratch_key, "scratch", size)

        reset_key = f"{where}.reset_values"
        reset_values = [
            self.reset_value(entry, f"{reset_key}[{i}]")
            for i, entry in enumerate(self.field(table, "reset_values", where, self.array) or [])
        ]
        self.ranges(
            [(entry[0], len(entry[1])) if entry else None for entry in reset_values],
            reset_key,
            "reset_values",
            size,
        )

        if flags is not None:
            # The profile contradicting itself is a profile bug; say so now rather
            # than have a test fail mysteriously later.
            rw = REGION_FLAGS["read"] | REGION_FLAGS["write"]
            if scratch and flags & rw != rw:
                self.fail(scratch_key, "scratch ranges need a region with read and write flags")
            if reset_values and not flags & REGION_FLAGS["read"]:
                self.fail(reset_key, "reset_values need a region with the read flag")

        if index is None or None in scratch or None in reset_values:
            return None
        return RegionProfile(
            index=index,
            size=size,
            flags=flags,
            scratch=tuple(scratch),
            reset_values=tuple(reset_values),
        )

    def region_flags(self, value: Any, where: str) -> int:
        return self.flags(value, where, REGION_FLAGS)

    def scratch_range(self, entry: Any, where: str) -> tuple[int, int] | None:
        pair = self.attempt(self.pair, entry, where, "[offset, length]")
        if pair is None:
            return None
        offset = self.attempt(self.u64, pair[0], f"{where}[0]")
        length = self.attempt(self.u64, pair[1], f"{where}[1]")
        if length == 0:
            self.fail(where, f"length must be positive, got {length}")
            return None
        return (offset, length) if offset is not None and length is not None else None

    def reset_value(self, entry: Any, where: str) -> tuple[int, bytes] | None:
        pair = self.attempt(self.pair, entry, where, '[offset, "hex bytes"]')
        if pair is None:
            return None
        offset = self.attempt(self.u64, pair[0], f"{where}[0]")
        data = self.attempt(self.hex, pair[1], f"{where}[1]")
        return (offset, data) if offset is not None and data is not None else None

    def irq(self, table: Mapping[str, Any], where: str) -> IrqProfile | None:
        self.check_keys(table, where, self._IRQ)
        index = self.field(table, "index", where, self.u32, required=True)
        count = self.field(table, "count", where, self.u32)
        flags = self.field(table, "flags", where, self.irq_flags)
        if index is None:
            return None
        return IrqProfile(index=index, count=count, flags=flags)

    def irq_flags(self, value: Any, where: str) -> int:
        return self.flags(value, where, IRQ_FLAGS)

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
        table = self.attempt(self.table, value, "baseline") or {}
        result: dict[str, str] = {}
        for case_id, reason in table.items():
            where = _join("baseline", case_id)
            if not case_id.strip():
                self.fail(where, "case id is empty")
                continue
            reason = self.attempt(self.string, reason, where)
            if reason is None:
                continue
            if not reason.strip():
                self.fail(where, "reason must not be empty")
                continue
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
                self.fail(
                    "features.reset",
                    f"{str(features['reset']).lower()} contradicts device.flags, which "
                    f"{'has' if has_reset else 'lacks'} the reset flag",
                )
        if features.get("mmap") is False:
            for region in regions.values():
                if region.flags is not None and region.flags & REGION_FLAGS["mmap"]:
                    self.fail(
                        "features.mmap",
                        f"false contradicts region {region.index}, whose flags include mmap",
                    )
