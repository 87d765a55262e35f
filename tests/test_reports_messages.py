"""A verdict's message as the reports show it: clipped at both ends, without pytest's clutter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pytest_vfiouser.report import clip_message, plain_message

STDERR = [
    f"    import 'module{n}' # start-up noise, line {n} of the server's stderr" for n in range(40)
]
CRASH = "\n".join(
    [
        "server killed by SIGABRT",
        "  command: /usr/bin/my-server /tmp/vfu.sock",
        "  last lines of its stderr (/tmp/stderr.log):",
        *STDERR,
        "    my-server: lib/dma.c:123: dma_map: Assertion `region != NULL' failed.",
    ]
)


def test_a_crash_keeps_the_start_and_the_assertion_at_the_end():
    clipped = clip_message(CRASH, 600)
    assert len(clipped) <= 600
    lines = clipped.splitlines()
    assert lines[:2] == CRASH.splitlines()[:2]  # the signal, the command
    assert lines[-1].endswith("Assertion `region != NULL' failed.")  # what killed it
    assert STDERR[0] not in clipped  # the start-up noise goes first
    left_out = next(line for line in lines if line.startswith("[... "))
    kept = len(lines) - 1
    assert left_out == f"[... {len(CRASH.splitlines()) - kept} lines left out ...]"


def test_what_fits_is_left_alone():
    assert clip_message(CRASH, len(CRASH)) == CRASH
    assert clip_message("", 10) == ""


def test_one_long_line_keeps_its_start():
    assert clip_message("x" * 50, 20) == "x" * 17 + "..."


@given(
    lines=st.lists(
        st.text(
            st.characters(exclude_characters="\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
            max_size=300,
        ),
        min_size=1,
        max_size=30,
    ),
    limit=st.integers(40, 2000),
)
def test_clipped_messages_fit_and_keep_both_ends(lines, limit):
    text = "\n".join(lines)
    clipped = clip_message(text, limit)
    assert len(clipped) <= limit
    if len(text) <= limit:
        assert clipped == text
        return
    out = clipped.splitlines()
    if len(lines) == 1 or limit < 150:  # room for little more than the marker line
        return
    if len(lines[0]) < limit // 5:
        assert out[0] == lines[0]
        if len(lines[-1]) < limit // 2:
            assert out[-1] == lines[-1]


def test_pytest_assertion_clutter_goes():
    # assert not reply.ok, "the server accepted ...": pytest adds the expression and its parts
    message = (
        "AssertionError: the server accepted DMA_MAP of [0x1000, +0x1000); it must fail\n"
        "assert not True\n"
        " +  where True = <Reply DMA_MAP reply id=2 size=16 payload=0B>.ok"
    )
    assert (
        plain_message(message) == "the server accepted DMA_MAP of [0x1000, +0x1000); it must fail"
    )
    nested = (
        "AssertionError: a 0-byte payload\n"
        "assert 0 == 16\n"
        " +  where 0 = len(b'')\n"
        " +    where b'' = <Reply REGION_READ reply id=1 size=16 payload=0B>.payload\n"
        " +  and   16 = RegionAccess.SIZE"
    )
    assert plain_message(nested) == "a 0-byte payload"
    # Without a message of its own, pytest's line is what there is.
    bare = "AssertionError: assert 1 >= 9\n +  where 1 = DeviceInfo(num_regions=1).num_regions"
    assert plain_message(bare) == "assert 1 >= 9"
    unmet = "pytest_vfiouser.verdict.Unmet: the server is out of step"
    assert plain_message(unmet) == "the server is out of step"
    fuzz = "pytest_vfiouser.fuzz._engine.FuzzFailure: the server sent X\n\nThe failing example"
    assert plain_message(fuzz) == "the server sent X\n\nThe failing example"
    # Another type: its name, without its module.
    closed = "pytest_vfiouser.client._errors.ConnectionClosed: connection closed by the peer"
    assert plain_message(closed) == "ConnectionClosed: connection closed by the peer"


def test_other_messages_stay_as_they_are():
    for message in (
        "needs profile: device.flags",
        "baseline: known bug #12 (was FAIL: AssertionError: x)",
        "TimeoutError: no reply",
        CRASH,
        # a message of its own over several lines, one of them starting with "assert"
        "AssertionError: the reply is short\nassert that it is 16 bytes long\nsaid the spec",
        "",
    ):
        assert plain_message(message) == message.removeprefix("AssertionError: ")


def test_the_fuzz_failure_named_without_importing_the_engine_is_its_class():
    from pytest_vfiouser.fuzz import FuzzFailure  # noqa: PLC0415 (the engine, on purpose)
    from pytest_vfiouser.report import _messages  # noqa: PLC0415

    assert _messages._FUZZ_FAILURE == f"{FuzzFailure.__module__}.{FuzzFailure.__qualname__}"
