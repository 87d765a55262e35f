"""The other end of the client's socket, for the client's tests; and the fd-leak guard.

Other test_client_* modules import from here (``from test_client_peer import
...``): it holds no mock, only a real UNIX socket end speaking the protocol
through the codec. Tests of the peer helpers themselves are at the bottom.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import struct
import threading

import pytest

from pytest_vfiouser import protocol as P
from pytest_vfiouser.client import Client

_HDR = struct.Struct("<HHIII")


def open_fds() -> dict[int, str]:
    """fd -> what it points to, without the fd listing /proc/self/fd itself uses."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the listing's own fd, closed by now
            continue
        if target != f"/proc/{os.getpid()}/fd":
            fds[int(name)] = target
    return fds


# Fixtures carry explicit names so that the modules importing them (the import
# is what makes pytest see them there) do not shadow them with their parameters.
@pytest.fixture(autouse=True, name="no_fd_leak")
def no_fd_leak_fixture():
    """Every test leaves the process with no fd it did not find (socket ends,
    received fds, memfds, eventfds alike)."""
    before = open_fds()
    yield
    leaked = {fd: target for fd, target in open_fds().items() if before.get(fd) != target}
    assert not leaked, f"fds leaked: {leaked}"


class Peer:
    """The server side of a connection: reads the client's messages, writes anything."""

    def __init__(self, sock: socket.socket, timeout: float = 5.0):
        self.sock = sock
        sock.settimeout(timeout)

    def recv_exact(self, n: int) -> tuple[bytes, list[int]]:
        data, fds = b"", []
        while len(data) < n:
            chunk, anc, _, _ = self.sock.recvmsg(n - len(data), socket.CMSG_SPACE(253 * 4))
            if not chunk:
                raise EOFError(f"client closed after {len(data)} of {n} bytes")
            data += chunk
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    arr = array.array("i")
                    arr.frombytes(cdata[: len(cdata) - len(cdata) % 4])
                    fds.extend(arr)
        return data, fds

    def recv(self) -> tuple[P.Header, bytes, list[int]]:
        """The client's next message: header, payload, fds (the caller closes them)."""
        head, fds = self.recv_exact(16)
        header = P.Header.unpack(head)
        payload, more = self.recv_exact(header.msg_size - 16) if header.msg_size > 16 else (b"", [])
        return header, payload, fds + more

    def recv_decoded(self):
        header, payload, fds = self.recv()
        assert not fds, f"unexpected fds {fds}"
        return header, P.decode(header.command, header.is_reply, payload)

    def send(self, data: bytes, fds=()) -> None:
        if fds:
            socket.send_fds(self.sock, [data], list(fds))
        else:
            self.sock.sendall(data)

    def reply(self, header: P.Header, payload=b"", fds=()) -> None:
        """A reply to ``header`` with ``payload`` (bytes or a codec Payload)."""
        if not isinstance(payload, bytes):
            payload = payload.pack()
        self.send(P.encode_reply(header.msg_id, header.command, payload), fds)

    def error(self, header: P.Header, errno_value: int) -> None:
        self.send(P.encode_error(header.msg_id, header.command, errno_value))

    def request(self, msg_id: int, command: int, payload=b"", flags: int = 0) -> None:
        """A command from the server (DMA_READ/DMA_WRITE)."""
        if not isinstance(payload, bytes):
            payload = payload.pack()
        self.send(P.encode(msg_id, command, payload, flags))

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def client_and_peer(**kwargs):
    """A Client on one end of a socketpair, a Peer on the other; both closed after."""
    a, b = socket.socketpair()
    client = Client(a, **{"timeout": 2.0, **kwargs})
    peer = Peer(b)
    try:
        yield client, peer
    finally:
        client.close()
        peer.close()


@pytest.fixture(name="pair")
def pair_fixture():
    with client_and_peer() as cp:
        yield cp


@contextlib.contextmanager
def in_thread(fn, *args):
    """Run fn(*args) in a thread for the duration of the block; re-raise its error."""
    errors: list[BaseException] = []

    def run():
        try:
            fn(*args)
        except BaseException as e:  # surfaced in the test's thread
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield thread
    finally:
        thread.join(10)
        assert not thread.is_alive(), "peer thread did not finish"
    if errors:
        raise errors[0]


def responder(peer: Peer, count: int) -> None:
    """Answer ``count`` REGION_READ requests with count bytes of 0xAB, and others empty."""
    for _ in range(count):
        header, payload, fds = peer.recv()
        for fd in fds:
            os.close(fd)
        body = P.decode(header.command, False, payload)
        if header.command == P.Command.REGION_READ:
            peer.reply(
                header,
                P.RegionReadReply(body.offset, body.region, body.count, b"\xab" * body.count),
            )
        elif not header.no_reply:
            peer.reply(header)


def raw_header(msg_id: int, command: int, msg_size: int, flags: int = 1, error: int = 0) -> bytes:
    return _HDR.pack(msg_id, command, msg_size, flags, error)


# -- the helpers themselves


def test_peer_sees_what_the_client_sends(pair):
    client, peer = pair
    msg_id = client.send(P.Command.DEVICE_GET_INFO, P.DeviceInfo(16))
    header, body = peer.recv_decoded()
    assert (header.msg_id, header.command, header.msg_size) == (msg_id, 4, 32)
    assert body == P.DeviceInfo(16)


def test_connect_to_a_listening_socket(tmp_path):
    path = str(tmp_path / "s")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)

    def serve():
        conn, _ = listener.accept()
        peer = Peer(conn)
        header, body = peer.recv_decoded()
        peer.reply(header, P.Version(0, 0, {"capabilities": {"max_data_xfer_size": 4096}}))
        peer.close()

    try:
        with in_thread(serve), Client.connect(path, timeout=2.0) as client:
            client.negotiate()
            assert client.server_caps.max_data_xfer_size == 4096
    finally:
        listener.close()


def test_connect_to_nothing_raises_and_leaks_nothing(tmp_path):
    with pytest.raises(OSError):
        Client.connect(str(tmp_path / "absent"))
