"""The client's end of a twin socket (0.9.2 twin-socket mode).

A client that negotiated the mode "monitors the provided file descriptor for
commands from the server": here a thread of its own serves the DMA_READ and
DMA_WRITE requests that arrive there, from the client's memory, while the test
drives the main socket (a hook's REGION_WRITE waits on the main socket for a
reply the server gives only once its DMA is done). ``hold()`` keeps the
requests unanswered (they are still received and counted) until ``release()``:
what a test needs to see whether the server serves the main socket while its
request waits.

Every message that is not a DMA request (a reply, another command, a message
that does not frame) is listed in ``unexpected``: nothing else may travel here.
"""

from __future__ import annotations

import socket
import threading
import time

from ._errors import ClientError, Timeout, UnexpectedReply

_POLL = 0.2  # seconds between looks at the stop flag while the socket is quiet
_HELD_POLL = 0.01  # ... and at the release flag while requests are held
HOLD_LIMIT = 30.0  # seconds a held request waits at most for release()


class Twin:
    def __init__(self, sock: socket.socket, peer_factory):
        """``peer_factory(sock)``: a Client over the twin socket that serves DMA
        requests from the main client's memory."""
        self.peer = peer_factory(sock)
        self.requests = self.peer.dma_requests  # DmaRequest, as served
        self.unexpected: list[str] = []
        self.arrived = 0  # DMA requests received (served or held)
        self.ended: str | None = None  # why the thread stopped, once it did
        self._open = threading.Event()
        self._open.set()
        self._changed = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="vfu-twin", daemon=True)
        self._thread.start()

    @property
    def sock(self) -> socket.socket:
        return self.peer.sock

    @property
    def log(self):
        """The twin socket's WireLog."""
        return self.peer.wire_log

    def hold(self) -> None:
        """Keep the next requests unanswered until release()."""
        self._open.clear()

    def release(self) -> None:
        self._open.set()

    def wait_arrived(self, count: int, timeout: float) -> bool:
        """Whether ``count`` DMA requests have arrived here within ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self.arrived >= count or self.ended is not None, timeout
            ) and (self.arrived >= count)

    def _run(self) -> None:
        peer = self.peer
        held: list[tuple] = []  # requests received while held, oldest first
        held_since = 0.0
        while not self._stop:
            if held and (self._open.is_set() or time.monotonic() - held_since > HOLD_LIMIT):
                if not self._serve(held.pop(0)):
                    return
                continue
            try:
                # While requests are held, look at the release flag often.
                frame = peer.recv_frame(
                    _HELD_POLL if held else _POLL, "a request on the twin socket"
                )
            except Timeout:
                continue
            except (ClientError, OSError) as e:  # OSError: not a socket one can receive on
                self._end(str(e))
                return
            if peer.is_dma_request(frame[0]):
                with self._changed:
                    self.arrived += 1
                    self._changed.notify_all()
                if held or not self._open.is_set():
                    if not held:
                        held_since = time.monotonic()
                    held.append(frame)
                    continue
            if not self._serve(frame):
                return
        self._end("closed")

    def _serve(self, frame: tuple) -> bool:
        """Answer a DMA request, or list a message that is not one; False once the
        socket fails."""
        try:
            reply = self.peer._accept(frame, None, None)
        except UnexpectedReply as e:
            self.unexpected.append(str(e))
            return True
        except (ClientError, OSError) as e:
            self._end(str(e))
            return False
        if reply is not None:
            self.unexpected.append(f"{reply.header.describe()} arrived on the twin socket")
        return True

    def _end(self, why: str) -> None:
        with self._changed:
            if self.ended is None:
                self.ended = why
            self._changed.notify_all()

    def close(self) -> None:
        self._stop = True
        self._open.set()
        if self._thread.is_alive():
            # Wakes the thread's receive at once. Only then: the socket is the server's
            # choice, and a shutdown would reach every copy of it (a listening socket...).
            try:
                self.peer.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(2 * _POLL + 1)
        self.peer.close()
