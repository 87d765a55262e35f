"""Structure-aware mutations of a valid request, and requests carrying fds.

Each mutation in ``REQUEST_MUTATIONS`` damages a request one way a parser must
check; those that change a payload field find it in ``REQUEST_FIELDS``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from pytest_vfiouser.protocol import (
    FLAG_ERROR,
    FLAG_NO_REPLY,
    HEADER_SIZE,
    IRQ_SET_ACTION_MASK,
    IRQ_SET_DATA_MASK,
    TYPE_MASK,
    Command,
    DirtyPagesFlags,
    DmaMapFlags,
    DmaUnmapFlags,
    IrqSetFlags,
    SetIrqs,
)

from ._device_values import _U32_MAX, _U64, PAGE, _pick, device_max_msg_fds
from ._mutations import _MUTATION_STEPS, HUGE_WORDS, _mutate
from ._requests import requests
from ._wire import WireMessage

# Payload fields by command: name -> (offset, width). "index" is a region or IRQ
# index, "start"/"count" the SET_IRQS range, (offset|address, count|size) pairs
# are what may overflow 64 bits.
REQUEST_FIELDS: dict[int, dict[str, tuple[int, int]]] = {
    Command.DMA_MAP: {
        "argsz": (0, 4),
        "flags": (4, 4),
        "offset": (8, 8),
        "address": (16, 8),
        "size": (24, 8),
    },
    Command.DMA_UNMAP: {"argsz": (0, 4), "flags": (4, 4), "address": (8, 8), "size": (16, 8)},
    Command.DEVICE_GET_INFO: {"argsz": (0, 4), "flags": (4, 4)},
    Command.DEVICE_GET_REGION_INFO: {"argsz": (0, 4), "flags": (4, 4), "index": (8, 4)},
    Command.DEVICE_GET_REGION_IO_FDS: {
        "argsz": (0, 4),
        "flags": (4, 4),
        "index": (8, 4),
        "count": (12, 4),
    },
    Command.DEVICE_GET_IRQ_INFO: {"argsz": (0, 4), "flags": (4, 4), "index": (8, 4)},
    Command.DEVICE_SET_IRQS: {
        "argsz": (0, 4),
        "flags": (4, 4),
        "index": (8, 4),
        "start": (12, 4),
        "count": (16, 4),
    },
    Command.REGION_READ: {"address": (0, 8), "index": (8, 4), "size": (12, 4)},
    Command.REGION_WRITE: {"address": (0, 8), "index": (8, 4), "size": (12, 4)},
    Command.DIRTY_PAGES: {"argsz": (0, 4), "flags": (4, 4), "address": (8, 8), "size": (16, 8)},
    Command.REGION_WRITE_MULTI: {"count": (0, 8)},
    Command.DEVICE_FEATURE: {"argsz": (0, 4), "flags": (4, 4)},
    Command.MIG_DATA_READ: {"argsz": (0, 4), "size": (4, 4)},
    Command.MIG_DATA_WRITE: {"argsz": (0, 4), "size": (4, 4)},
}
# The flag bits each request defines (the rest are undefined).
DEFINED_REQUEST_FLAGS: dict[int, int] = {
    Command.DMA_MAP: int(DmaMapFlags.READ | DmaMapFlags.WRITE),
    Command.DMA_UNMAP: int(DmaUnmapFlags.GET_DIRTY_BITMAP),
    Command.DEVICE_GET_INFO: 0,
    Command.DEVICE_GET_REGION_INFO: 0,
    Command.DEVICE_GET_REGION_IO_FDS: 0,
    Command.DEVICE_GET_IRQ_INFO: 0,
    Command.DEVICE_SET_IRQS: int(IRQ_SET_DATA_MASK | IRQ_SET_ACTION_MASK),
    Command.DIRTY_PAGES: int(
        DirtyPagesFlags.START | DirtyPagesFlags.STOP | DirtyPagesFlags.GET_BITMAP
    ),
    Command.DEVICE_FEATURE: 0x7FFFF,
}
# Requests whose reply carries data: No_reply on them asks for nothing back.
DATA_REPLIES = frozenset(
    int(c)
    for c in (
        Command.VERSION,
        Command.DMA_UNMAP,
        Command.DEVICE_GET_INFO,
        Command.DEVICE_GET_REGION_INFO,
        Command.DEVICE_GET_REGION_IO_FDS,
        Command.DEVICE_GET_IRQ_INFO,
        Command.REGION_READ,
        Command.REGION_WRITE,
        Command.DIRTY_PAGES,
        Command.REGION_WRITE_MULTI,
        Command.DEVICE_FEATURE,
        Command.MIG_DATA_READ,
    )
)
_HEADER_FLAGS_UNDEFINED = [1 << b for b in range(6, 32)]
_ERRNOS = [0, 1, 5, 22, 4095, 4096, 0x7FFFFFFF, _U32_MAX]


def _field(msg: WireMessage, name: str) -> tuple[int, int] | None:
    """(offset, width) of a field the message's payload is long enough to hold."""
    spot = REQUEST_FIELDS.get(msg.command, {}).get(name)
    if spot is None or spot[0] + spot[1] > len(msg.payload):
        return None
    return spot


def _read_field(msg: WireMessage, spot: tuple[int, int]) -> int:
    return int.from_bytes(msg.payload[spot[0] : spot[0] + spot[1]], "little")


def _with_field(msg: WireMessage, spot: tuple[int, int], value: int, label: str) -> WireMessage:
    at, width = spot
    value &= (1 << 8 * width) - 1
    payload = msg.payload[:at] + value.to_bytes(width, "little") + msg.payload[at + width :]
    return msg.mutate(label, payload=payload)


def _m_msg_size_short(draw, msg, device):
    cut = draw(
        _pick(
            [1, 2, 4, 8, msg.true_size - HEADER_SIZE, msg.true_size - 1, msg.true_size],
            1,
            msg.true_size,
        )
    )
    return msg.mutate(f"msg_size-{cut}", msg_size=msg.true_size - cut)


def _m_msg_size_long(draw, msg, device):
    extra = draw(st.sampled_from((1, 2, 3, 4, 7, 8, 16, 64, 4096, 1 << 16)))
    if draw(st.booleans()):
        return msg.mutate(f"msg_size+{extra}", msg_size=min(msg.true_size + extra, _U32_MAX))
    huge = draw(st.sampled_from(HUGE_WORDS[4]))
    return msg.mutate(f"msg_size={huge:#x}", msg_size=huge)


def _m_argsz(draw, msg, device):
    spot = _field(msg, "argsz")
    value = _read_field(msg, spot)
    if draw(st.booleans()):
        delta = draw(st.sampled_from((-16, -8, -4, -1, 1, 4, 8, 16, 4096)))
        return _with_field(msg, spot, value + delta, f"argsz{delta:+d}")
    big = draw(
        st.sampled_from(
            tuple(
                v
                for v in (
                    0,
                    1,
                    0x7FFFFFFF,
                    0x80000000,
                    _U32_MAX,
                    (value * 2) & _U32_MAX,
                    (value << 16) & _U32_MAX,
                )
                if v != value
            )
        )
    )
    return _with_field(msg, spot, big, f"argsz={big:#x}")


def _m_flags_undefined(draw, msg, device):
    spot = _field(msg, "flags")
    defined = DEFINED_REQUEST_FLAGS.get(msg.command, 0)
    bits = [1 << b for b in range(32) if not defined & (1 << b)]
    bit = draw(st.sampled_from(bits))
    return _with_field(msg, spot, _read_field(msg, spot) | bit, f"flags|{bit:#x}")


def _m_index_past_end(draw, msg, device):
    spot = _field(msg, "index")
    num = (
        device.info.num_irqs
        if msg.command in (Command.DEVICE_GET_IRQ_INFO, Command.DEVICE_SET_IRQS)
        else device.info.num_regions
    )
    value = draw(st.sampled_from((num, num + 1, 0x80000000, _U32_MAX)))
    return _with_field(msg, spot, value, f"index={value:#x}")


def _m_overflow(draw, msg, device):
    """offset/address + count/size reaching 2**64 (the SET_IRQS range: 2**32): it wraps."""
    if _field(msg, "start") is not None and _field(msg, "count") is not None:
        start, count = _field(msg, "start"), _field(msg, "count")
        n = max(1, _read_field(msg, count))
        back = draw(st.integers(1, min(n, 1 << 16)))
        return _with_field(msg, start, (1 << 32) - back, f"start=2**32-{back} (+{n} wraps)")
    addr, size = _field(msg, "address"), _field(msg, "size")
    length = max(1, _read_field(msg, size))
    back = draw(st.integers(1, min(length, 1 << 20)))
    return _with_field(msg, addr, _U64 - back, f"address/offset=2**64-{back} (+{length} wraps)")


def _m_truncate(draw, msg, device):
    keep = draw(st.one_of(st.just(0), st.integers(0, len(msg.payload) - 1)))  # often none
    return msg.mutate(f"payload cut to {keep}", payload=msg.payload[:keep])


def _m_trailing(draw, msg, device):
    extra = draw(
        st.one_of(
            st.binary(min_size=1, max_size=16),
            st.sampled_from((bytes(8), b"\xff" * 24, bytes(4096))),
        )
    )
    return msg.mutate(f"+{len(extra)} trailing bytes", payload=msg.payload + extra)


def _m_type(draw, msg, device):
    kind = draw(st.integers(1, TYPE_MASK))
    return msg.mutate(f"type={kind}", flags=(msg.flags & ~TYPE_MASK) | kind)


def _m_header_flags(draw, msg, device):
    bit = draw(st.sampled_from(_HEADER_FLAGS_UNDEFINED))
    return msg.mutate(f"header flags|{bit:#x}", flags=msg.flags | bit)


def _m_error_bit(draw, msg, device):
    err = draw(st.sampled_from(_ERRNOS))
    return msg.mutate(f"Error bit, error={err}", flags=msg.flags | FLAG_ERROR, error=err)


def _m_error_field(draw, msg, device):
    err = draw(st.sampled_from(_ERRNOS[1:]))
    return msg.mutate(f"error field={err}", error=err)


def _m_no_reply(draw, msg, device):
    return msg.mutate("No_reply", flags=msg.flags | FLAG_NO_REPLY)


def _m_command(draw, msg, device):
    other = [int(c) for c in Command if c != Command.VERSION and c != msg.command]
    command = draw(
        st.one_of(st.sampled_from(other), st.sampled_from((0, 19, 20, 0x100, 0x8000, 0xFFFF)))
    )
    return msg.mutate(f"command={command}", command=command)


def _m_fds_extra(draw, msg, device):
    n = draw(st.integers(1, 3))
    return msg.mutate(f"{n} fds that do not belong", nfds=msg.nfds + n)


def _m_fds_missing(draw, msg, device):
    if msg.nfds:
        keep = draw(st.integers(0, msg.nfds - 1))
        return msg.mutate(f"{msg.nfds - keep} of its fds missing", nfds=keep)
    spot = _field(msg, "offset")  # a DMA_MAP that needs an fd (a file offset) but has none
    return _with_field(msg, spot, PAGE, "file offset without the fd")


def _m_bytes(draw, msg, device):
    payload = _mutate(msg.payload, draw(_MUTATION_STEPS))
    return msg.mutate("payload bytes damaged", payload=payload)


# name -> (applies to the message?, mutator)
REQUEST_MUTATIONS: dict[str, tuple[Callable[[WireMessage], bool], Callable]] = {
    "msg_size_short": (lambda m: True, _m_msg_size_short),
    "msg_size_long": (lambda m: True, _m_msg_size_long),
    "argsz": (lambda m: _field(m, "argsz") is not None, _m_argsz),
    "flags_undefined": (lambda m: _field(m, "flags") is not None, _m_flags_undefined),
    "index_past_end": (lambda m: _field(m, "index") is not None, _m_index_past_end),
    "overflow": (
        lambda m: (
            (_field(m, "address") is not None and _field(m, "size") is not None)
            or (_field(m, "start") is not None and _field(m, "count") is not None)
        ),
        _m_overflow,
    ),
    "truncate": (lambda m: bool(m.payload), _m_truncate),
    "trailing": (lambda m: True, _m_trailing),
    "type": (lambda m: True, _m_type),
    "header_flags": (lambda m: True, _m_header_flags),
    "error_bit": (lambda m: True, _m_error_bit),
    "error_field": (lambda m: True, _m_error_field),
    "no_reply": (lambda m: m.command in DATA_REPLIES and not m.flags & FLAG_NO_REPLY, _m_no_reply),
    "command": (lambda m: True, _m_command),
    "fds_extra": (lambda m: True, _m_fds_extra),
    "fds_missing": (
        lambda m: m.nfds > 0 or (m.command == Command.DMA_MAP and _field(m, "offset") is not None),
        _m_fds_missing,
    ),
    "bytes": (lambda m: bool(m.payload), _m_bytes),
}


@functools.cache
def _one_of_names(names: tuple[str, ...]) -> SearchStrategy[str]:
    return st.sampled_from(names)


def mutate_request(draw, msg: WireMessage, device, ops: Iterable[str] | None = None) -> WireMessage:
    """One mutation of ``msg`` (drawn with ``draw``, from ``ops`` or all that apply)."""
    names = tuple(n for n in (ops or REQUEST_MUTATIONS) if REQUEST_MUTATIONS[n][0](msg))
    name = draw(_one_of_names(names))
    return REQUEST_MUTATIONS[name][1](draw, msg, device)


def mutated_requests(
    device, spec: str = "0.9.1", max_mutations: int = 2, ops: Iterable[str] | None = None
) -> SearchStrategy[WireMessage]:
    """Valid requests (``requests``) damaged 1..``max_mutations`` times the ways that
    matter to a parser: msg_size shorter or longer than what follows, argsz off by a
    little or a lot, undefined flag bits, indexes past the end, offset + count past
    2**64, truncated payloads, trailing bytes, wrong type bits, the Error bit and
    error field on a command, No_reply on commands that return data, another command
    number, fds where none belong and missing where required, damaged bytes.
    ``ops`` restricts the mutations (names of ``REQUEST_MUTATIONS``)."""
    base = requests(device, spec)
    ops = tuple(ops) if ops is not None else None

    @st.composite
    def build(draw):
        msg = draw(base)
        for _ in range(draw(st.integers(1, max_mutations))):
            msg = mutate_request(draw, msg, device, ops)
        return msg

    return build()


def requests_with_fds(device, spec: str = "0.9.1") -> SearchStrategy[WireMessage]:
    """Requests that carry fds the server must take or give back: DMA_MAP with a memfd,
    SET_IRQS with eventfds (valid ones, with one eventfd a sub-index or one more, one
    fewer, none, more than the server's max_msg_fds), and any request with fds that do
    not belong or fewer than it needs."""
    carrying = requests(device, spec, (Command.DMA_MAP, Command.DEVICE_SET_IRQS), no_reply=False)
    fd_ops = ("fds_extra", "fds_missing")
    any_request = requests(device, spec)

    @st.composite
    def damaged(draw):
        return mutate_request(draw, draw(any_request), device, fd_ops)

    choices = [carrying, damaged()]
    eventfd_irqs = sorted(
        (i, q.count) for i, q in device.irqs.items() if q.count and q.flags & 1
    )  # IrqInfoFlags.EVENTFD
    if eventfd_irqs:
        choices.append(_set_irqs_eventfds(eventfd_irqs, device_max_msg_fds(device)))
    return st.one_of(*choices)


@st.composite
def _set_irqs_eventfds(draw, irqs: list[tuple[int, int]], max_fds: int):
    """A valid SET_IRQS DATA_EVENTFD of an index and range the device has, with as many
    eventfds as sub-indexes, or one more, one fewer, none, more than max_msg_fds."""
    index, n = draw(st.sampled_from(irqs))
    start = draw(st.integers(0, n - 1))
    count = draw(st.integers(1, n - start))
    action = draw(
        st.sampled_from(
            (int(IrqSetFlags.ACTION_TRIGGER),) * 2
            + tuple(int(a) for a in (IrqSetFlags.ACTION_MASK, IrqSetFlags.ACTION_UNMASK))
        )
    )
    nfds = draw(st.sampled_from((count, count, count + 1, count - 1, 0, max_fds + 1)))
    payload = SetIrqs(
        SetIrqs.FIXED_SIZE, int(IrqSetFlags.DATA_EVENTFD) | action, index, start, count
    ).pack()
    label = "" if nfds == count else f"{nfds} eventfds for {count} sub-indexes"
    return WireMessage(
        draw(st.integers(0, 0xFFFF)),
        int(Command.DEVICE_SET_IRQS),
        payload,
        nfds=min(max(nfds, 0), 253),
        mutation=label,
    )
