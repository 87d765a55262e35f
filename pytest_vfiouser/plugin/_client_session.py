"""Client mode's fixtures: the client's run, once a session, and what it sent.

``vfu_transcript`` runs the client (--vfu-client) against the reference server, or
reads a record (--vfu-transcript), once; ``vfu_sessions`` are its connections that
carried messages, which every client case reads (conformance_client/).
``vfu_scenario(name)`` runs the client once more against a misbehaving server
(clientcheck.SCENARIOS), the first time a case asks for that scenario.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable

import pytest

from pytest_vfiouser.clientcheck import (
    SCENARIOS,
    ClientRunError,
    Session,
    Transcript,
    TranscriptError,
    read_transcript,
    run_client,
)
from pytest_vfiouser.verdict import Verdict

from ._judge import ServerFault
from ._state import get_state

# A dead client's lines that say why (shown before its last ones).
_DEATH = re.compile(r"assert|abort|hardware error|panic|fatal|segmentation", re.IGNORECASE)
# Seconds a client that is still running may leave a request of the server's
# unanswered, and say nothing, before it is judged to hang.
HANG_AFTER = 5.0
# Signals a process dies of by its own fault (not the SIGTERM/SIGKILL that stops it).
CRASH_SIGNALS = frozenset(
    int(s) for s in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGILL, signal.SIGFPE)
)


@pytest.fixture(scope="session")
def vfu_transcript(request: pytest.FixtureRequest, tmp_path_factory) -> Transcript:
    """The client's session: run here (--vfu-client) or read (--vfu-transcript)."""
    state = get_state(request.config)
    settings = state.settings
    if settings.transcript is not None:
        try:
            transcript = read_transcript(settings.transcript)
        except TranscriptError as e:
            raise pytest.UsageError(f"--vfu-transcript: {e}") from None
        state.client_run = f"transcript {settings.transcript}"
        return transcript
    if settings.client is None:
        pytest.skip(
            "client mode: name the client with --vfu-client, or a record with --vfu-transcript"
        )
    run = _run(state, tmp_path_factory)
    messages = sum(len(s.messages) for s in run.transcript.sessions)
    state.client_run = (
        f"{settings.client}: {run.describe()}; {len(run.transcript.sessions)} connection(s), "
        f"{messages} messages"
    )
    _judge_end(run)
    return run.transcript


def _run(state, tmp_path_factory, scenario=None):
    settings = state.settings
    try:
        return run_client(
            settings.client,
            tmp_path_factory.mktemp("client-run"),
            spec=settings.spec,
            seconds=settings.client_time,
            device=str(settings.device) if settings.device else None,
            start_timeout=settings.start_timeout,
            faults=scenario.faults if scenario else (),
            server_args=scenario.server_args if scenario else (),
        )
    except ClientRunError as e:
        state.client_run = f"{settings.client}: {e}"
        raise


def _judge_end(run, scenario: str = "") -> None:
    """A client that dies of its own fault (CRASH), or stops talking while a request of
    the server's waits for its answer (HANG), is the verdict on every case its run was
    to show."""
    where = f" in scenario {scenario}" if scenario else ""
    if run.status is not None and -run.status in CRASH_SIGNALS:
        raise ServerFault(Verdict.CRASH, f"the client {run.describe()}{where}:\n{_last_words(run)}")
    sessions = run.transcript.with_messages()
    if run.status is not None or not sessions:
        return  # it ended its run itself
    last = sessions[-1]
    request = last.silent_since()
    end = last.ended_at if last.ended_at is not None else last.messages[-1].t
    if request is not None and end - request.t >= HANG_AFTER:
        raise ServerFault(
            Verdict.HANG,
            f"the client {run.describe()}{where}, and for its last {end - request.t:.1f} s "
            f"it neither answered the server's {request.describe()} on the "
            f"{request.channel} socket nor sent anything",
        )


def _last_words(run, lines: int = 8) -> str:
    """The end of what a dead client printed, after the last lines that say why it died
    (an assertion, a "hardware error") where more output (a register dump) followed."""
    text = run.output.strip().splitlines()
    why = [line for line in text[:-lines] if _DEATH.search(line)][-2:]
    return "\n".join([*why, *(["..."] if why else []), *text[-lines:]])


@pytest.fixture(scope="session")
def vfu_scenario(request: pytest.FixtureRequest, tmp_path_factory) -> Callable:
    """``vfu_scenario(name)``: the sessions (with messages) of the client's run against
    the server of scenario ``name``, run once a session."""
    state = get_state(request.config)
    runs: dict[str, list[Session]] = {}

    def sessions(name: str) -> list[Session]:
        scenario = SCENARIOS[name]
        if state.settings.client is None:
            pytest.skip(f"scenario {name} needs a run of the client (--vfu-client)")
        if state.settings.spec not in scenario.revisions:
            pytest.skip(f"scenario {name} is for spec {', '.join(scenario.revisions)}")
        if name not in runs:
            run = _run(state, tmp_path_factory, scenario)
            _judge_end(run, name)
            runs[name] = run.transcript.with_messages()
        if not runs[name]:
            pytest.skip(
                f"cannot judge: in scenario {name} ({scenario.what}) the client sent nothing"
            )
        return runs[name]

    return sessions


@pytest.fixture(scope="session")
def vfu_sessions(vfu_transcript: Transcript) -> list[Session]:
    """The connections that carried messages; none fails the case: the spec's client
    "must send a VFIO_USER_VERSION message" once connected."""
    sessions = vfu_transcript.with_messages()
    if not sessions:
        pytest.fail(
            'the client sent no message to the server (Spec (VFIO_USER_VERSION): "Upon '
            "establishing a connection, the client must send a VFIO_USER_VERSION message "
            'proposing a protocol version and a set of capabilities.")'
        )
    return sessions
