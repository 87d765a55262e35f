"""Client mode's fixtures: the client's run, once a session, and what it sent.

``vfu_transcript`` runs the client (--vfu-client) against the reference server, or
reads a record (--vfu-transcript), once; ``vfu_sessions`` are its connections that
carried messages, which every client case reads (conformance_client/).
"""

from __future__ import annotations

import pytest

from pytest_vfiouser.clientcheck import (
    ClientRunError,
    Session,
    Transcript,
    TranscriptError,
    read_transcript,
    run_client,
)

from ._state import get_state


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
    try:
        run = run_client(
            settings.client,
            tmp_path_factory.mktemp("client-run"),
            spec=settings.spec,
            seconds=settings.client_time,
            device=str(settings.device) if settings.device else None,
            start_timeout=settings.start_timeout,
        )
    except ClientRunError as e:
        state.client_run = f"{settings.client}: {e}"
        raise
    messages = sum(len(s.messages) for s in run.transcript.sessions)
    state.client_run = (
        f"{settings.client}: {run.describe()}; {len(run.transcript.sessions)} connection(s), "
        f"{messages} messages"
    )
    return run.transcript


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
