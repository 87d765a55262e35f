"""The wire log: what it records, how it renders, and its caps."""

from __future__ import annotations

import json
import os

from test_client_peer import client_and_peer, no_fd_leak_fixture, pair_fixture  # noqa: F401 (fixtures)

from pytest_vfiouser import protocol as P
from pytest_vfiouser.client import WireLog

C = P.Command


def test_log_records_both_directions_with_decoded_headers_and_payloads(pair):
    client, peer = pair
    peer.send(P.encode_reply(0, C.DEVICE_GET_INFO, P.DeviceInfo(16, 1, 9, 5).pack()))
    client.device_get_info()
    entries = client.wire_log.to_dicts()
    assert [e["direction"] for e in entries] == ["send", "recv"]
    sent, received = entries
    assert sent["header"] == "DEVICE_GET_INFO command id=0 size=32"
    assert sent["payload"] == repr(P.DeviceInfo(16))
    assert bytes.fromhex(sent["raw"]) == P.encode(0, C.DEVICE_GET_INFO, P.DeviceInfo(16).pack())
    assert received["header"] == "DEVICE_GET_INFO reply id=0 size=32"
    assert bytes.fromhex(received["raw"]) == P.encode_reply(
        0, C.DEVICE_GET_INFO, P.DeviceInfo(16, 1, 9, 5).pack()
    )
    assert "num_regions=9" in received["payload"]
    assert (received["msg_id"], received["command"], received["flags"]) == (0, 4, 1)
    assert 0 <= sent["time"] <= received["time"]
    assert sent["seq"] < received["seq"]
    json.dumps(entries)  # reports and reproducers need JSON


def test_log_counts_fds_and_marks_raw_sends_and_undecodable_payloads(pair):
    client, peer = pair
    efd = os.eventfd(0)
    try:
        client.send(C.DEVICE_SET_IRQS, P.SetIrqs(20, 0x24, 0, 0, 1), fds=[efd])
        peer.send(P.encode_reply(0, C.DEVICE_GET_REGION_INFO, P.RegionInfo(32).pack()), [efd])
    finally:
        os.close(efd)
    _, _, fds = peer.recv()
    os.close(fds[0])
    client.send_raw(b"\x01\x02")
    client.recv_message().close_fds()
    peer.send(P.encode_reply(1, C.DEVICE_GET_INFO, b"\x01"))
    client.recv_message()
    sent_irqs, raw, received_info, bad = client.wire_log.to_dicts()
    assert sent_irqs["fds"] == 1 and received_info["fds"] == 1
    assert raw["raw_send"] and raw["header"] == "<2 bytes, less than a header>"
    assert "undecodable" in bad["payload"] and "size" in bad["payload"]


def test_render_shows_lines_and_hex(pair):
    client, peer = pair
    peer.send(P.encode_error(0, C.DEVICE_RESET, 22))
    client.reset()
    text = client.wire_log.render()
    lines = text.splitlines()
    assert lines[0].endswith(">> DEVICE_RESET command id=0 size=16: (none)")
    assert lines[1].startswith("    0000  00 00 0d 00 10 00 00 00")
    assert "<< DEVICE_RESET reply id=0 size=16 ERROR errno=22: (error reply)" in text
    assert "0000" not in client.wire_log.render(hexdump=False)
    assert str(client.wire_log) == text


def test_pipelined_messages_render_one_line_each(pair):
    client, peer = pair
    peer.send(b"".join(P.encode_reply(i, C.DEVICE_RESET) for i in range(5)))
    client.pipeline([(C.DEVICE_RESET, None)] * 5)
    entries = client.wire_log.to_dicts()
    assert [(e["direction"], e["msg_id"]) for e in entries] == (
        [("send", i) for i in range(5)] + [("recv", i) for i in range(5)]
    )


def test_messages_split_across_receives_are_reframed():
    log = WireLog()
    message = P.encode_reply(3, C.REGION_READ, P.RegionReadReply(0, 0, 4, b"abcd").pack())
    log.record("recv", message[:10])
    log.record("recv", message[10:] + message[:20], lead=26)
    log.record("recv", message[20:], lead=16)
    received = [e for e in log.to_dicts() if e["direction"] == "recv"]
    assert [bytes.fromhex(e["raw"]) for e in received] == [message, message]
    assert all(e["msg_id"] == 3 for e in received)


def test_after_eviction_rendering_starts_at_a_message_boundary():
    log = WireLog(max_messages=2)
    message = P.encode_reply(3, C.DEVICE_RESET)
    log.record("recv", message[:10])
    log.record("recv", message[10:] + message, lead=6)
    log.record("recv", message, lead=0)
    received = log.to_dicts()
    assert log.dropped == 1
    assert received[0]["header"] == "<6 bytes continuing an earlier message>"
    assert [e.get("msg_id") for e in received[1:]] == [3, 3]
    assert "(1 earlier log entries dropped)" in log.render()


def test_unframeable_bytes_render_as_such(pair):
    client, peer = pair
    peer.send(bytes(16))  # msg_size 0
    try:
        client.recv_message()
    except Exception:
        pass
    texts = [e.get("header", e.get("note")) for e in client.wire_log.to_dicts()]
    assert "<unframeable: msg_size 0>" in texts
    assert any("unframeable stream" in t for t in texts)


def test_incomplete_message_at_the_end_is_shown(pair):
    client, peer = pair
    peer.send(P.encode_reply(0, C.DEVICE_RESET)[:9])
    try:
        client.recv_message(timeout=0.01)
    except Exception:
        pass
    last_message = [e for e in client.wire_log.to_dicts() if e["direction"] == "recv"][-1]
    assert last_message["header"] == "<9 bytes of an incomplete message>"


def test_notes_record_timeouts_and_closed_fds(pair):
    client, peer = pair
    try:
        client.recv_message(timeout=0.01)
    except Exception:
        pass
    notes = [e["note"] for e in client.wire_log.to_dicts() if e["direction"] == "note"]
    assert notes and notes[0].startswith("timed out after 0.010s")


def test_count_cap_keeps_the_last_entries():
    log = WireLog(max_messages=3)
    for i in range(10):
        log.record("send", P.encode(i, C.DEVICE_RESET))
    assert len(log) == 3 and log.dropped == 7
    assert [e["msg_id"] for e in log.to_dicts()] == [7, 8, 9]
    log.clear()
    assert len(log) == 0 and log.dropped == 0
    log.record("send", P.encode(1, C.DEVICE_RESET))
    assert log.dropped == 0


def test_byte_cap_bounds_large_entries():
    log = WireLog(max_bytes=100_000)
    big = P.encode(0, C.REGION_WRITE, P.RegionWrite(0, 0, 30000, b"x" * 30000).pack())
    for _ in range(10):
        log.record("send", big)
    held = sum(len(bytes.fromhex(e["raw"])) for e in log.to_dicts())
    assert held <= 100_000 and log.dropped >= 6


def test_disabled_log_records_nothing():
    with client_and_peer(wire_log=WireLog(enabled=False)) as (client, peer):
        peer.send(P.encode_reply(0, C.DEVICE_RESET))
        client.reset()
        assert len(client.wire_log) == 0
