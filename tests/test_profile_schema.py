"""The JSON Schema of device profiles (profiles/profile.schema.json) and the parser agree.

A profile the parser accepts validates; one the schema rejects, the parser rejects;
what the schema lets through and the parser does not is one of the parser's
cross-checks (which the schema does not state). Its keys, flag names, features and
revisions are the parser's.
"""

from __future__ import annotations

import copy
import sys
from importlib.resources import files
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pytest_vfiouser.device import (
    DEVICE_FLAGS,
    FEATURES,
    IRQ_FLAGS,
    REGION_FLAGS,
    ProfileError,
    parse_profile,
    profile_schema,
)
from pytest_vfiouser.device import _profile as profile_mod
from pytest_vfiouser.protocol import REVISIONS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a test dependency")

REPO = Path(__file__).resolve().parents[1]
PROFILES = [
    Path(profile_mod.__file__).parent / "profiles" / "example.toml",
    REPO / "reference_server" / "profiles" / "default.toml",
]
Parser = profile_mod._Parser
# What only the parser checks: how its messages for those say so.
CROSS_CHECKS = (
    "overlaps",
    "past the region size",
    "duplicate",
    "is not below",
    "does not exist in profile.spec",
    "contradicts",
    "need a region with",
)


@pytest.fixture(scope="module")
def validator():
    schema = profile_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_is_shipped_in_the_package():
    resource = files("pytest_vfiouser.device").joinpath("profiles/profile.schema.json")
    assert resource.is_file()
    schema = profile_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"].endswith("/profile.schema.json")


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_the_shipped_profiles_validate(validator, path):
    data = tomllib.loads(path.read_text())
    assert not list(validator.iter_errors(data))
    parse_profile(data)  # and the parser takes them


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_the_shipped_profiles_point_editors_at_the_schema(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("#:schema ")  # Taplo's header directive
    schema = files("pytest_vfiouser.device").joinpath("profiles/profile.schema.json")
    # The directive names the schema beside the profile in the source tree (where editors
    # open it), which is the schema installed with the package.
    pointed = path.parent / first.removeprefix("#:schema ")
    assert pointed.read_text() == schema.read_text()


def test_the_schema_knows_the_parsers_keys():
    schema = profile_schema()
    defs = schema["$defs"]
    top = schema["properties"]
    assert set(top) == Parser._TOP
    assert set(top["profile"]["properties"]) == Parser._PROFILE
    assert set(top["device"]["properties"]) == Parser._DEVICE
    assert set(defs["region"]["properties"]) == Parser._REGION
    assert set(defs["irq"]["properties"]) == Parser._IRQ
    assert set(top["features"]["properties"]) == FEATURES
    assert top["profile"]["properties"]["spec"]["enum"] == list(REVISIONS)
    hooks = top["profile"]["properties"]["hooks"]["pattern"]
    assert hooks == f"^{profile_mod.MODULE_NAME.pattern}$"
    for name, names in (
        ("device_flags", DEVICE_FLAGS),
        ("region_flags", REGION_FLAGS),
        ("irq_flags", IRQ_FLAGS),
    ):
        assert defs[name]["anyOf"][1]["items"]["enum"] == list(names), name
    # Strict like the parser: an unknown key anywhere is an error.
    for table in (schema, top["profile"], top["device"], top["features"]):
        assert table["additionalProperties"] is False
    assert defs["region"]["additionalProperties"] is False
    assert defs["irq"]["additionalProperties"] is False


# -- the parser and the schema on made-up profiles, valid and not

# A valid-looking profile (its cross-checks may still fail: overlapping ranges, an index
# beyond num_regions, a feature against the spec), then none, one or two values replaced
# by something wrong, or a key added that no table has.

_SMALL = st.integers(0, 12)
_HEXES = ["00", "de ad be ef", " 0a0b\t", "00000000"]


def _names(names) -> st.SearchStrategy:
    return st.one_of(st.integers(0, 15), st.lists(st.sampled_from(list(names)), max_size=3))


def _optional(**fields: st.SearchStrategy) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional=fields)


def _indexed(**fields: st.SearchStrategy) -> st.SearchStrategy:
    return st.lists(st.fixed_dictionaries({"index": _SMALL}, optional=fields), max_size=3)


_VALID = _optional(
    profile=_optional(
        name=st.text(max_size=4),
        spec=st.sampled_from(REVISIONS),
        hooks=st.sampled_from(["m", "my.hooks"]),
    ),
    device=_optional(flags=_names(DEVICE_FLAGS), num_regions=_SMALL, num_irqs=_SMALL),
    features=st.dictionaries(st.sampled_from(sorted(FEATURES)), st.booleans(), max_size=4),
    regions=_indexed(
        size=st.integers(0, 64),
        flags=_names(REGION_FLAGS),
        scratch=st.lists(st.tuples(st.integers(0, 64), st.integers(1, 32)).map(list), max_size=3),
        reset_values=st.lists(
            st.tuples(st.integers(0, 64), st.sampled_from(_HEXES)).map(list), max_size=3
        ),
    ),
    irqs=_indexed(count=_SMALL, flags=_names(IRQ_FLAGS)),
    baseline=st.dictionaries(st.sampled_from(["a/b", "x/y[1]"]), st.just("why"), max_size=2),
)
_WRONG = st.one_of(
    st.booleans(),
    # not 1.0: JSON has no float that is not a number, and JSON Schema's "integer" is any
    # number without a fraction; TOML (and the parser) tell 1.0 from 1
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer()),
    st.sampled_from([-1, 2**32, 2**64, 0, 1]),
    # no trailing newline: Python's "$" (the validator's, for hooks) would take it
    st.sampled_from(["", " ", "zz", "0x00", "0 0", "abc", "a..b", "1.0", "bogus", "pci"]),
    st.just([]),
    st.just({}),
    st.lists(st.integers(-1, 3), max_size=3),
)


def _places(value, out: list) -> list:
    """Every (container, key) of ``value``, outermost first."""
    items = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in list(items):
        out.append((value, key))
        if isinstance(item, (dict, list)):
            _places(item, out)
    return out


@st.composite
def _profiles(draw) -> dict:
    data = copy.deepcopy(draw(_VALID))
    for _ in range(draw(st.integers(0, 2))):
        places = _places(data, [])
        tables = [data] + [c[k] for c, k in places if isinstance(c[k], dict)]
        if places and draw(st.booleans()):
            container, key = draw(st.sampled_from(places))
            container[key] = draw(_WRONG)
        else:
            draw(st.sampled_from(tables))[draw(st.sampled_from(["bogus", "sizes", ""]))] = 1
    return data


# Each rule's edge, whatever the random ones find.
_EDGES = [
    {"regions": [{"index": 0, "scratch": [[0, 0]]}]},
    {"regions": [{"index": 0, "scratch": [[0, 1, 2]]}]},
    {"regions": [{"index": 0, "scratch": [[2**64 - 1, 2**64 - 1]]}]},
    {"regions": [{"index": 0, "reset_values": [[0, ""]]}]},
    {"regions": [{"index": 0, "reset_values": [[0, "0 0"]]}]},
    {"regions": [{"index": 0, "reset_values": [[0, " 0a\n0b "]]}]},
    {"regions": [{"index": 0, "size": 2**64}]},
    {"regions": [{"index": 2**32 - 1, "size": 2**64 - 1}]},
    {"regions": [{"size": 1}]},
    {"irqs": [{"count": 1}]},
    {"device": {"num_irqs": 2**32}},
    {"device": {"flags": ["pci", "bogus"]}},
    {"device": {"flags": 2**32 - 1}},
    {"baseline": {" ": "why"}},
    {"baseline": {"a/b": " "}},
    {"profile": {"hooks": "a."}},
    {"profile": {"spec": "0.9"}},
    {"features": {"mmap": 1}},
]


@pytest.mark.parametrize("data", _EDGES, ids=repr)
def test_the_schema_and_the_parser_agree_on_the_edges(validator, data):
    _agree(validator, data)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_profiles())
def test_the_schema_and_the_parser_agree(validator, data):
    _agree(validator, data)


def _agree(validator, data) -> None:
    valid = validator.is_valid(data)
    try:
        parse_profile(data)
    except ProfileError as e:
        if valid:  # then only a cross-check may have failed
            assert all(any(c in detail for c in CROSS_CHECKS) for _, detail in e.errors), e.errors
    else:
        assert valid, [error.message for error in validator.iter_errors(data)]
