"""Tests for pytest_vfiouser.profile: loading, validation and error messages."""

from __future__ import annotations

import pickle
import re
import textwrap
from pathlib import Path

import pytest

from pytest_vfiouser.device import (
    DEVICE_FLAGS,
    FEATURES,
    IRQ_FLAGS,
    REGION_FLAGS,
    DeviceExpectation,
    IrqProfile,
    Profile,
    ProfileError,
    RegionProfile,
    load_profile,
    parse_profile,
)
from pytest_vfiouser.device import _profile as profile_mod

EXAMPLE = Path(profile_mod.__file__).parent / "profiles" / "example.toml"

FULL = """
[profile]
name = "my-nvme"
spec = "0.9.2"

[device]
flags = ["pci", "reset"]
num_regions = 10
num_irqs = 5

[features]
mmap = true
sparse_mmap = false
reset = true
twin_socket = true

[[regions]]
index = 7
size = 256
flags = ["read", "write"]
reset_values = [[0, "f41a0011"], [4, "00 00"]]

[[regions]]
index = 0
size = 4096
flags = ["read", "write", "mmap"]
scratch = [[1024, 64], [0, 256]]

[[irqs]]
index = 2
count = 8
flags = ["eventfd", "maskable"]

[baseline]
"header/no-reply-on-error" = "known bug #12"
"""


def write(tmp_path: Path, text: str, name: str = "profile.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load_error(tmp_path: Path, text: str) -> str:
    """Load ``text`` as profile.toml and return the ProfileError message."""
    with pytest.raises(ProfileError) as info:
        load_profile(write(tmp_path, text))
    message = str(info.value)
    # Every message leads with the file, so a user knows which profile is wrong.
    assert message.startswith(str(tmp_path / "profile.toml") + ": ")
    return message[len(str(tmp_path / "profile.toml")) + 2 :]


# -- valid profiles ---------------------------------------------------------


def test_full_profile(tmp_path: Path) -> None:
    path = write(tmp_path, FULL)
    p = load_profile(path)
    assert p.name == "my-nvme"
    assert p.spec == "0.9.2"
    assert p.path == path
    assert p.device == DeviceExpectation(flags=3, num_regions=10, num_irqs=5)
    assert p.features == {"mmap": True, "sparse_mmap": False, "reset": True, "twin_socket": True}
    # Regions come out keyed and sorted by index, not in file order.
    assert list(p.regions) == [0, 7]
    assert p.regions[0] == RegionProfile(
        index=0, size=4096, flags=7, scratch=((1024, 64), (0, 256)), reset_values=()
    )
    assert p.regions[7].reset_values == ((0, bytes.fromhex("f41a0011")), (4, b"\0\0"))
    assert p.regions[7].scratch == ()
    assert p.irqs == {2: IrqProfile(index=2, count=8, flags=3)}
    assert p.baseline == {"header/no-reply-on-error": "known bug #12"}


def test_full_profile_queries(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, FULL))
    assert p.has_feature("mmap") is True
    assert p.has_feature("sparse_mmap") is False
    assert p.has_feature("dirty_pages") is None
    assert p.scratch_ranges(0) == ((1024, 64), (0, 256))
    assert p.scratch_ranges(7) == ()
    assert p.scratch_ranges(3) == ()  # region not in the profile
    entry = ("header/no-reply-on-error", "known bug #12")
    assert p.baseline_entry("header/no-reply-on-error") == entry
    assert p.baseline_entry("header/no-reply-on-error[region0]") == entry  # its family
    assert p.baseline_entry("header/other") is None
    assert p.baseline_entry("header/no-reply-on-error-too") is None


def test_baseline_entry_of_a_parametrization_wins_over_its_family() -> None:
    p = parse_profile({"baseline": {"dma/x": "family", "dma/x[b]": "one", "dma/y[a]": "only"}})
    assert p.baseline_entry("dma/x[a]") == ("dma/x", "family")
    assert p.baseline_entry("dma/x[b]") == ("dma/x[b]", "one")
    assert p.baseline_entry("dma/y[a]") == ("dma/y[a]", "only")
    assert p.baseline_entry("dma/y[b]") is None and p.baseline_entry("dma/y") is None


def test_has_feature_rejects_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown feature 'mmapp'"):
        Profile.empty().has_feature("mmapp")


def test_reset_feature_inferred_from_device_flags() -> None:
    assert parse_profile({"device": {"flags": ["pci", "reset"]}}).has_feature("reset") is True
    assert parse_profile({"device": {"flags": ["pci"]}}).has_feature("reset") is False
    assert parse_profile({"device": {"num_irqs": 1}}).has_feature("reset") is None


def test_empty_file(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, "", name="bare.toml"))
    assert p.name == "bare"  # defaults to the file stem
    assert p.spec is None
    assert p.device == DeviceExpectation()
    assert p.features == {} and p.regions == {} and p.irqs == {} and p.baseline == {}
    assert p.has_feature("reset") is None


def test_empty_profile() -> None:
    p = Profile.empty()
    assert p.path is None
    assert p.spec is None
    assert p.device == DeviceExpectation(None, None, None)
    for name in FEATURES:
        assert p.has_feature(name) is None
    assert p.scratch_ranges(0) == ()
    assert p.baseline_entry("anything") is None


def test_minimal_region_and_irq() -> None:
    p = parse_profile({"regions": [{"index": 3}], "irqs": [{"index": 0}]})
    assert p.name == "unnamed"
    assert p.regions == {3: RegionProfile(index=3)}
    assert p.irqs == {0: IrqProfile(index=0, count=None, flags=None)}


def test_integer_and_named_flags_agree() -> None:
    named = parse_profile(
        {
            "device": {"flags": ["reset", "pci"]},
            "regions": [{"index": 0, "flags": ["read", "write", "mmap", "caps"]}],
            "irqs": [{"index": 0, "flags": ["eventfd", "maskable", "automasked", "noresize"]}],
        }
    )
    numeric = parse_profile(
        {
            "device": {"flags": 3},
            "regions": [{"index": 0, "flags": 15}],
            "irqs": [{"index": 0, "flags": 15}],
        }
    )
    assert named == numeric
    assert named.device.flags == DEVICE_FLAGS["reset"] | DEVICE_FLAGS["pci"]
    assert named.regions[0].flags == sum(REGION_FLAGS.values())
    assert named.irqs[0].flags == sum(IRQ_FLAGS.values())


def test_flag_bit_values_match_spec() -> None:
    assert dict(DEVICE_FLAGS) == {"reset": 1, "pci": 2}
    assert dict(REGION_FLAGS) == {"read": 1, "write": 2, "mmap": 4, "caps": 8}
    assert dict(IRQ_FLAGS) == {"eventfd": 1, "maskable": 2, "automasked": 4, "noresize": 8}


def test_flag_bits_match_protocol_constants() -> None:
    # profile.py keeps its own tables (stdlib only); they must not drift from the codec.
    constants = pytest.importorskip("pytest_vfiouser.protocol")
    for table, enum_cls in [
        (DEVICE_FLAGS, constants.DeviceFlags),
        (REGION_FLAGS, constants.RegionFlags),
        (IRQ_FLAGS, constants.IrqInfoFlags),
    ]:
        assert dict(table) == {m.name.lower(): m.value for m in enum_cls}


def test_integer_flags_may_carry_unnamed_bits() -> None:
    # The integer form exists so a device with bits we do not name can be described.
    assert parse_profile({"regions": [{"index": 0, "flags": 0x30}]}).regions[0].flags == 0x30


def test_empty_flag_list_means_zero() -> None:
    assert parse_profile({"irqs": [{"index": 1, "flags": []}]}).irqs[1].flags == 0


def test_hex_literals_and_underscores(tmp_path: Path) -> None:
    p = load_profile(write(tmp_path, "[[regions]]\nindex = 0\nsize = 0x1_000\n"))
    assert p.regions[0].size == 4096


def test_adjacent_scratch_ranges_are_fine() -> None:
    p = parse_profile({"regions": [{"index": 0, "size": 8, "scratch": [[0, 4], [4, 4]]}]})
    assert p.scratch_ranges(0) == ((0, 4), (4, 4))


def test_u64_size_accepted() -> None:
    big = (1 << 64) - 1
    assert parse_profile({"regions": [{"index": 0, "size": big}]}).regions[0].size == big


def test_spec_0_9_1_accepted() -> None:
    assert parse_profile({"profile": {"spec": "0.9.1"}}).spec == "0.9.1"


def test_profile_pickles(tmp_path: Path) -> None:
    # xdist workers and report hooks may need to ship a profile across processes.
    p = load_profile(write(tmp_path, FULL))
    assert pickle.loads(pickle.dumps(p)) == p


def test_profile_is_frozen() -> None:
    p = Profile.empty()
    with pytest.raises(AttributeError):
        p.name = "x"  # type: ignore[misc]


def test_spec_conflicts() -> None:
    p = parse_profile({"features": {"twin_socket": True, "migration_v1": False, "mmap": True}})
    assert p.spec_conflicts("0.9.1") == ("twin_socket",)
    assert p.spec_conflicts("0.9.2") == ()


def test_example_profile_is_valid() -> None:
    p = load_profile(EXAMPLE)
    assert p.name == "example-pci-device"
    assert p.spec == "0.9.1"
    assert p.scratch_ranges(0)
    assert p.regions[0].reset_values
    assert p.irqs
    assert p.baseline


def test_example_documents_every_feature() -> None:
    text = EXAMPLE.read_text()
    for name in FEATURES:
        assert re.search(rf"^#\s+{name}\s", text, re.M), f"{name} not documented in example.toml"


def test_module_docstring_documents_every_key() -> None:
    doc = profile_mod.__doc__ or ""
    keys = [
        "[profile]", "name", "spec", "[device]", "flags", "num_regions", "num_irqs",
        "[features]", "[[regions]]", "index", "size", "scratch", "reset_values",
        "[[irqs]]", "count", "[baseline]",
    ]  # fmt: skip
    for key in keys:
        assert f"``{key}``" in doc, key


# -- file-level errors ------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ProfileError, match=r"nope\.toml: cannot read profile: No such file"):
        load_profile(path)


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(tmp_path)


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "profile.toml"
    path.write_bytes(b'[profile]\nname = "\xff"\n')
    with pytest.raises(ProfileError, match=r"profile\.toml: not UTF-8 text \(at line 2\)$"):
        load_profile(path)


def test_toml_syntax_error_has_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, '[profile]\nname = "x"\nspec 0.9.1\n')
    assert message.startswith("invalid TOML: ")
    assert "line 3" in message


def test_error_attributes(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile({"device": {"num_irqs": -1}}, source="x.toml")
    assert info.value.source == "x.toml"
    assert info.value.key == "device.num_irqs"
    assert info.value.detail == "must not be negative, got -1"
    assert str(info.value) == "x.toml: device.num_irqs: must not be negative, got -1"


def test_parse_profile_default_source() -> None:
    with pytest.raises(ProfileError, match=r"^<string>: profile\.spec: "):
        parse_profile({"profile": {"spec": "1.0"}})


# -- unknown tables and keys ------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[regoins]\n",
            "regoins: unknown key (did you mean 'regions'?); valid keys: "
            "baseline, device, features, irqs, profile, regions",
        ),
        ('name = "x"\n', "name: unknown key; valid keys: baseline, device,"),
        (
            "[profile]\nversion = 1\n",
            "profile.version: unknown key; valid keys: extends, hooks, name, spec",
        ),
        (
            "[device]\nnum_region = 3\n",
            "device.num_region: unknown key (did you mean 'num_regions'?); "
            "valid keys: flags, num_irqs, num_regions",
        ),
        (
            "[[regions]]\nindex = 0\n[[regions]]\nindex = 1\nsizes = 4\n",
            "regions[1].sizes: unknown key (did you mean 'size'?); "
            "valid keys: flags, index, reset_values, scratch, size",
        ),
        (
            "[[irqs]]\nindex = 0\nvectors = 4\n",
            "irqs[0].vectors: unknown key; valid keys: count, flags, index",
        ),
        (
            "[features]\nmmapp = true\n",
            "features.mmapp: unknown feature (did you mean 'mmap'?); known features: "
            + ", ".join(sorted(FEATURES)),
        ),
    ],
)
def test_unknown_keys(tmp_path: Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text).startswith(expected)


def test_unknown_key_with_odd_characters_is_quoted() -> None:
    with pytest.raises(ProfileError, match=r'^<string>: device\."a b": unknown key'):
        parse_profile({"device": {"a b": 1}})


# -- wrong types ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("profile = 3\n", "profile: expected a table, got integer"),
        ("[profile]\nname = 3\n", "profile.name: expected a string, got integer"),
        ("[profile]\nspec = 0.91\n", "profile.spec: expected a string, got float"),
        ('[device]\nnum_regions = "9"\n', "device.num_regions: expected an integer, got string"),
        ("[device]\nnum_irqs = true\n", "device.num_irqs: expected an integer, got boolean"),
        ("[device]\nnum_irqs = 1.0\n", "device.num_irqs: expected an integer, got float"),
        (
            '[device]\nflags = "pci"\n',
            "device.flags: expected an array of flag names or an integer, got string",
        ),
        ("[device]\nflags = [2]\n", "device.flags[0]: expected a string, got integer"),
        ('[features]\nmmap = "yes"\n', "features.mmap: expected true or false, got string"),
        ("[features]\nmmap = 1\n", "features.mmap: expected true or false, got integer"),
        ("[regions]\nindex = 0\n", "regions: expected an array of tables ([[regions]]), got table"),
        ("irqs = [1]\n", "irqs[0]: expected a table, got integer"),
        ('[[regions]]\nindex = "0"\n', "regions[0].index: expected an integer, got string"),
        ("[[regions]]\nindex = 0\nsize = 1.5\n", "regions[0].size: expected an integer, got float"),
        (
            "[[regions]]\nindex = 0\nscratch = [[0, 16], 32]\n",
            "regions[0].scratch[1]: expected [offset, length], got integer",
        ),
        (
            "[[regions]]\nindex = 0\nscratch = [[0, 16, 1]]\n",
            "regions[0].scratch[0]: expected [offset, length], got 3 items",
        ),
        (
            "[[regions]]\nindex = 0\nscratch = [[0, 1.5]]\n",
            "regions[0].scratch[0][1]: expected an integer, got float",
        ),
        (
            "[[regions]]\nindex = 0\nscratch = {a = 1}\n",
            "regions[0].scratch: expected an array, got table",
        ),
        (
            "[[regions]]\nindex = 0\nreset_values = [[0, 0]]\n",
            "regions[0].reset_values[0][1]: expected a string, got integer",
        ),
        (
            '[[regions]]\nindex = 0\nreset_values = [["00"]]\n',
            'regions[0].reset_values[0]: expected [offset, "hex bytes"], got 1 items',
        ),
        ("[[irqs]]\nindex = 0\ncount = [1]\n", "irqs[0].count: expected an integer, got array"),
        ('[baseline]\n"a/b" = 1\n', 'baseline."a/b": expected a string, got integer'),
    ],
)
def test_wrong_types(tmp_path: Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text) == expected


def test_parse_profile_rejects_non_table() -> None:
    with pytest.raises(ProfileError, match="expected a table, got array"):
        parse_profile([])  # type: ignore[arg-type]


# -- out-of-range numbers ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[device]\nnum_regions = -1\n", "device.num_regions: must not be negative, got -1"),
        ("[device]\nflags = -2\n", "device.flags: must not be negative, got -2"),
        ("[[regions]]\nindex = -1\n", "regions[0].index: must not be negative, got -1"),
        (
            "[[regions]]\nindex = 0\nsize = -4096\n",
            "regions[0].size: must not be negative, got -4096",
        ),
        (
            "[[regions]]\nindex = 0\nscratch = [[-1, 4]]\n",
            "regions[0].scratch[0][0]: must not be negative, got -1",
        ),
        (
            "[[regions]]\nindex = 0\nreset_values = [[-8, '00']]\n",
            "regions[0].reset_values[0][0]: must not be negative, got -8",
        ),
        ("[[irqs]]\nindex = 0\ncount = -3\n", "irqs[0].count: must not be negative, got -3"),
        (
            "[device]\nnum_irqs = 4294967296\n",
            "device.num_irqs: must fit in 32 bits, got 4294967296",
        ),
        (
            "[[regions]]\nindex = 0\nflags = 4294967296\n",
            "regions[0].flags: must fit in 32 bits, got 4294967296",
        ),
    ],
)
def test_out_of_range_numbers(tmp_path: Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text) == expected


def test_size_must_fit_in_64_bits() -> None:
    with pytest.raises(ProfileError, match=r"regions\[0\]\.size: must fit in 64 bits"):
        parse_profile({"regions": [{"index": 0, "size": 1 << 64}]})


# -- indexes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[[regions]]\nsize = 4\n", "regions[0].index: required key is missing"),
        ("[[irqs]]\ncount = 4\n", "irqs[0].index: required key is missing"),
        (
            "[[regions]]\nindex = 1\n[[regions]]\nindex = 0\n[[regions]]\nindex = 1\n",
            "regions[2].index: duplicate region index 1 (also regions[0])",
        ),
        (
            "[[irqs]]\nindex = 4\n[[irqs]]\nindex = 4\n",
            "irqs[1].index: duplicate IRQ index 4 (also irqs[0])",
        ),
        (
            "[device]\nnum_regions = 9\n[[regions]]\nindex = 9\n",
            "regions[0].index: region index 9 is not below device.num_regions = 9",
        ),
        (
            "[device]\nnum_irqs = 5\n[[irqs]]\nindex = 0\n[[irqs]]\nindex = 5\n",
            "irqs[1].index: IRQ index 5 is not below device.num_irqs = 5",
        ),
    ],
)
def test_index_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text) == expected


# -- flag names -------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[device]\nflags = ["pci", "msi"]\n',
            "device.flags[1]: unknown flag 'msi'; valid flags: reset, pci",
        ),
        (
            '[[regions]]\nindex = 0\nflags = ["READ"]\n',
            "regions[0].flags[0]: unknown flag 'READ'; valid flags: read, write, mmap, caps",
        ),
        (
            '[[irqs]]\nindex = 0\nflags = ["eventfd", "masked"]\n',
            "irqs[0].flags[1]: unknown flag 'masked'; "
            "valid flags: eventfd, maskable, automasked, noresize",
        ),
    ],
)
def test_unknown_flag_names(tmp_path: Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text) == expected


# -- scratch and reset_values ranges ----------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[[regions]]\nindex = 0\n[[regions]]\nindex = 1\n"
            "[[regions]]\nindex = 2\nscratch = [[0, 0]]\n",
            "regions[2].scratch[0]: length must be positive, got 0",
        ),
        (
            "[[regions]]\nindex = 0\nscratch = [[0, 128], [256, 16], [100, 50]]\n",
            "regions[0].scratch[2]: range [100, 50] overlaps scratch[0] [0, 128]",
        ),
        (
            # Reported at the later entry in the file, whatever the offsets' order.
            "[[regions]]\nindex = 0\nscratch = [[100, 50], [0, 128]]\n",
            "regions[0].scratch[1]: range [0, 128] overlaps scratch[0] [100, 50]",
        ),
        (
            "[[regions]]\nindex = 0\nscratch = [[8, 8], [8, 8]]\n",
            "regions[0].scratch[1]: range [8, 8] overlaps scratch[0] [8, 8]",
        ),
        (
            "[[regions]]\nindex = 0\nsize = 4096\nscratch = [[0, 16], [4000, 200]]\n",
            "regions[0].scratch[1]: range [4000, 200] ends at 4200, past the region size 4096",
        ),
        (
            "[[regions]]\nindex = 0\nsize = 0\nscratch = [[0, 1]]\n",
            "regions[0].scratch[0]: range [0, 1] ends at 1, past the region size 0",
        ),
        (
            "[[regions]]\nindex = 0\nsize = 8\nreset_values = [[6, '00000000']]\n",
            "regions[0].reset_values[0]: range [6, 4] ends at 10, past the region size 8",
        ),
        (
            "[[regions]]\nindex = 0\nreset_values = [[0, '00000000'], [2, '00']]\n",
            "regions[0].reset_values[1]: range [2, 1] overlaps reset_values[0] [0, 4]",
        ),
    ],
)
def test_range_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text) == expected


def test_scratch_and_reset_values_may_overlap_each_other() -> None:
    # Different purposes: a reset test writes scratch, resets, then reads the value.
    p = parse_profile(
        {"regions": [{"index": 0, "scratch": [[0, 4]], "reset_values": [[0, "00000000"]]}]}
    )
    assert p.regions[0].scratch == ((0, 4),)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("xyz0", "not a hex byte string: 'xyz0'"),
        ("abc", "not a hex byte string: 'abc'"),  # odd number of digits
        ("0x00", "not a hex byte string: '0x00'"),
        ("", "hex byte string is empty"),
    ],
)
def test_bad_hex(value: str, expected: str) -> None:
    data = {"regions": [{"index": 4, "reset_values": [[0, value]]}]}
    with pytest.raises(ProfileError) as info:
        parse_profile(data, source="p.toml")
    assert str(info.value) == f"p.toml: regions[0].reset_values[0][1]: {expected}"


# -- spec, baseline and cross-checks ----------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[profile]\nspec = "0.9"\n', "profile.spec: must be one of 0.9.1, 0.9.2, got '0.9'"),
        ('[profile]\nspec = "v0.9.1"\n', "profile.spec: must be one of 0.9.1, 0.9.2, got 'v0.9.1'"),
        ('[baseline]\n"a/b" = ""\n', 'baseline."a/b": reason must not be empty'),
        ('[baseline]\n"" = "why"\n', 'baseline."": case id is empty'),
        (
            '[profile]\nspec = "0.9.1"\n[features]\nwrite_multiple = true\n',
            "features.write_multiple: true, but the feature does not exist in profile.spec 0.9.1",
        ),
        (
            '[profile]\nspec = "0.9.2"\n[features]\nmigration_v1 = true\n',
            "features.migration_v1: true, but the feature does not exist in profile.spec 0.9.2",
        ),
        (
            '[device]\nflags = ["pci"]\n[features]\nreset = true\n',
            "features.reset: true contradicts device.flags, which lacks the reset flag",
        ),
        (
            "[device]\nflags = 3\n[features]\nreset = false\n",
            "features.reset: false contradicts device.flags, which has the reset flag",
        ),
        (
            '[features]\nmmap = false\n[[regions]]\nindex = 2\nflags = ["read", "mmap"]\n',
            "features.mmap: false contradicts region 2, whose flags include mmap",
        ),
        (
            '[[regions]]\nindex = 0\nflags = ["read"]\nscratch = [[0, 4]]\n',
            "regions[0].scratch: scratch ranges need a region with read and write flags",
        ),
        (
            "[[regions]]\nindex = 0\nflags = 2\nreset_values = [[0, '00']]\n",
            "regions[0].reset_values: reset_values need a region with the read flag",
        ),
    ],
)
def test_semantic_errors(tmp_path: Path, text: str, expected: str) -> None:
    assert load_error(tmp_path, text) == expected


def test_spec_only_features_may_be_false_in_other_spec() -> None:
    p = parse_profile({"profile": {"spec": "0.9.1"}, "features": {"twin_socket": False}})
    assert p.has_feature("twin_socket") is False


def test_hooks_module_name():
    assert parse_profile({"profile": {"hooks": "my_dev.vfu_hooks"}}).hooks == "my_dev.vfu_hooks"
    assert parse_profile({}).hooks is None


@pytest.mark.parametrize("bad", ["", "my dev", "1abc", "a..b", "a.b."])
def test_hooks_module_name_must_be_dotted(bad):
    with pytest.raises(ProfileError, match="profile.hooks: must be a dotted module name"):
        parse_profile({"profile": {"hooks": bad}})


# -- every error at once ----------------------------------------------------

MANY_ERRORS = """
[profile]
name = 3
spec = "1.0"
colour = "red"

[device]
num_regions = 2
num_irqs = -1

[features]
mmapp = true
reset = "yes"

[[regions]]
index = 0
size = 16
flags = ["read", "exec"]
scratch = [[0, 8], [4, 8], [12, 8]]
reset_values = [[0, "zz"], [-1, "00"]]

[[regions]]
index = 5

[[irqs]]
count = 1

[baseline]
"a/b" = ""
"""


def test_every_error_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, MANY_ERRORS)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    errors = [
        ("profile.colour", "unknown key; valid keys: extends, hooks, name, spec"),
        ("profile.name", "expected a string, got integer"),
        ("profile.spec", "must be one of 0.9.1, 0.9.2, got '1.0'"),
        ("device.num_irqs", "must not be negative, got -1"),
        (
            "features.mmapp",
            "unknown feature (did you mean 'mmap'?); known features: "
            + ", ".join(sorted(FEATURES)),
        ),
        ("features.reset", "expected true or false, got string"),
        ("regions[0].flags[1]", "unknown flag 'exec'; valid flags: read, write, mmap, caps"),
        ("regions[0].scratch[2]", "range [12, 8] ends at 20, past the region size 16"),
        ("regions[0].scratch[1]", "range [4, 8] overlaps scratch[0] [0, 8]"),
        ("regions[0].reset_values[0][1]", "not a hex byte string: 'zz'"),
        ("regions[0].reset_values[1][0]", "must not be negative, got -1"),
        ("regions[1].index", "region index 5 is not below device.num_regions = 2"),
        ("irqs[0].index", "required key is missing"),
        ('baseline."a/b"', "reason must not be empty"),
    ]
    assert list(info.value.errors) == errors
    assert (info.value.key, info.value.detail) == errors[0]  # the first, as for one error
    # The message: how many, then one line an error with the file, the key and what is wrong.
    assert str(info.value).splitlines() == [f"{path}: {len(errors)} errors"] + [
        f"{path}: {key}: {detail}" for key, detail in errors
    ]


def test_every_overlap_is_reported() -> None:
    # [50, 4] lies inside [0, 100] but not next to it by offset.
    with pytest.raises(ProfileError) as info:
        parse_profile({"regions": [{"index": 0, "scratch": [[0, 100], [10, 5], [50, 4]]}]})
    assert [key for key, _ in info.value.errors] == [
        "regions[0].scratch[1]",
        "regions[0].scratch[2]",
    ]
    assert info.value.errors[1][1] == "range [50, 4] overlaps scratch[0] [0, 100]"


def test_one_error_is_one_line() -> None:
    with pytest.raises(ProfileError) as info:
        parse_profile({"device": {"num_irqs": -1}}, source="x.toml")
    assert info.value.errors == (("device.num_irqs", "must not be negative, got -1"),)
    assert str(info.value) == "x.toml: device.num_irqs: must not be negative, got -1"


# -- extends ----------------------------------------------------------------


def test_extends_overrides_keys_replaces_regions_by_index_and_drops_those_past_the_end(
    tmp_path: Path,
):
    (tmp_path / "base.toml").write_text(
        textwrap.dedent(
            """
            [profile]
            name = "base"
            [device]
            num_regions = 10
            num_irqs = 2
            [features]
            reset = true
            mmap = true
            [[regions]]
            index = 1
            size = 0x1000
            [[regions]]
            index = 2
            size = 0x2000
            [[regions]]
            index = 9
            size = 0x20000
            """
        )
    )
    (tmp_path / "next.toml").write_text(
        textwrap.dedent(
            """
            [profile]
            extends = "base.toml"
            [device]
            num_regions = 9
            [features]
            mmap = false
            [[regions]]
            index = 2
            size = 0x4000
            """
        )
    )
    p = load_profile(tmp_path / "next.toml")
    assert p.name == "base" and p.device.num_regions == 9 and p.device.num_irqs == 2
    assert p.has_feature("reset") is True and p.has_feature("mmap") is False
    assert {i: r.size for i, r in p.regions.items()} == {1: 0x1000, 2: 0x4000}


def test_extends_errors_name_the_key(tmp_path: Path):
    (tmp_path / "a.toml").write_text('[profile]\nextends = "profile.toml"\n')
    cycle = f"{tmp_path / 'a.toml'}: profile.extends: profile.toml extends this profile again"
    with pytest.raises(ProfileError, match=re.escape(cycle)):
        load_profile(write(tmp_path, '[profile]\nextends = "a.toml"\n'))
    assert load_error(tmp_path, "[profile]\nextends = 3\n").startswith(
        "profile.extends: must be a string, got integer"
    )
    with pytest.raises(ProfileError, match="cannot read profile"):
        load_profile(write(tmp_path, '[profile]\nextends = "nope.toml"\n'))
