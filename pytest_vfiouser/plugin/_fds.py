"""Fds the server sent where no message allows them: a FAIL of every case that got some.

The client lists each message that carried more fds than it may (``Client.stray``,
``StrayFds``). Every client a case makes is watched (``watch``: ``vfu_connect`` does it,
and the fuzzer through ``vfu_connect.watch``); after the call phase the judge asks
``stray_failure`` whether the case's conversation received such fds. A case that failed
already keeps its own verdict (it is not reported twice); one that would pass, skip or
fail a SHOULD fails, naming the messages and the sentence of the spec.
"""

from __future__ import annotations

import pytest

from pytest_vfiouser.client import StrayFds
from pytest_vfiouser.protocol import Command, command_name

__all__ = ["STRAY_KEY", "stray_failure", "watch"]

STRAY_KEY = pytest.StashKey[list]()  # (the client's StrayFds list, its max_msg_fds)
_SHOWN = 3  # messages named in the verdict; the rest are counted

ERROR_REPLY = (
    'Spec (Header): "If an error occurs, the reply message must only include the reply header."'
)
MAX_MSG_FDS = (
    'Spec (VFIO_USER_VERSION): "max_msg_fds | number | Maximum number of file descriptors '
    "that can be received by the sender in one message. Optional. If not specified then "
    'the receiver must assume a value of 1."'
)
REGION_INFO = (
    'Spec (VFIO_USER_DEVICE_GET_REGION_INFO): "VFIO_REGION_INFO_FLAG_MMAP specifies the '
    "client can mmap() the region. When this flag is set, the reply will include a file "
    'descriptor in its meta-data."'
)
NO_FDS = (
    "Spec: the messages that carry file descriptors say so, and this one does not: "
    'VFIO_USER_DMA_MAP ("a file descriptor must be sent as part of the message meta-data"), '
    'VFIO_USER_DEVICE_SET_IRQS ("an array of event file descriptors was sent in the message '
    'meta-data"), the reply to VFIO_USER_DEVICE_GET_REGION_INFO ("When this flag is set, the '
    'reply will include a file descriptor in its meta-data"), the reply to '
    'VFIO_USER_DEVICE_GET_REGION_IO_FDS ("The reply message will additionally include at '
    'least one file descriptor in the ancillary data") and, in 0.9.2, the reply to '
    'VFIO_USER_VERSION in twin-socket mode ("pass the client end in the file descriptor '
    'array included with the reply message").'
)


def watch(item: pytest.Item, client) -> None:
    """Judge what ``client`` receives as part of ``item``'s conversation."""
    item.stash.setdefault(STRAY_KEY, []).append((client.stray, client.max_msg_fds))


def stray_failure(item: pytest.Item) -> str | None:
    """The FAIL message of a case whose clients received fds no message allows, or None."""
    found = [(s, limit) for stray, limit in item.stash.get(STRAY_KEY, ()) for s in stray]
    if not found:
        return None
    fds = sum(s.received - s.allowed for s, _ in found)
    named = "; ".join(s.describe() for s, _ in found[:_SHOWN])
    more = f"; and {len(found) - _SHOWN} more messages" if len(found) > _SHOWN else ""
    quotes = dict.fromkeys(_rule(s, limit) for s, limit in found)  # in order, once each
    return (
        f"the server sent {fds} fds more than the spec allows, on {len(found)} messages: "
        f"{named}{more}\n" + "\n".join(quotes)
    )


def _rule(s: StrayFds, max_msg_fds: int) -> str:
    """The sentence a message with fds beyond ``s.allowed`` breaks."""
    if s.error:
        return ERROR_REPLY
    if s.reply and s.command == Command.DEVICE_GET_REGION_INFO and s.allowed:
        return REGION_INFO
    if s.reply and s.allowed and s.allowed == max_msg_fds:
        return f"{MAX_MSG_FDS} (the client's max_msg_fds is {max_msg_fds})"
    if s.reply and s.command == Command.DEVICE_GET_REGION_INFO:
        return f"{REGION_INFO} (the region has no VFIO_REGION_INFO_FLAG_MMAP)"
    return f"{NO_FDS} ({command_name(s.command)})"
