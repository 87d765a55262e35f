"""VFIO_USER_VERSION, the client's side: it opens every session, well formed."""

from __future__ import annotations

from pytest_vfiouser import MUST, case
from pytest_vfiouser.protocol import CodecError, Command, Version

from ._support import listed, need


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


@case("client/version/closes-on-other-major", MUST)
def test_closes_on_other_major(vfu_scenario):
    """Given a VERSION reply whose major is not the one it proposed, the client sends
    nothing more on that connection: it closes it. (Scenario other-major: the server
    answers major 1.)

    Spec (VFIO_USER_VERSION): "The major version in the reply must be the same as proposed.
    If the client does not support the proposed major, it closes the connection." (Errata
    5: the client closes on a reply major it does not support.)
    """
    judged, bad = 0, []
    for s in vfu_scenario("other-major"):
        proposals = s.sent(Command.VERSION)
        reply = s.reply_to(proposals[0]) if proposals else None
        if reply is None or reply.is_error or len(reply.payload) < 2:
            continue
        proposed = int.from_bytes(proposals[0].payload[:2], "little")
        if int.from_bytes(reply.payload[:2], "little") == proposed:
            continue
        judged += 1
        if (after := s.sent_after(reply)) is not None:
            bad.append(f"session {s.number} went on with {after.describe()}")
    if not judged:
        need([], "VERSION that got a reply with another major")
    assert not bad, listed(bad)
