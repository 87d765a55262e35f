"""Pipelining: send N, then collect N replies, matched in order."""

from __future__ import annotations

import os

import pytest
from test_client_peer import in_thread, no_fd_leak_fixture, pair_fixture, responder  # noqa: F401 (fixtures)

from pytest_vfiouser import protocol as P
from pytest_vfiouser.client import UnexpectedReply

C = P.Command


def test_send_100_collect_100(pair):
    client, peer = pair
    requests = [(C.REGION_READ, P.RegionRead(i, 0, 4)) for i in range(100)]
    with in_thread(responder, peer, 100):
        replies = client.pipeline(requests)
    assert [r.msg_id for r in replies] == list(range(100))
    assert [r.body.offset for r in replies] == list(range(100))
    assert all(r.ok and r.body.data == b"\xab" * 4 for r in replies)


def test_pipeline_takes_bytes_none_and_fds(pair):
    client, peer = pair
    efd = os.eventfd(0)
    try:
        with in_thread(responder, peer, 3):
            replies = client.pipeline(
                [
                    (C.REGION_READ, P.RegionRead(0, 1, 2).pack()),
                    (C.DEVICE_RESET, None),
                    (C.DEVICE_SET_IRQS, P.SetIrqs(20, 0x24, 0, 0, 1), [efd]),
                ]
            )
    finally:
        os.close(efd)
    assert [r.command for r in replies] == [C.REGION_READ, C.DEVICE_RESET, C.DEVICE_SET_IRQS]


def test_pipeline_sends_each_message_in_its_own_sendmsg(pair):
    client, peer = pair
    for msg_id in range(3):
        peer.send(P.encode_reply(msg_id, C.DEVICE_RESET))
    client.pipeline([(C.DEVICE_RESET, None)] * 3)
    entries = [e for e in client.wire_log.to_dicts() if e["direction"] == "send"]
    assert [e["msg_id"] for e in entries] == [0, 1, 2]
    assert all(e["msg_size"] == 16 for e in entries)


def test_replies_out_of_order_raise_unexpected_reply(pair):
    client, peer = pair
    peer.send(P.encode_reply(1, C.DEVICE_RESET) + P.encode_reply(0, C.DEVICE_RESET))
    with pytest.raises(UnexpectedReply) as info:
        client.pipeline([(C.DEVICE_RESET, None)] * 2)
    assert info.value.reply.msg_id == 1 and "msg_id 0" in str(info.value)


def test_a_reply_split_across_receives_is_reassembled(pair):
    client, peer = pair
    data = b"".join(
        P.encode_reply(i, C.REGION_READ, P.RegionReadReply(0, 0, 3, b"xyz").pack())
        for i in range(4)
    )

    def trickle():
        for i in range(0, len(data), 5):  # 5-byte pieces: headers split too
            peer.send(data[i : i + 5])

    with in_thread(trickle):
        replies = client.pipeline([(C.REGION_READ, P.RegionRead(0, 0, 3))] * 4)
    assert [r.body.data for r in replies] == [b"xyz"] * 4


def test_error_replies_in_a_pipeline_are_returned(pair):
    client, peer = pair
    peer.send(P.encode_reply(0, C.DEVICE_RESET) + P.encode_error(1, C.DEVICE_RESET, 22))
    first, second = client.pipeline([(C.DEVICE_RESET, None)] * 2)
    assert first.ok and not second.ok and second.error == 22
