"""JSON values and the VERSION capabilities object: known keys with valid values,
plus unknown keys that a peer must carry through."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from ._integers import ints_between, powers_of_two, u64s

KNOWN_CAPABILITIES = frozenset(
    {
        "max_msg_fds",
        "max_data_xfer_size",
        "migration",
        "max_dma_maps",
        "pgsizes",
        "twin_socket",
        "write_multiple",
    }
)


def json_scalars() -> SearchStrategy:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(1 << 64), 1 << 64),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=16),
    )


def json_values(max_leaves: int = 8) -> SearchStrategy:
    """Anything json.dumps writes and json.loads reads back equal (no NaN)."""
    return st.recursive(
        json_scalars(),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def _with_unknown_keys(
    known: SearchStrategy[dict], reserved: frozenset[str]
) -> SearchStrategy[dict]:
    """``known`` plus keys outside ``reserved`` with arbitrary JSON values."""
    unknown = st.dictionaries(
        st.text(max_size=12).filter(lambda k: k not in reserved), json_values(), max_size=3
    )
    return st.builds(lambda extra, known: {**extra, **known}, unknown, known)


def migration_capabilities() -> SearchStrategy[dict]:
    """The 0.9.1 ``migration`` capability object."""
    return _with_unknown_keys(
        st.fixed_dictionaries({}, optional={"pgsize": powers_of_two()}), frozenset({"pgsize"})
    )


def twin_socket_capabilities() -> SearchStrategy[dict]:
    """The 0.9.2 ``twin_socket`` capability object."""
    return _with_unknown_keys(
        st.fixed_dictionaries({}, optional={"supported": st.booleans(), "fd_index": u64s()}),
        frozenset({"supported", "fd_index"}),
    )


def capabilities() -> SearchStrategy[dict]:
    """A valid ``capabilities`` object: any subset of the known keys, plus unknown keys."""
    return _with_unknown_keys(
        st.fixed_dictionaries(
            {},
            optional={
                "max_msg_fds": u64s(),
                "max_data_xfer_size": ints_between(1, (1 << 64) - 1),
                "migration": migration_capabilities(),
                "max_dma_maps": u64s(),
                "pgsizes": ints_between(1, (1 << 64) - 1),
                "twin_socket": twin_socket_capabilities(),
                "write_multiple": st.booleans(),
            },
        ),
        KNOWN_CAPABILITIES,
    )


def version_json() -> SearchStrategy[dict]:
    """The version data object: optional ``capabilities`` and unknown top-level keys."""
    return _with_unknown_keys(
        st.fixed_dictionaries({}, optional={"capabilities": capabilities()}),
        frozenset({"capabilities"}),
    )
