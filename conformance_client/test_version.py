"""VFIO_USER_VERSION, the client's side: it opens every session, well formed."""

from __future__ import annotations

from pytest_vfiouser import MUST, case
from pytest_vfiouser.protocol import CodecError, Command, Version

from ._support import listed


@case("client/version/version-first", MUST)
def test_version_first(vfu_sessions):
    """The first message of every session the client opens is a VERSION command.

    Spec (VFIO_USER_VERSION): "This is the initial message sent by the client after the
    socket connection is established"; "Upon establishing a connection, the client must
    send a VFIO_USER_VERSION message proposing a protocol version and a set of
    capabilities."
    """
    wrong = []
    for s in vfu_sessions:
        first = s.messages[0]
        if not (first.direction == "c2s" and first.is_command and first.command == Command.VERSION):
            wrong.append(f"session {s.number} began with {first.describe()}")
    assert not wrong, listed(wrong)


@case("client/version/proposal-well-formed", MUST)
def test_proposal_well_formed(vfu_sessions):
    """Each VERSION the client sends decodes: major and minor, then (if any) a
    NUL-terminated JSON object whose capabilities have the spec's types.

    Spec (VFIO_USER_VERSION): "version data 4 variable (including terminating NUL).
    Optional."; "The version data is an optional UTF-8 encoded JSON byte array with the
    following format: capabilities | object" ... "max_msg_fds | number" ...
    "max_data_xfer_size | number"
    """
    bad = []
    for s in vfu_sessions:
        for m in s.sent(Command.VERSION):
            try:
                Version.unpack(m.payload).capabilities.validate()
            except CodecError as e:
                bad.append(f"{m.describe()} in session {s.number}: {e}")
    assert not bad, listed(bad)
