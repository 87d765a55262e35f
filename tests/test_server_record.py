"""vfio-user-reference-server --record FILE: every message of every connection, one JSON
object a line (reference_server/record.py), as the client sent it and as it was
answered: the server's DMA requests and their replies included, on the twin socket too."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_server_support import RefServer

from pytest_vfiouser.protocol import Command, DeviceInfo, DmaReadReply, encode_reply
from reference_server import pytest_hooks


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _messages(lines, conn: int) -> list[tuple[str, str, int, int]]:
    """(dir, channel, command, fds) of connection ``conn``'s messages, in order."""
    return [
        (m["dir"], m["channel"], m["command"], m["fds"])
        for m in lines
        if m["conn"] == conn and "dir" in m
    ]


def test_a_session_is_recorded_message_by_message(tmp_path):
    record = tmp_path / "record.jsonl"
    server = RefServer(tmp_path, "--spec=0.9.1", f"--record={record}")
    try:
        c = server.connect()
        c.dma_map(0x10000, 0x1000).check()
        c.memory.write(0x10000, b"recorded")
        pytest_hooks.pytest_vfu_trigger_dma(c, None, "read", 0x10000, 8, 0).check()
        c.region_info(2, argsz=256).check()  # a mappable region: its reply carries the fd
        c.send(0x4242)  # unknown: refused, recorded as sent
        c.recv_reply()
        c.close()
        server.wait_idle()
        d = server.connect()  # served: its VERSION answered
        d.close()
        server.wait_idle()
    finally:
        assert server.stop() == 0
    lines = _lines(record)
    assert [(m["conn"], m["event"]) for m in lines if "event" in m] == [
        (1, "connect"),
        (1, "disconnect"),
        (2, "connect"),
        (2, "disconnect"),
    ]
    first = _messages(lines, 1)
    assert first[:2] == [("c2s", "main", Command.VERSION, 0), ("s2c", "main", Command.VERSION, 0)]
    # The server's DMA_READ, and the client's reply to it, on the main socket at 0.9.1.
    assert ("s2c", "main", Command.DMA_READ, 0) in first
    assert ("c2s", "main", Command.DMA_READ, 0) in first
    assert ("s2c", "main", Command.DEVICE_GET_REGION_INFO, 1) in first
    unknown = [m for m in lines if m.get("command") == 0x4242]
    assert [m["dir"] for m in unknown] == ["c2s", "s2c"] and unknown[1]["error"] == 38  # ENOSYS
    dma = next(m for m in lines if m.get("dir") == "c2s" and m["command"] == Command.DMA_READ)
    assert bytes.fromhex(dma["payload"]).endswith(b"recorded")
    assert all(m["msg_size"] == 16 + len(m["payload"]) // 2 for m in lines if "dir" in m)


def test_twin_socket_messages_are_recorded_on_their_channel(tmp_path):
    record = tmp_path / "record.jsonl"
    server = RefServer(tmp_path, "--spec=0.9.2", f"--record={record}")
    try:
        c = server.connect(capabilities={"twin_socket": {"supported": True}})
        c.dma_map(0x10000, 0x1000).check()
        pytest_hooks.pytest_vfu_trigger_dma(c, None, "write", 0x10000, 8, 0).check()
        c.close()
        server.wait_idle()
    finally:
        assert server.stop() == 0
    messages = _messages(_lines(record), 1)
    assert ("s2c", "main", Command.VERSION, 1) in messages  # the twin socket's fd
    assert ("s2c", "twin", Command.DMA_WRITE, 0) in messages
    assert ("c2s", "twin", Command.DMA_WRITE, 0) in messages
    assert not [m for m in messages if m[2] == Command.DMA_WRITE and m[1] == "main"]


def test_a_record_file_that_cannot_be_opened_is_a_usage_error(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "reference_server",
            f"--socket-path={tmp_path / 's.sock'}",
            "--record=/proc/nope/record.jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--record /proc/nope/record.jsonl: No such file or directory" in proc.stderr


def test_a_command_that_comes_while_a_dma_reply_is_awaited_is_recorded_as_it_came(tmp_path):
    """Held until the DMA reply is in, it is in the record where it arrived, once: a
    client that goes before the server serves it has still sent it."""
    record = tmp_path / "record.jsonl"
    server = RefServer(tmp_path, "--spec=0.9.1", "--dma-between", f"--record={record}")
    try:
        c = server.connect()
        c.dma_map(0x10000, 0x1000).check()
        first = c.send(Command.DEVICE_GET_INFO, DeviceInfo(16))  # brings the DMA_READ
        request = c.recv_message()
        assert request.header.command == Command.DMA_READ
        second = c.send(Command.DEVICE_GET_INFO, DeviceInfo(16))  # held by the server
        data = DmaReadReply(0x10000, 64, bytes(64)).pack()  # answered now; a DMA_WRITE follows
        c.send_raw(encode_reply(request.header.msg_id, Command.DMA_READ, data))
        assert c.recv_reply(first).ok and c.recv_reply(second).ok
        c.close()
        server.wait_idle()
    finally:
        assert server.stop() == 0
    order = [(d, cmd) for d, _, cmd, _ in _messages(_lines(record), 1)][4:]
    assert order == [
        ("c2s", Command.DEVICE_GET_INFO),
        ("s2c", Command.DMA_READ),
        ("c2s", Command.DEVICE_GET_INFO),  # as it came: before the DMA reply
        ("c2s", Command.DMA_READ),
        ("s2c", Command.DMA_WRITE),
        ("c2s", Command.DMA_WRITE),
        ("s2c", Command.DEVICE_GET_INFO),
        ("s2c", Command.DEVICE_GET_INFO),
    ]


def test_the_kinds_of_the_clients_fds_are_recorded(tmp_path):
    """fd_kinds: what each fd the client sent was (client mode's eventfd check)."""
    record = tmp_path / "record.jsonl"
    server = RefServer(tmp_path, f"--record={record}")
    try:
        c = server.connect()
        efd, (r, w) = os.eventfd(0), os.pipe()
        c.set_irqs(4, 0x24, 0, 1, (efd,)).check()  # REQ: DATA_EVENTFD | ACTION_TRIGGER
        assert not c.set_irqs(4, 0x24, 0, 1, (r,)).ok  # a pipe: refused
        for fd in (efd, r, w):
            os.close(fd)
        c.close()
        server.wait_idle()
    finally:
        assert server.stop() == 0
    kinds = [m.get("fd_kinds") for m in _lines(record) if m.get("command") == 8]
    assert kinds == [["eventfd"], None, ["pipe"], None]  # each request, then its reply


def test_raised_interrupts_are_recorded_taken_or_not(tmp_path):
    """--raise-irqs (client mode's irqs-raised scenario): each eventfd a SET_IRQS gives
    is signalled at once, and the record says whether the client read it before the
    watch (or the connection) ended."""
    record = tmp_path / "record.jsonl"
    server = RefServer(tmp_path, "--raise-irqs", f"--record={record}")
    try:
        c = server.connect()
        taken, left = os.eventfd(0), os.eventfd(0)
        c.set_irqs(2, 0x24, 0, 2, (taken, left)).check()  # MSI-X: DATA_EVENTFD | TRIGGER
        assert os.eventfd_read(taken) == 1  # signalled before the reply came
        c.close()
        server.wait_idle()
        for fd in (taken, left):
            os.close(fd)
    finally:
        assert server.stop() == 0
    irqs = sorted((m["vector"], m["taken"]) for m in _lines(record) if m.get("event") == "irq")
    assert irqs == [(0, True), (1, False)]
