"""Stateful fuzzing: sequences of requests against a model of what the server holds.

Each case is a Hypothesis RuleBasedStateMachine built around the fixtures
(the class is made per test, bound to the fuzzer and the device, and run with
run_state_machine_as_test). A run is one example: a sequence of steps on one
connection, each reply checked against what the model predicts; Hypothesis
shrinks a failing sequence to the shortest it can find. The failure message
lists the steps (Hypothesis' own listing and what each step got), the wire
log of the run, and a standalone reproducer (see conformance/_fuzz.py).

* DMA: the mapped ranges predict EEXIST on overlap, the exact-match rule of
  DMA_UNMAP, and (in the reconnect variant) a clean slate for a new client.
* SET_IRQS: eventfds assigned to sub-indexes, mask state, client triggers
  (DATA_NONE / DATA_BOOL + ACTION_TRIGGER): which eventfds are signalled.
* 0.9.1 migration: device_state across the whole state table.
* Region access: writes and reads of the scratch ranges against a byte model.
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import struct

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.fuzz import FuzzFailure, run_machine, run_with
from pytest_vfiouser.protocol import (
    V1_TABLE_STATES,
    V1_TRANSITIONS,
    VFIO_REGION_SUBTYPE_MIGRATION,
    VFIO_REGION_TYPE_MIGRATION,
    Command,
    DmaMap,
    DmaMapFlags,
    DmaUnmap,
    IrqInfoFlags,
    IrqSetFlags,
    MigrationInfo,
    RegionAccess,
    RegionFlags,
    RegionRead,
    RegionTypeCap,
    RegionWrite,
    SetIrqs,
    v1_transition_valid,
)
from pytest_vfiouser.protocol import MigrationStateV1 as S

from ._fuzz import end_of_run, fuzz_for
from ._support import (
    BACK,
    SIGNAL_WAIT,
    eventfd_value,
    make_eventfd,
    server_max_msg_fds,
    state_name,
)

PAGE = 4096
RW = int(DmaMapFlags.READ | DmaMapFlags.WRITE)
NONE, BOOL, EVENTFD = (
    int(IrqSetFlags.DATA_NONE),
    int(IrqSetFlags.DATA_BOOL),
    int(IrqSetFlags.DATA_EVENTFD),
)
MASK, UNMASK, TRIGGER = (
    int(IrqSetFlags.ACTION_MASK),
    int(IrqSetFlags.ACTION_UNMASK),
    int(IrqSetFlags.ACTION_TRIGGER),
)
WINDOW = 128  # bytes at each end of a scratch range that region accesses stay in
_U32, _U64 = struct.Struct("<I"), struct.Struct("<Q")
_windows = itertools.count()


def _fail(text: str, level: str | None = None):
    raise FuzzFailure(text, level)


def step(fn):
    """A rule body: skipped once the server died or hung (the run is over), and any
    failure recorded with the steps so far (for the report and the reproducer)."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        if self.fuzzer.fatal is not None:
            return None
        try:
            return fn(self, *args, **kwargs)
        except Exception as e:
            self.fuzzer.record(e, self, lambda m: m.describe())
            raise

    return wrapper


class FuzzMachine(RuleBasedStateMachine):
    """A state machine run over the fuzzer's connection; ``steps`` says what each did."""

    fuzzer = None  # bound by the test

    def __init__(self):
        super().__init__()
        self.steps: list[str] = []
        # After a failure every run (a shrinking attempt) gets a connection of its own.
        self.fuzzer.begin(fresh=self.fuzzer.failure is not None)

    def note_step(self, text: str) -> None:
        self.steps.append(text)

    def describe(self) -> str:
        return "\n".join(f"  {i + 1}. {s}" for i, s in enumerate(self.steps)) or "  (no step)"

    def request(self, command, payload=b"", fds=(), what=""):
        return self.fuzzer.request(command, payload, fds, what)


def bound(machine: type, **attrs) -> type:
    """``machine`` with what a case gives it (the fuzzer, the device's indexes, ...).
    Hypothesis makes a new instance for every example, so they are class attributes of
    a subclass made for the case."""
    return type(machine.__name__, (machine,), attrs)


def _outcome(reply) -> str:
    if reply is None:
        return "connection closed"
    return "ok" if reply.ok else f"error {reply.error}"


# ------------------------------------------------------------------ DMA map


class DmaMapMachine(FuzzMachine):
    """Model: the mappings of this connection, [address, address + size)."""

    def __init__(self):
        super().__init__()
        self.fds_ok = server_max_msg_fds(self.fuzzer.connection()) > 0
        self._new_window()

    def _new_window(self):
        # A range of client addresses of its own: what an earlier run (or a server that
        # keeps mappings after a client leaves) left cannot collide with this run.
        self.base = 0x30_0000_0000 + next(_windows) * 0x100_0000
        self.maps: dict[int, int] = {}  # address -> size

    def _range(self, start: int, pages: int) -> tuple[int, int]:
        return self.base + start * PAGE, pages * PAGE

    def _overlaps(self, address: int, size: int) -> bool:
        return any(a < address + size and address < a + n for a, n in self.maps.items())

    @rule(
        start=st.integers(0, 31),
        pages=st.integers(1, 8),
        with_fd=st.booleans(),
        flags=st.sampled_from([RW, RW, int(DmaMapFlags.READ), int(DmaMapFlags.WRITE)]),
    )
    @step
    def map(self, start, pages, with_fd, flags):
        address, size = self._range(start, pages)
        overlap = self._overlaps(address, size)
        with_fd = with_fd and self.fds_ok  # a server that takes no fds gets none
        fds = []
        if with_fd:
            fds = [os.memfd_create("vfu-fuzz-dma", os.MFD_CLOEXEC)]
            os.ftruncate(fds[0], size)
        what = (
            f"DMA_MAP [{address:#x}, +{size:#x}) flags {flags} "
            f"{'with a memfd' if with_fd else 'without fd'}"
        )
        try:
            reply = self.request(
                Command.DMA_MAP, DmaMap(DmaMap.SIZE, flags, 0, address, size).pack(), fds, what
            )
        finally:
            for fd in fds:
                os.close(fd)
        self.note_step(f"{what}: {_outcome(reply)}{' (overlaps a mapping)' if overlap else ''}")
        if overlap:
            if reply is None:
                _fail(
                    f"the server closed the connection on {what}, which overlaps a "
                    f"mapping ({self._maps_text()}): a command to map over an existing "
                    "region must be failed by the server with EEXIST"
                )
            # errno 0 is no fault: "Error ... is an optional UNIX errno value" (dma.py's case)
            if reply.ok or reply.error not in (errno.EEXIST, 0):
                _fail(
                    f"{what} overlaps a mapping ({self._maps_text()}), but the server "
                    f"answered {_outcome(reply)}: a command to map over an existing region "
                    "must be failed by the server with EEXIST set in error field"
                )
            return
        if reply is None or not reply.ok:
            _fail(
                f"the server refused {what} ({_outcome(reply)}), which overlaps no mapping "
                f"({self._maps_text()})"
            )
        self.maps[address] = size

    def _maps_text(self) -> str:
        return (
            ", ".join(f"[{a:#x}, +{n:#x})" for a, n in sorted(self.maps.items())) or "no mappings"
        )

    def _unmap(self, address: int, size: int) -> None:
        exact = self.maps.get(address) == size
        what = f"DMA_UNMAP [{address:#x}, +{size:#x})"
        reply = self.request(
            Command.DMA_UNMAP, DmaUnmap(DmaUnmap.ENTRY_SIZE, 0, address, size).pack(), (), what
        )
        self.note_step(
            f"{what}: {_outcome(reply)}"
            f"{' (a mapping exactly)' if exact else ' (matches no mapping)'}"
        )
        if exact:
            if reply is None or not reply.ok:
                _fail(
                    f"the server refused {what} ({_outcome(reply)}), which matches the "
                    f"mapping exactly ({self._maps_text()})"
                )
            entry = (
                DmaUnmap.unpack(reply.payload[: DmaUnmap.ENTRY_SIZE])
                if len(reply.payload) >= DmaUnmap.ENTRY_SIZE
                else None
            )
            if entry is None or (entry.address, entry.size) != (address, size):
                _fail(
                    f"the reply to {what} is {reply.payload.hex()}: the server responds "
                    "with the original DMA entry in the request"
                )
            del self.maps[address]
            return
        if reply is None:  # refused by closing: the mappings of that connection are gone
            self._new_window()
            return
        if reply.ok:  # the rule binds the request; validating it is a SHOULD
            _fail(
                f"the server accepted {what}, which matches no mapping exactly "
                f"({self._maps_text()}): the address and size of the DMA region being "
                "unmapped must match exactly a previous mapping (the server should "
                "validate input)",
                "should",
            )

    @rule(start=st.integers(0, 31), pages=st.integers(1, 8))
    @step
    def unmap(self, start, pages):
        self._unmap(*self._range(start, pages))

    @precondition(lambda self: self.maps)
    @rule(data=st.data())
    @step
    def unmap_a_mapping(self, data):
        address = data.draw(st.sampled_from(sorted(self.maps)), label="mapping")
        self._unmap(address, self.maps[address])

    def teardown(self):
        if self.fuzzer.fatal is not None or self.fuzzer.client is None:
            return
        for address, size in list(self.maps.items()):
            try:
                self.request(
                    Command.DMA_UNMAP, DmaUnmap(DmaUnmap.ENTRY_SIZE, 0, address, size).pack()
                )
            except Exception:
                return


class DmaMapReconnectMachine(DmaMapMachine):
    """The DMA model with new clients: a new one starts with no mappings."""

    @rule()
    @step
    def reconnect(self):
        """A new client: it starts with no mappings (so every earlier one maps again)."""
        old = self.maps
        self.fuzzer.drop()
        self.fuzzer.connection()
        self.maps = {}
        self.note_step(f"new connection (the old one had {len(old)} mappings)")
        for address, size in sorted(old.items()):
            what = f"DMA_MAP [{address:#x}, +{size:#x}) after the client that mapped it left"
            reply = self.request(
                Command.DMA_MAP, DmaMap(DmaMap.SIZE, RW, 0, address, size).pack(), (), what
            )
            self.note_step(f"{what}: {_outcome(reply)}")
            if reply is None or not reply.ok:
                _fail(
                    f"the server refused {what} ({_outcome(reply)}): on a client "
                    "disconnection all client memory regions are unmapped"
                )
            self.maps[address] = size


@case("fuzz/dma-map-model", MUST)
def test_dma_map_model(request, fuzzer, vfu_device, vfu_observe):
    """Random sequences of DMA_MAP (with and without an fd) and DMA_UNMAP over a small
    window of client addresses agree with a model of the mapped ranges: a map over an
    existing mapping fails with EEXIST, a map of free addresses succeeds, an unmap that
    matches a mapping exactly succeeds (its reply is the request's entry), any other
    unmap is refused (a SHOULD: the exact-match rule binds the request).

    Spec (VFIO_USER_DMA_MAP): "A command to map over an existing region must be failed by
    the server with EEXIST set in error field in the reply." (VFIO_USER_DMA_UNMAP): "The
    address and size of the DMA region being unmapped must match exactly a previous
    mapping." "The server responds with the original DMA entry in the request."
    """
    run_machine(fuzzer, bound(DmaMapMachine, fuzzer=fuzzer), fuzz_for(request, 0.075))
    end_of_run(fuzzer, vfu_device, vfu_observe)


@case("fuzz/dma-map-model-reconnect", SHOULD)
def test_dma_map_model_reconnect(request, fuzzer, vfu_device, vfu_observe):
    """The DMA model with reconnections: after a client leaves, a new client finds no
    mapping of it (every range the old client had mapped maps again without EEXIST).

    Spec (Client Disconnection): "the server should respond to a client disconnection as
    follows: all client memory regions are unmapped and cleaned up (including closing any
    passed file descriptors)"
    """
    run_machine(fuzzer, bound(DmaMapReconnectMachine, fuzzer=fuzzer), fuzz_for(request, 0.05))
    end_of_run(fuzzer, vfu_device, vfu_observe)


# ------------------------------------------------------------------ SET_IRQS


def _irq_indexes(device) -> dict:
    """The IRQ indexes the machine drives: a count and VFIO_IRQ_INFO_EVENTFD."""
    return {
        i: q for i, q in sorted(device.irqs.items()) if q.count and q.flags & IrqInfoFlags.EVENTFD
    }


class IrqMachine(FuzzMachine):
    """Model per (index, sub-index): the eventfd assigned (ours), masked (True, False,
    None: unknown), an interrupt held while masked."""

    # bound by the case (see bound())
    device: object  # the DeviceModel
    hooks: object  # the vfu_hooks
    indexes: dict  # index -> IrqInfo, the indexes driven (see _irq_indexes)
    maskable: set  # those of them that are VFIO_IRQ_INFO_MASKABLE

    def __init__(self):
        super().__init__()
        self.max_fds = min(4, server_max_msg_fds(self.fuzzer.connection()))
        self.trig: dict[tuple[int, int], int | None] = {}
        self.masked: dict[tuple[int, int], bool | None] = {}
        self.pending: dict[tuple[int, int], bool] = {}
        self.fds: list[int] = []  # every eventfd of this run
        self.owner: dict[int, tuple[int, int] | None] = {}
        for i, info in self.indexes.items():
            self._set(i, NONE | TRIGGER, 0, 0, what=f"disable IRQ index {i}", must=True)
            if i in self.maskable:
                self._set(i, NONE | UNMASK, 0, info.count, what=f"unmask IRQ index {i}", must=True)
            for s in range(info.count):
                self.trig[i, s] = None
                self.masked[i, s] = (
                    False
                    if i in self.maskable
                    else (None if info.flags & IrqInfoFlags.AUTOMASKED else False)
                )
                self.pending[i, s] = False
            # Every sub-index starts with an eventfd (so that a trigger has one to signal).
            if info.flags & IrqInfoFlags.NORESIZE and info.count > self.max_fds:
                continue
            for start in range(0, info.count if self.max_fds else 0, self.max_fds or 1):
                count = min(self.max_fds, info.count - start)
                new = [make_eventfd() for _ in range(count)]
                self.fds += new
                self._set(
                    i,
                    EVENTFD | TRIGGER,
                    start,
                    count,
                    new,
                    must=True,
                    what=f"SET_IRQS DATA_EVENTFD|ACTION_TRIGGER of IRQ {i} sub-indexes "
                    f"{start}..{start + count - 1} with {count} eventfds",
                )
                for s, fd in zip(range(start, start + count), new, strict=True):
                    self.trig[i, s] = fd
                    self.owner[fd] = (i, s)

    def _set(self, index, flags, start, count, fds=(), data=b"", what="", must=False):
        payload = SetIrqs(SetIrqs.FIXED_SIZE + len(data), flags, index, start, count, data).pack()
        reply = self.request(Command.DEVICE_SET_IRQS, payload, fds, what)
        if reply is None:
            _fail(f"the server closed the connection on {what}, a valid SET_IRQS")
        if must and not reply.ok:
            _fail(f"the server refused {what} (errno {reply.error}), a valid SET_IRQS")
        return reply

    def _span(self, data, index):
        n = self.indexes[index].count
        start = data.draw(st.integers(0, n - 1), label="start")
        count = data.draw(st.integers(1, n - start), label="count")
        return start, count

    def _check_signals(self, expect: set, maybe: set, what: str) -> set:
        """Read every eventfd of the run; the ones of ``expect`` must be signalled, those
        of ``maybe`` may be, no other. Returns the (index, sub) of ``maybe`` signalled."""
        got = {}
        for key in sorted(expect):
            got[self.trig[key]] = eventfd_value(self.trig[key], SIGNAL_WAIT)
        for fd in self.fds:
            if fd not in got:
                got[fd] = eventfd_value(fd)
        for key in sorted(expect):
            if not got[self.trig[key]]:
                _fail(
                    f"after {what}, the eventfd of IRQ {key[0]}.{key[1]} (assigned with "
                    "DATA_EVENTFD|ACTION_TRIGGER, unmasked) was not signalled within "
                    f"{SIGNAL_WAIT:g} s: the descriptors will be signalled when the action "
                    "defined by the action flags occurs"
                )
        maybe_fds = {self.trig[k]: k for k in maybe if self.trig.get(k) is not None}
        expect_fds = {self.trig[k] for k in expect}
        for fd, value in got.items():
            if value and fd not in expect_fds and fd not in maybe_fds:
                owner = self.owner.get(fd)
                where = (
                    f"assigned to IRQ {owner[0]}.{owner[1]}"
                    if owner
                    else "no longer assigned (replaced, de-assigned or disabled)"
                )
                state = ""
                if owner is not None:
                    state = " and masked" if self.masked.get(owner) else " and not triggered"
                _fail(
                    f"after {what}, an eventfd {where}{state} was signalled: "
                    "only the interrupts triggered (and not masked) signal theirs"
                )
        return {k for fd, k in maybe_fds.items() if got.get(fd)}

    def _fire(self, subs: list[tuple[int, int]], what: str) -> None:
        """The interrupts of ``subs`` were raised: update the model and check."""
        expect, maybe = set(), set()
        for key in subs:
            if self.trig[key] is None:
                continue  # not enabled: dropped
            if self.masked[key] is False:
                expect.add(key)
            elif self.masked[key] is True:
                self.pending[key] = True
            else:
                maybe.add(key)
        seen = self._check_signals(expect, maybe, what)
        automasked = {i for i, q in self.indexes.items() if q.flags & IrqInfoFlags.AUTOMASKED}
        for key in expect | seen:
            self.pending[key] = False
            if key[0] in automasked:
                self.masked[key] = True
            elif self.masked[key] is None:
                self.masked[key] = False
        for key in maybe - seen:
            self.masked[key], self.pending[key] = True, True  # it was masked: held now

    @precondition(lambda self: self.max_fds > 0)
    @rule(data=st.data())
    @step
    def assign(self, data):
        index = data.draw(st.sampled_from(sorted(self.indexes)), label="index")
        start, count = self._span(data, index)
        count = min(count, self.max_fds)
        new = [make_eventfd() for _ in range(count)]
        self.fds += new
        what = (
            f"SET_IRQS DATA_EVENTFD|ACTION_TRIGGER of IRQ {index} sub-indexes "
            f"{start}..{start + count - 1} with {count} new eventfds"
        )
        reply = self._set(index, EVENTFD | TRIGGER, start, count, new, what=what)
        subs = range(start, start + count)
        noresize = (
            self.indexes[index].flags & IrqInfoFlags.NORESIZE
            and any(self.trig[index, s] is not None for s in range(self.indexes[index].count))
            and any(self.trig[index, s] is None for s in subs)
        )
        self.note_step(f"{what}: {_outcome(reply)}")
        if not reply.ok:
            if noresize:
                return  # "new sub-indexes cannot be enabled without disabling the entire type"
            _fail(f"the server refused {what} (errno {reply.error})")
        for s, fd in zip(subs, new, strict=True):
            old = self.trig[index, s]
            if old is not None:
                self.owner[old] = None
            self.trig[index, s] = fd
            self.owner[fd] = (index, s)
        self._check_signals(set(), set(), what)

    @rule(data=st.data())
    @step
    def deassign(self, data):
        index = data.draw(st.sampled_from(sorted(self.indexes)), label="index")
        start, count = self._span(data, index)
        what = (
            f"SET_IRQS DATA_EVENTFD|ACTION_TRIGGER of IRQ {index} sub-indexes "
            f"{start}..{start + count - 1} without fds (de-assign)"
        )
        reply = self._set(index, EVENTFD | TRIGGER, start, count, what=what, must=True)
        self.note_step(f"{what}: {_outcome(reply)}")
        for s in range(start, start + count):
            old = self.trig[index, s]
            if old is not None:
                self.owner[old] = None
            self.trig[index, s] = None
        self._check_signals(set(), set(), what)

    @rule(data=st.data())
    @step
    def disable(self, data):
        index = data.draw(st.sampled_from(sorted(self.indexes)), label="index")
        what = f"SET_IRQS DATA_NONE|ACTION_TRIGGER of IRQ {index}, start 0, count 0 (disable)"
        reply = self._set(index, NONE | TRIGGER, 0, 0, what=what, must=True)
        self.note_step(f"{what}: {_outcome(reply)}")
        for s in range(self.indexes[index].count):
            old = self.trig[index, s]
            if old is not None:
                self.owner[old] = None
            self.trig[index, s] = None
            self.pending[index, s] = False
            if index in self.maskable:
                self.masked[index, s] = None  # the spec does not say what disable does to it
        self._check_signals(set(), set(), what)

    def _selected(self, data, index) -> tuple[int, int, int, bytes, list]:
        start, count = self._span(data, index)
        if data.draw(st.booleans(), label="with DATA_BOOL"):
            bools = data.draw(
                st.lists(st.sampled_from([0, 1]), min_size=count, max_size=count), label="bools"
            )
            subs = [(index, start + k) for k, b in enumerate(bools) if b]
            return BOOL, start, count, bytes(bools), subs
        return NONE, start, count, b"", [(index, s) for s in range(start, start + count)]

    @rule(data=st.data())
    @step
    def trigger(self, data):
        index = data.draw(st.sampled_from(sorted(self.indexes)), label="index")
        kind, start, count, bools, subs = self._selected(data, index)
        what = (
            f"SET_IRQS {'DATA_BOOL' if kind == BOOL else 'DATA_NONE'}|ACTION_TRIGGER of "
            f"IRQ {index} sub-indexes {start}..{start + count - 1}"
            f"{f' bools {list(bools)}' if bools else ''} (a client trigger)"
        )
        reply = self._set(index, kind | TRIGGER, start, count, data=bools, what=what)
        self.note_step(f"{what}: {_outcome(reply)}")
        if not reply.ok:  # "Not all interrupt types support every combination"
            self._check_signals(set(), set(), what)
            return
        self._fire(subs, what)

    @precondition(lambda self: "vfu_trigger_irq" in self.device.hooks)
    @rule(data=st.data())
    @step
    def device_interrupt(self, data):
        index = data.draw(st.sampled_from(sorted(self.indexes)), label="index")
        sub = data.draw(st.integers(0, self.indexes[index].count - 1), label="sub")
        what = f"the device raising interrupt {index}.{sub} (vfu_trigger_irq hook)"
        self.hooks.trigger_irq(self.fuzzer.connection(), index, sub)
        self.note_step(what)
        self._fire([(index, sub)], what)

    @precondition(lambda self: self.maskable)
    @rule(data=st.data(), action=st.booleans())
    @step
    def mask_or_unmask(self, data, action):
        index = data.draw(st.sampled_from(sorted(self.maskable)), label="index")
        kind, start, count, bools, subs = self._selected(data, index)
        name = "ACTION_MASK" if action else "ACTION_UNMASK"
        what = (
            f"SET_IRQS {'DATA_BOOL' if kind == BOOL else 'DATA_NONE'}|{name} of IRQ "
            f"{index} sub-indexes {start}..{start + count - 1}"
            f"{f' bools {list(bools)}' if bools else ''}"
        )
        reply = self._set(
            index,
            kind | (MASK if action else UNMASK),
            start,
            count,
            data=bools,
            what=what,
            must=True,
        )
        self.note_step(f"{what}: {_outcome(reply)}")
        if action:
            for key in subs:
                self.masked[key] = True
            self._check_signals(set(), set(), what)
            return
        # An interrupt held while masked may be delivered now (the spec is silent).
        maybe = {k for k in subs if self.pending[k] and self.trig[k] is not None}
        seen = self._check_signals(set(), maybe, what)
        automasked = self.indexes[index].flags & IrqInfoFlags.AUTOMASKED
        for key in subs:
            self.masked[key] = bool(automasked) and key in seen
            self.pending[key] = False

    @rule(data=st.data(), past=st.sampled_from(["start", "count", "index"]))
    @step
    def out_of_range(self, data, past):
        index = data.draw(st.sampled_from(sorted(self.indexes)), label="index")
        n = self.indexes[index].count
        start, count, target = {
            "start": (n, 1, index),
            "count": (0, n + 1, index),
            "index": (0, 1, self.device.num_irqs),
        }[past]
        what = (
            f"SET_IRQS DATA_NONE|ACTION_TRIGGER of IRQ {target} start {start} count "
            f"{count} (past the end: IRQ {index} has {n} sub-indexes, the device "
            f"{self.device.num_irqs} IRQ types)"
        )
        payload = SetIrqs(SetIrqs.FIXED_SIZE, NONE | TRIGGER, target, start, count).pack()
        reply = self.request(Command.DEVICE_SET_IRQS, payload, (), what)
        self.note_step(f"{what}: {_outcome(reply)}")
        if reply is None:  # refused by closing: the new connection starts afresh
            self._reset_after_close()
            return
        if reply.ok:
            _fail(f"the server accepted {what}")
        self._check_signals(set(), set(), what)

    def _reset_after_close(self):
        for key in self.trig:
            if self.trig[key] is not None:
                self.owner[self.trig[key]] = None
            self.trig[key] = None

    def teardown(self):
        try:
            if self.fuzzer.fatal is None and self.fuzzer.client is not None:
                for i, info in self.indexes.items():
                    self.request(
                        Command.DEVICE_SET_IRQS,
                        SetIrqs(SetIrqs.FIXED_SIZE, NONE | TRIGGER, i, 0, 0).pack(),
                    )
                    if i in self.maskable:
                        self.request(
                            Command.DEVICE_SET_IRQS,
                            SetIrqs(SetIrqs.FIXED_SIZE, NONE | UNMASK, i, 0, info.count).pack(),
                        )
        except Exception:
            pass
        finally:
            for fd in self.fds:
                os.close(fd)
            self.fds = []


@case("fuzz/set-irqs-model", MUST)
def test_set_irqs_model(request, fuzzer, vfu_device, vfu_hooks, vfu_observe):
    """Random sequences of SET_IRQS on the device's IRQ indexes (assign eventfds to
    sub-indexes, de-assign, disable an index, trigger from the client with DATA_NONE or
    DATA_BOOL, mask and unmask MASKABLE indexes, ranges past the end) agree with a model:
    a triggered sub-index with an eventfd and not masked signals it (and an AUTOMASKED one
    then masks itself); a masked one, one without an eventfd, or one whose eventfd was
    replaced does not; nothing else is signalled; requests past the end are refused.

    Spec (VFIO_USER_DEVICE_SET_IRQS): "VFIO_IRQ_SET_DATA_EVENTFD indicates an array of
    event file descriptors was sent in the message meta-data. These descriptors will be
    signalled when the action defined by the action flags occurs. ... If no file
    descriptors are provided, this de-assigns the specified previously configured
    interrupts." "As a special case, a count (and start) of 0, with data flags of
    VFIO_IRQ_SET_DATA_NONE disables all interrupts of the index." "A client may trigger a
    device IRQ itself, by sending a VFIO_USER_DEVICE_SET_IRQ message with
    flags=(VFIO_IRQ_SET_DATA_NONE/BOOL|VFIO_IRQ_SET_ACTION_TRIGGER)." (GET_IRQ_INFO):
    "VFIO_IRQ_INFO_AUTOMASKED indicates the IRQ type masks itself after being triggered,
    and the client must send an UNMASK action to receive new interrupts."
    """
    indexes = _irq_indexes(vfu_device)
    if not indexes:
        pytest.skip("the device has no IRQ index with VFIO_IRQ_INFO_EVENTFD and a count")
    maskable = {i for i, q in indexes.items() if q.flags & IrqInfoFlags.MASKABLE}
    machine = bound(
        IrqMachine,
        fuzzer=fuzzer,
        device=vfu_device,
        hooks=vfu_hooks,
        indexes=indexes,
        maskable=maskable,
    )
    run_machine(fuzzer, machine, fuzz_for(request, 0.125, stateful_step_count=15))
    end_of_run(fuzzer, vfu_device, vfu_observe)


# ------------------------------------------------------------------ migration (0.9.1)


def _migration_region(device) -> tuple[int, int] | None:
    for index, info in sorted(device.regions.items()):
        cap = info.cap(RegionTypeCap)
        if cap is not None and (cap.type, cap.subtype) == (
            VFIO_REGION_TYPE_MIGRATION,
            VFIO_REGION_SUBTYPE_MIGRATION,
        ):
            return index, info.size
    return None


# ("valid", k): the k-th valid transition from the current state; ("any", v): value v.
# (The strategy does not depend on the state, which a replay may find different.)
_WALK_CHOICES = st.one_of(
    st.tuples(st.just("valid"), st.integers(0, 3)), st.tuples(st.just("any"), st.integers(0, 7))
)


class MigrationMachine(FuzzMachine):
    """Model: device_state."""

    # bound by the case (see bound())
    index: int  # the migration region
    size: int  # its size
    covered: set  # (from, to) transitions tried, for _sweep

    def __init__(self):
        super().__init__()
        self.state = self.read_state("device_state at the start of the run")
        if self.state != S.RUNNING and not self.walk_back():
            _fail(
                f"device_state is {state_name(self.state)} at the start of a run and valid "
                "transitions do not bring it back to running"
            )

    def read(self, offset: int, n: int, what: str) -> bytes:
        reply = self.request(
            Command.REGION_READ,
            RegionRead(offset, self.index, n).pack(),
            (),
            f"REGION_READ of {what}",
        )
        if reply is None or not reply.ok:
            _fail(f"REGION_READ of {what} failed ({_outcome(reply)})")
        data = reply.payload[RegionAccess.SIZE :]
        if len(data) != n:
            _fail(f"REGION_READ of {n} bytes of {what} returned {len(data)}")
        return data

    def read_state(self, what: str = "device_state") -> int:
        return _U32.unpack(self.read(MigrationInfo.DEVICE_STATE, 4, what))[0]

    def write_state(self, value: int):
        return self.request(
            Command.REGION_WRITE,
            RegionWrite(MigrationInfo.DEVICE_STATE, self.index, 4, _U32.pack(value)).pack(),
            (),
            f"REGION_WRITE of device_state {state_name(value)}",
        )

    def walk_back(self) -> bool:
        for target in BACK.get(self.state, (None,)):
            if target is None:
                return False
            reply = self.write_state(target)
            if reply is None or not reply.ok:
                return False
            self.state = target
        self.state = self.read_state()
        return self.state == S.RUNNING

    @rule(data=st.data())
    @step
    def walk(self, data):
        """A valid transition half of the time (so that walks go deep), any value else."""
        kind, k = data.draw(_WALK_CHOICES, label="next device_state")
        valid = sorted(int(b) for a, b in V1_TRANSITIONS if a == self.state)
        self.transition(valid[k % len(valid)] if kind == "valid" and valid else k % 8)

    def transition(self, to):
        frm = self.state
        what = f"the transition {state_name(frm)} -> {state_name(to)}"
        reply = self.write_state(to)
        if reply is None:
            _fail(f"the server closed the connection on {what}")
        now = self.read_state(f"device_state after {what}")
        self.covered.add((int(frm), to))
        self.note_step(f"{what}: {_outcome(reply)}, device_state now {state_name(now)}")
        if to == frm:
            if now != frm:
                _fail(
                    f"after writing the current state {state_name(frm)} again, device_state "
                    f"reads {state_name(now)}"
                )
        elif v1_transition_valid(frm, to):
            if (
                (frm, to) == (S.RESUMING, S.RUNNING)
                and not reply.ok
                and now in (S.RESUMING, S.ERROR)
            ):
                pass  # refused with no migration data written: the state stays (or error)
            else:
                if not reply.ok:
                    _fail(
                        f"{what} is valid in the spec's table, but the server refused it "
                        f"(errno {reply.error})"
                    )
                if now != to:
                    _fail(f"{what} succeeded, but device_state reads {state_name(now)}")
        else:
            if reply.ok:
                _fail(
                    f"{what} is not in the spec's table of valid transitions, but the "
                    f"server accepted it (device_state now {state_name(now)})"
                )
            if now != frm:
                _fail(
                    f"after refusing {what}, device_state reads {state_name(now)}: the server "
                    "must remain at the previous state"
                )
        self.state = now

    @precondition(lambda self: self.state in (S.PRE_COPY, S.STOP_AND_COPY))
    @rule(data=st.data())
    @step
    def read_data(self, data):
        """One iteration of the saving loop, the data read in part or whole."""
        pending = _U64.unpack(self.read(MigrationInfo.PENDING_BYTES, 8, "pending_bytes"))[0]
        if pending:
            offset = _U64.unpack(self.read(MigrationInfo.DATA_OFFSET, 8, "data_offset"))[0]
            n = _U64.unpack(self.read(MigrationInfo.DATA_SIZE, 8, "data_size"))[0]
            if not MigrationInfo.SIZE <= offset or offset + n > self.size:
                _fail(
                    f"data_offset {offset:#x} + data_size {n:#x} is not inside the "
                    f"{self.size:#x}-byte migration region after its first 32 bytes"
                )
            # (a fixed strategy: the data size is the server's, a replay may differ)
            part = (0, 1, n // 2, n)[data.draw(st.integers(0, 3), label="how much to read")]
            if part:
                self.read(offset, min(part, 4096), "migration data")
        now = self.read_state()
        self.note_step(f"saving loop: pending_bytes {pending}; device_state {state_name(now)}")
        if now != self.state:
            _fail(
                f"reading migration data in {state_name(self.state)} changed device_state to "
                f"{state_name(now)}"
            )

    def teardown(self):
        if self.fuzzer.fatal is None and self.fuzzer.client is not None:
            try:
                self.walk_back()
            except Exception:
                pass


@case("fuzz/migration-v1-model", MUST, requires=("migration_v1",), revisions=("0.9.1",))
def test_migration_v1_model(request, fuzzer, vfu_target, vfu_device, vfu_observe):
    """Random walks over device_state (every value 0-7 written in every state reached,
    with iterations of the saving loop in pre-copy and stop-and-copy) agree with the spec's
    table: valid transitions succeed and read back, all others fail and leave the state
    as it was. The device is walked back to running after each run.

    Spec (VFIO Device Migration Info): "Valid state transitions are shown in the
    following table"; "The server must respond only after it has successfully
    transitioned to the new state. If an error occurs then the server must respond to the
    VFIO_USER_REGION_WRITE operation with the Error field set accordingly and must remain
    at the previous state, or in case of internal error it must transition to the error
    state". A transition to the same state is not defined: either answer is accepted, the
    state must stay.
    """
    found = _migration_region(vfu_device)
    if found is None:
        pytest.skip("device has no migration region")
    covered: set = set()
    index, size = found
    machine = bound(MigrationMachine, fuzzer=fuzzer, index=index, size=size, covered=covered)
    try:
        run_machine(fuzzer, machine, fuzz_for(request, 0.075))
        _sweep(fuzzer, machine, covered)
    finally:
        _restore_running(fuzzer, vfu_target, found[0])
    end_of_run(fuzzer, vfu_device, vfu_observe)


def _sweep(fz, machine, covered: set) -> None:
    """What the random walks left out of the table: each (state, value) pair not tried,
    reached from running by a valid transition and walked back (one more example)."""
    missing = sorted({(int(a), b) for a in V1_TABLE_STATES for b in range(8)} - covered)
    if not missing:
        return

    def sweep():
        m = machine()
        try:
            for frm, to in missing:
                if frm != S.RUNNING:
                    m.transition(to=frm)
                    if m.state != frm:
                        continue  # refusal allowed there (resuming -> running): checked
                m.transition(to=to)
                if not m.walk_back():
                    _fail(
                        f"after {state_name(frm)} -> {state_name(to)}, valid transitions do "
                        f"not bring device_state ({state_name(m.state)}) back to running"
                    )
        except Exception as e:
            fz.record(e, m, lambda x: x.describe())
            raise

    run_with(fz, sweep)


def _restore_running(fz, target, index: int) -> None:
    """Leave the device running: valid transitions, else a new server process."""
    try:
        client = fz.connection()
        reply = client.region_read(index, MigrationInfo.DEVICE_STATE, 4)
        state = _U32.unpack(reply.body.data)[0] if reply.ok else None
        for to in BACK.get(state, (None,)):
            if to is None or not client.region_write(index, 0, _U32.pack(to)).ok:
                raise RuntimeError("cannot walk back")
        return
    except Exception:
        fz.drop()
    if target.managed and target.alive:
        target.fresh()


# ------------------------------------------------------------------ region access


class RegionMachine(FuzzMachine):
    """Model per scratch range: its bytes, and which of them are known (written in
    this run, or read once: a byte must then read the same until it is written)."""

    # bound by the case (see bound())
    ranges: list  # (region, offset, length) scratch ranges
    xfer: int  # the server's max_data_xfer_size

    def __init__(self):
        super().__init__()
        self.data = {r: bytearray(r[2]) for r in self.ranges}
        self.known = {r: bytearray(r[2]) for r in self.ranges}
        # Each run starts from zeros in the windows it uses: what it finds there does
        # not depend on earlier runs (so that a failing run fails again when replayed).
        for rng in self.ranges:
            index, start, length = rng
            for at in sorted({0, max(0, length - WINDOW)}):
                n = min(WINDOW, length - at)
                what = f"REGION_WRITE of zeros to region {index} [{start + at:#x}, +{n:#x})"
                reply = self.request(
                    Command.REGION_WRITE,
                    RegionWrite(start + at, index, n, bytes(n)).pack(),
                    (),
                    what,
                )
                if reply is None or not reply.ok:
                    _fail(
                        f"the server refused {what} ({_outcome(reply)}), a write inside "
                        "a scratch range of a writable region"
                    )
                self.known[rng][at : at + n] = b"\x01" * n

    def _span(self, data, rng):
        """A few bytes at the start or the end of the range (WINDOW bytes each): accesses
        that overlap, so that reads check what writes did."""
        length = rng[2]
        most = min(length, 64, self.xfer)
        count = data.draw(
            st.one_of(st.sampled_from([1, 2, 4, 8]), st.integers(1, most)).filter(
                lambda n: n <= most
            ),
            label="count",
        )
        near = min(length, WINDOW) - count
        far = max(0, length - WINDOW)
        at = data.draw(
            st.one_of(st.integers(0, near), st.integers(far, length - count)),
            label="offset in range",
        )
        return at, count

    @rule(data=st.data(), no_reply=st.booleans())
    @step
    def write(self, data, no_reply):
        rng = data.draw(st.sampled_from(self.ranges), label="range")
        index, start, _ = rng
        at, count = self._span(data, rng)
        value = data.draw(st.binary(min_size=count, max_size=count), label="data")
        what = f"REGION_WRITE of region {index} [{start + at:#x}, +{count:#x})"
        payload = RegionWrite(start + at, index, count, value).pack()
        if no_reply:
            self.fuzzer.send(Command.REGION_WRITE, payload)
            self.note_step(f"{what} with No_reply")
        else:
            reply = self.request(Command.REGION_WRITE, payload, (), what)
            self.note_step(f"{what}: {_outcome(reply)}")
            if reply is None or not reply.ok:
                _fail(
                    f"the server refused {what} ({_outcome(reply)}), a write inside a "
                    "scratch range of a writable region"
                )
            if reply.payload != RegionAccess(start + at, index, count).pack():
                _fail(
                    f"the reply to {what} is {reply.payload.hex()}: offset, region and "
                    "count of the write, with no data"
                )
        self.data[rng][at : at + count] = value
        self.known[rng][at : at + count] = b"\x01" * count

    @rule(data=st.data())
    @step
    def read(self, data):
        rng = data.draw(st.sampled_from(self.ranges), label="range")
        index, start, _ = rng
        at, count = self._span(data, rng)
        what = f"REGION_READ of region {index} [{start + at:#x}, +{count:#x})"
        reply = self.request(
            Command.REGION_READ, RegionRead(start + at, index, count).pack(), (), what
        )
        self.note_step(f"{what}: {_outcome(reply)}")
        if reply is None or not reply.ok:
            _fail(
                f"the server refused {what} ({_outcome(reply)}), a read inside a scratch "
                "range of a readable region"
            )
        head, got = reply.payload[: RegionAccess.SIZE], reply.payload[RegionAccess.SIZE :]
        if head != RegionAccess(start + at, index, count).pack() or len(got) != count:
            _fail(
                f"the reply to {what} states {RegionAccess.unpack(head)} with "
                f"{len(got)} bytes: not the request's offset, region and count"
            )
        model, known = self.data[rng], self.known[rng]
        for k in range(count):
            pos = at + k
            if known[pos] and model[pos] != got[k]:
                _fail(
                    f"{what} returned {got.hex()}, but byte {start + pos:#x} holds "
                    f"{model[pos]:#04x} (what was last written there, or read before "
                    f"without a write since): it read {got[k]:#04x}"
                )
            model[pos], known[pos] = got[k], 1


@case("fuzz/region-rw-model", MUST)
def test_region_rw_model(request, fuzzer, vfu_device, vfu_observe):
    """Random REGION_WRITE (some with No_reply) and REGION_READ inside the profile's scratch
    ranges agree with a byte model: a read returns what was last written to each byte (and
    a byte not written since it was read reads the same); replies state the request's
    offset, region and count.

    Spec (VFIO_USER_REGION_WRITE): "This command message is sent from the client to the
    server to write to device memory." (VFIO_USER_REGION_READ): "data: data read from the
    region" (Command Concurrency): "if a client issues a command with the No_reply bit,
    then subsequently issues a command without No_reply, the older command will have been
    processed before the reply to the younger command is sent by the server."
    """
    ranges = [
        (i, off, n)
        for i, off, n in vfu_device.scratch_ranges()
        if (r := vfu_device.region(i)) is not None
        and r.flags & RegionFlags.READ
        and r.flags & RegionFlags.WRITE
        and n > 0
    ]
    if not ranges:
        pytest.skip(
            "needs profile: scratch ranges (regions[].scratch) in readable and writable regions"
        )
    xfer = vfu_device.capabilities.max_data_xfer_size
    machine = bound(RegionMachine, fuzzer=fuzzer, ranges=ranges, xfer=xfer)
    run_machine(fuzzer, machine, fuzz_for(request, 0.05))
    end_of_run(fuzzer, vfu_device, vfu_observe)
