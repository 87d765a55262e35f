"""What one client may cost the server, in time and in memory.

Spec (Security Considerations): "vfio-user clients should not trust servers, and
vice versa. Standard tools and mechanisms should be used on both sides to validate
input and prevent against denial of service scenarios, buffer overflow, etc."

The server serves one client at a time, so a client that holds it up holds up every
client waiting behind it; and whatever a client makes the server keep, it keeps until
the client lets go. A client holds at most:

  time   a message's rest, once its first bytes are in: ``message_timeout``;
         nothing at all (no whole message) while another client waits to be
         served: ``idle_timeout``; a reply it does not read: ``send_timeout``;
         a reply to the server's DMA_READ/DMA_WRITE: the device's
         ``dma_reply_timeout`` (device_config; the DMA fails with ETIMEDOUT)
  memory the commands it sends while the server waits for a DMA reply (they are
         served after it): ``max_queued_bytes`` of messages and MAX_QUEUED of
         them, one message always; besides that one message being received
         (msg_size is capped by max_data_xfer_size) and the replies gathered
         for one send (connection.FLUSH_AT, and one reply)
  fds    the DMA mappings' (max_dma_maps) and the interrupts' eventfds

Past ``message_timeout``, ``idle_timeout``, ``send_timeout`` or the queue's bounds
the connection is closed (the log says which bound) and the next client served.
The fields of ``Limits`` are the options --message-timeout, --idle-timeout,
--send-timeout and --max-queued-bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MAX_QUEUED = 4096  # commands held while the server waits for a DMA reply
MAX_SECONDS = 86400.0  # the largest timeout an option takes


@dataclass(frozen=True, slots=True)
class Limits:
    message_timeout: float = 10.0  # seconds from a message's first bytes to its last
    idle_timeout: float = 10.0  # seconds without a whole message while another client waits
    send_timeout: float = 10.0  # seconds a send may block on a client that does not read
    max_queued_bytes: int = 16 << 20  # commands held while the server waits for a DMA reply

    def check(self) -> None:
        """ValueError naming the option whose value is out of range."""
        for name in ("message_timeout", "idle_timeout", "send_timeout"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 < value <= MAX_SECONDS):
                raise ValueError(
                    f"--{name.replace('_', '-')}: {value} is not in (0, {MAX_SECONDS:g}]"
                )
        if self.max_queued_bytes < 0:
            raise ValueError(f"--max-queued-bytes: {self.max_queued_bytes} is below 0")


DEFAULT = Limits()
