"""Migration state machines: the 0.9.1 transition table and the 0.9.2 (v2) paths.

Both are checked against the spec's text transcribed here, not against the
codec's own tables: the 0.9.1 "Valid state transitions" matrix and device
state table, and 0.9.2's "Direct State Transitions" list with the rules of
"Complex State Transitions" (shortest path; saving-group states never
interior; STOP_COPY -> PRE_COPY refused; without PRE_COPY, arcs touching it go).
"""

from __future__ import annotations

import itertools

import pytest

from pytest_vfiouser import protocol as p
from pytest_vfiouser.protocol import MigrationStateV1 as V1
from pytest_vfiouser.protocol import MigState as S

# ---- 0.9.1

# "The following device states are defined": _RESUMING _SAVING _RUNNING bits.
V1_STATE_TABLE = """
0 0 0 Stopped
0 0 1 Running
0 1 0 Stop-and-copy
0 1 1 Pre-copy
1 0 0 Resuming
1 0 1 Invalid
1 1 0 Error
1 1 1 Invalid
"""

# "Valid state transitions are shown in the following table" (row: from, column: to).
V1_TRANSITION_TABLE = """
               Stopped Running Stop-and-copy Pre-copy Resuming
Stopped           -       1          0          0        0
Running           1       -          1          1        1
Stop-and-copy     1       1          -          0        0
Pre-copy          0       0          1          -        0
Resuming          0       1          0          0        -
"""

V1_BY_NAME = {
    "Stopped": V1.STOPPED,
    "Running": V1.RUNNING,
    "Stop-and-copy": V1.STOP_AND_COPY,
    "Pre-copy": V1.PRE_COPY,
    "Resuming": V1.RESUMING,
}


def _parse_v1_table() -> set[tuple[int, int]]:
    lines = V1_TRANSITION_TABLE.strip().splitlines()
    columns = [V1_BY_NAME[name] for name in lines[0].split()]
    valid = set()
    for line in lines[1:]:
        name, *cells = line.split()
        assert len(cells) == len(columns)
        for to, cell in zip(columns, cells, strict=True):
            if cell == "1":
                valid.add((V1_BY_NAME[name], to))
            else:
                assert cell in ("0", "-")
    return valid


SPEC_V1_TRANSITIONS = _parse_v1_table()


def test_v1_state_values():
    for line in V1_STATE_TABLE.strip().splitlines():
        resuming, saving, running, name = line.split()
        value = int(resuming) << 2 | int(saving) << 1 | int(running)
        if name == "Invalid":
            assert V1(value).name.startswith("INVALID")
        elif name == "Error":
            # "the error state, defined as VFIO_DEVICE_STATE_RESUMING | VFIO_DEVICE_STATE_SAVING"
            assert V1(value) is V1.ERROR
            assert value == p.MigrationStateBits.RESUMING | p.MigrationStateBits.SAVING
        else:
            assert V1_BY_NAME[name] == value
    assert [int(b) for b in p.MigrationStateBits] == [1, 2, 4]


def test_v1_transitions_exactly_as_in_the_table():
    assert len(SPEC_V1_TRANSITIONS) == 9
    assert p.V1_TRANSITIONS == SPEC_V1_TRANSITIONS
    assert set(p.V1_TABLE_STATES) == set(V1_BY_NAME.values())


@pytest.mark.parametrize("current, target", list(itertools.product(range(8), repeat=2)))
def test_v1_transition_valid_for_every_pair(current, target):
    assert p.v1_transition_valid(current, target) == ((current, target) in SPEC_V1_TRANSITIONS)


@pytest.mark.parametrize("invalid", [0b101, 0b111])
def test_v1_invalid_states_are_in_no_transition(invalid):
    assert invalid not in p.V1_TABLE_STATES
    for other in range(8):
        assert not p.v1_transition_valid(invalid, other)
        assert not p.v1_transition_valid(other, invalid)


def test_v1_error_state_cannot_be_requested_or_left():
    for other in range(8):
        assert not p.v1_transition_valid(other, V1.ERROR)
        assert not p.v1_transition_valid(V1.ERROR, other)


# ---- 0.9.2

# "Direct State Transitions", one arc per line.
V2_DIRECT_ARCS = """
RUNNING -> STOP
STOP_COPY -> STOP
RESUMING -> STOP
PRE_COPY -> RUNNING
STOP -> RUNNING
RUNNING -> PRE_COPY
STOP -> STOP_COPY
PRE_COPY -> STOP_COPY
STOP -> RESUMING
"""
SPEC_ARCS = {
    (S[a], S[b]) for a, _, b in (line.split() for line in V2_DIRECT_ARCS.strip().splitlines())
}
SAVING_GROUP = {S.PRE_COPY, S.STOP_COPY}
USED_STATES = {S.STOP, S.RUNNING, S.STOP_COPY, S.RESUMING, S.PRE_COPY}


def test_v2_direct_arcs_as_in_the_spec():
    assert p.V2_ARCS == SPEC_ARCS
    assert p.V2_SAVING_GROUP == SAVING_GROUP
    assert set(p.V2_STATES) == USED_STATES


def reference_paths(current: S, target: S, pre_copy: bool) -> list[list[S]] | None:
    """Every shortest path the rules allow (each without its start), or None."""
    if (current, target) == (S.STOP_COPY, S.PRE_COPY):
        return None  # "explicitly not allowed"
    states = USED_STATES - (set() if pre_copy else {S.PRE_COPY})
    if current not in states or target not in states:
        return None
    if current == target:
        return [[]]
    arcs = {(a, b) for a, b in SPEC_ARCS if a in states and b in states}
    found: list[list[S]] = []

    def walk(path: list[S]) -> None:
        here = path[-1]
        if here == target:
            found.append(path[1:])
            return
        if len(path) > 1 and here in SAVING_GROUP:
            return  # "The path cannot have saving group states as interior"
        for a, b in arcs:
            if a == here and b not in path:
                walk(path + [b])

    walk([current])
    if not found:
        return None
    shortest = min(len(f) for f in found)
    return sorted((f for f in found if len(f) == shortest), key=lambda f: [int(s) for s in f])


PAIRS = list(itertools.product(S, repeat=2))


@pytest.mark.parametrize("pre_copy", [True, False], ids=["pre_copy", "no_pre_copy"])
@pytest.mark.parametrize("current, target", PAIRS, ids=[f"{a.name}->{b.name}" for a, b in PAIRS])
def test_v2_path_against_the_rules(current, target, pre_copy):
    expected = reference_paths(current, target, pre_copy)
    got = p.v2_path(current, target, pre_copy=pre_copy)
    if expected is None:
        assert got is None
        return
    assert got in expected
    steps = list(zip([current, *got], got, strict=False))
    assert all(step in SPEC_ARCS for step in steps)
    assert not any(s in SAVING_GROUP for s in got[:-1])
    if not pre_copy:
        assert S.PRE_COPY not in got


def test_v2_shortest_paths_are_unique():
    """The rules leave no choice between paths, so a server has only one to take."""
    for current, target in PAIRS:
        for pre_copy in (True, False):
            paths = reference_paths(current, target, pre_copy)
            assert paths is None or len(paths) == 1, (current, target, paths)


# The same, written out: the paths of <linux/vfio.h>'s vfio_mig_get_next_state
# restricted to the states vfio-user uses.
EXPECTED_V2_PATHS = {
    (S.STOP, S.RUNNING): [S.RUNNING],
    (S.STOP, S.STOP_COPY): [S.STOP_COPY],
    (S.STOP, S.RESUMING): [S.RESUMING],
    (S.STOP, S.PRE_COPY): [S.RUNNING, S.PRE_COPY],
    (S.RUNNING, S.STOP): [S.STOP],
    (S.RUNNING, S.STOP_COPY): [S.STOP, S.STOP_COPY],
    (S.RUNNING, S.RESUMING): [S.STOP, S.RESUMING],
    (S.RUNNING, S.PRE_COPY): [S.PRE_COPY],
    (S.STOP_COPY, S.STOP): [S.STOP],
    (S.STOP_COPY, S.RUNNING): [S.STOP, S.RUNNING],
    (S.STOP_COPY, S.RESUMING): [S.STOP, S.RESUMING],
    (S.STOP_COPY, S.PRE_COPY): None,
    (S.RESUMING, S.STOP): [S.STOP],
    (S.RESUMING, S.RUNNING): [S.STOP, S.RUNNING],
    (S.RESUMING, S.STOP_COPY): [S.STOP, S.STOP_COPY],
    (S.RESUMING, S.PRE_COPY): [S.STOP, S.RUNNING, S.PRE_COPY],
    (S.PRE_COPY, S.STOP): [S.RUNNING, S.STOP],
    (S.PRE_COPY, S.RUNNING): [S.RUNNING],
    (S.PRE_COPY, S.STOP_COPY): [S.STOP_COPY],
    (S.PRE_COPY, S.RESUMING): [S.RUNNING, S.STOP, S.RESUMING],
}


@pytest.mark.parametrize(
    "pair", list(EXPECTED_V2_PATHS), ids=lambda pr: f"{pr[0].name}->{pr[1].name}"
)
def test_v2_path_written_out(pair):
    assert p.v2_path(*pair) == EXPECTED_V2_PATHS[pair]


def test_v2_same_state_is_an_empty_path():
    for state in USED_STATES:
        assert p.v2_path(state, state) == []


def test_v2_error_and_p2p_states():
    for other in S:
        for bad in (S.ERROR, S.RUNNING_P2P, S.PRE_COPY_P2P):
            assert p.v2_path(other, bad) is None
            assert p.v2_path(bad, other) is None


def test_v2_without_pre_copy():
    assert p.v2_path(S.RUNNING, S.PRE_COPY, pre_copy=False) is None
    assert p.v2_path(S.PRE_COPY, S.RUNNING, pre_copy=False) is None
    assert p.v2_path(S.RUNNING, S.STOP_COPY, pre_copy=False) == [S.STOP, S.STOP_COPY]
    assert p.v2_path(S.RESUMING, S.RUNNING, pre_copy=False) == [S.STOP, S.RUNNING]
