"""The reference server against hostile clients: crashes, memory, timeouts, and the cost.

    python benchmarks/hostile_clients.py [--trials 100] [--seconds 1.0] [--flood 1000]
                                         [--skip-send-timeout]

Four measurements, each against ``python -m reference_server`` (reference_server/limits.py
has the bounds):

* SIGBUS trials: a client maps a memfd for DMA and truncates it in a loop while the
  device copies into and out of it (doorbells back to back) for ``--seconds``; a
  trial crashed when the server died (it is then started again).
* Queueing attack: the client starts a DMA from memory mapped without an fd, leaves
  the server's DMA_READ unanswered, and sends ``--flood`` 1 MiB REGION_WRITEs; the
  server's peak RSS (VmHWM) before and after, with the default --max-queued-bytes and
  with it raised out of reach (the server before the bound: commands capped by count).
* Send timeout: a client pipelines reads and stops reading its replies; the seconds
  until the next client is served (the default --send-timeout is 10 s). Beside it,
  what SO_SNDTIMEO gives on a socket pair (1 s set): one blocked send(), and a
  sendall() of more than the socket buffer (the server's former send).
* DMA cost: one DMA access of 4 B, 4 KiB and 64 KiB (the DMA RAM) to an fd-backed
  mapping, in process: the former direct access (fstat, then a slice of an mmap of
  the file) beside today's (reference_server.dma_map.Mapping: pread/pwrite on the
  fd), in microseconds; and a whole DMA through the server (doorbell round trip).

The last line is exactly ``hostile_clients sigbus_crashes=C/N rss_peak_mib=B/U
send_timeout_s=S dma_read_us=O/N dma_write_us=O/N`` (B: bounded, U: unbounded;
O/N: former/today's access of 64 KiB).
"""

from __future__ import annotations

import argparse
import mmap
import os
import socket
import statistics
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from pytest_vfiouser.client import Client, ConnectionClosed  # noqa: E402
from pytest_vfiouser.protocol import (  # noqa: E402
    Command,
    DmaMap,
    RegionRead,
    RegionWrite,
    encode,
)
from pytest_vfiouser.target import Target  # noqa: E402
from reference_server import registers as R  # noqa: E402
from reference_server.dma_map import Mapping  # noqa: E402

SERVER = [sys.executable, "-m", "reference_server", "--socket-path={socket}"]
DMA_ADDRESS = 0x100000
MIB = 1 << 20
U32, U64 = 4, 8


def start(*args: str) -> Target:
    target = Target([*SERVER, *args])
    target.start()
    return target


def connect(target: Target) -> Client:
    c = Client.connect(target.socket_path, timeout=30.0)
    c.negotiate()
    return c


def set_reg(c: Client, reg: int, value: int, size: int = U32) -> None:
    c.region_write(R.REGISTERS_REGION, reg, value.to_bytes(size, "little")).check()


def program_dma(c: Client, address: int, length: int, direction: int) -> None:
    set_reg(c, R.REG_DMA_DEV_OFFSET, 0, U64)
    set_reg(c, R.REG_DMA_CLIENT_ADDR, address, U64)
    set_reg(c, R.REG_DMA_LENGTH, length)
    set_reg(c, R.REG_DMA_DIRECTION, direction)


def vm_hwm(pid: int) -> int:
    """The peak resident set size of ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for {pid}")


# ---- SIGBUS trials


def sigbus_trials(trials: int, seconds: float) -> tuple[int, int]:
    """(crashes, copies) over ``trials`` truncation attacks."""
    crashes = copies = 0
    target = start()
    try:
        for _ in range(trials):
            if not target.alive:
                target.cleanup()
                target = start()
            died, n = _truncation_attack(target, seconds)
            crashes += died
            copies += n
    finally:
        target.cleanup()
    return crashes, copies


def _truncation_attack(target: Target, seconds: float) -> tuple[bool, int]:
    size = R.DMA_RAM_SIZE
    fd = os.memfd_create("shrinking", os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    stop = threading.Event()

    def truncate():
        while not stop.is_set():
            os.ftruncate(fd, 0)
            os.ftruncate(fd, size)

    copies = 0
    shrinker = threading.Thread(target=truncate)
    try:
        with connect(target) as c:
            c.request(Command.DMA_MAP, DmaMap(32, 3, 0, DMA_ADDRESS, size), [fd]).check()
            program_dma(c, DMA_ADDRESS, size, R.DMA_TO_CLIENT)
            shrinker.start()
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                set_reg(c, R.REG_DMA_DIRECTION, copies % 2)
                c.region_write(R.REGISTERS_REGION, R.REG_DMA_DOORBELL, b"\1\0\0\0")
                copies += 1
    except (ConnectionClosed, OSError):
        pass  # the server died under us
    finally:
        stop.set()
        if shrinker.is_alive():
            shrinker.join()
        os.close(fd)
    time.sleep(0.05)  # a death is reaped
    return not target.alive, copies


# ---- the queueing attack


def queue_attack(flood: int, *args: str) -> tuple[int, int, bool]:
    """(VmHWM before, VmHWM after, dropped?) of a server under ``flood`` 1 MiB commands
    sent while it waits for a DMA reply."""
    target = start(*args)
    try:
        with connect(target) as c:
            c.dma_map(DMA_ADDRESS, 0x1000).check()
            program_dma(c, DMA_ADDRESS, 8, R.DMA_FROM_CLIENT)
            before = vm_hwm(target.pid)
            c.send(Command.REGION_WRITE, RegionWrite(R.REG_DMA_DOORBELL, 0, 4, b"\1\0\0\0"))
            req = c.recv_message()
            assert req.command == Command.DMA_READ, req
            data = bytes(MIB)
            one = encode(1, Command.REGION_WRITE, RegionWrite(0, R.RAM_REGION, MIB, data).pack())
            dropped = False
            try:
                for _ in range(flood):
                    c.send_raw(one)
                c.region_read(R.REGISTERS_REGION, R.REG_ID, 4)  # sent after the flood
            except (ConnectionClosed, OSError):
                dropped = True
            except Exception:  # no reply: the server still waits for its DMA_READ reply
                pass
            after = vm_hwm(target.pid)
        return before, after, dropped
    finally:
        target.cleanup()


# ---- the send timeout


def send_timeout_served_after(target: Target) -> float:
    """Seconds until a client waiting behind one that stopped reading is served."""
    read = RegionRead(0, R.RAM_REGION, R.RAM_SIZE).pack()
    with connect(target) as deaf:
        deaf.send_raw(b"".join(encode(i, Command.REGION_READ, read) for i in range(64)))
        start_at = time.monotonic()
        with Client.connect(target.socket_path, timeout=60.0) as later:
            later.negotiate()
            return time.monotonic() - start_at


def so_sndtimeo(seconds: int = 1) -> tuple[float, float, float]:
    """(SO_SNDTIMEO read back, one blocked send(), sendall() of 4 MiB) on a socket pair
    whose reader never reads, with ``seconds`` set."""
    timeo = struct.pack("@ll", seconds, 0)
    a, b = socket.socketpair()
    try:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeo)
        sec, usec = struct.unpack("@ll", a.getsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, 16))
        try:
            while True:  # fill the buffer
                a.send(bytes(65536), socket.MSG_DONTWAIT)
        except BlockingIOError:
            pass
        one = _blocked(lambda: a.send(bytes(65536)))
    finally:
        a.close()
        b.close()
    a, b = socket.socketpair()
    try:
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeo)
        whole = _blocked(lambda: a.sendall(bytes(4 * MIB)))
    finally:
        a.close()
        b.close()
    return sec + usec / 1e6, one, whole


def _blocked(send) -> float:
    """Seconds until ``send`` gives up."""
    t = time.monotonic()
    try:
        send()
    except OSError:
        pass
    return time.monotonic() - t


# ---- what the SIGBUS-safe path costs


def per_call_us(step, seconds: float = 0.3) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        for _ in range(100):
            step()
        n += 100
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return elapsed / n * 1e6


def dma_access_cost(size: int) -> dict[str, float]:
    """Microseconds per access of ``size`` bytes: the former direct access, today's."""
    fd = os.memfd_create("dma", os.MFD_CLOEXEC)
    os.ftruncate(fd, R.DMA_RAM_SIZE)
    mem = mmap.mmap(fd, R.DMA_RAM_SIZE)
    m = Mapping(DMA_ADDRESS, R.DMA_RAM_SIZE, 3, 0, fd)
    data = os.urandom(size)

    def old_read():  # dma_map.py before: check the file size, then slice the mapping
        if os.fstat(fd).st_size < size:
            raise OSError
        return mem[0:size]

    def old_write():
        if os.fstat(fd).st_size < size:
            raise OSError
        mem[0:size] = data

    try:
        return {
            "read_old": statistics.median(per_call_us(old_read) for _ in range(3)),
            "read_new": statistics.median(per_call_us(lambda: m.read(0, size)) for _ in range(3)),
            "write_old": statistics.median(per_call_us(old_write) for _ in range(3)),
            "write_new": statistics.median(per_call_us(lambda: m.write(0, data)) for _ in range(3)),
        }
    finally:
        mem.close()
        m.close()


def dma_through_server_us(size: int) -> float:
    """Microseconds per DMA of ``size`` bytes to client memory through the server: the
    doorbell's round trip (median of three rounds)."""
    target = start()
    fd = os.memfd_create("dma", os.MFD_CLOEXEC)
    try:
        os.ftruncate(fd, R.DMA_RAM_SIZE)
        with connect(target) as c:
            c.request(Command.DMA_MAP, DmaMap(32, 3, 0, DMA_ADDRESS, R.DMA_RAM_SIZE), [fd]).check()
            program_dma(c, DMA_ADDRESS, size, R.DMA_TO_CLIENT)
            bell = R.REG_DMA_DOORBELL
            return statistics.median(
                per_call_us(lambda: c.region_write(R.REGISTERS_REGION, bell, b"\1\0\0\0").check())
                for _ in range(3)
            )
    finally:
        os.close(fd)
        target.cleanup()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100, help="SIGBUS trials (default 100)")
    ap.add_argument("--seconds", type=float, default=1.0, help="per SIGBUS trial (default 1)")
    ap.add_argument("--flood", type=int, default=1000, help="1 MiB commands (default 1000)")
    ap.add_argument("--skip-send-timeout", action="store_true", help="save its 10 s")
    args = ap.parse_args(argv)

    crashes, copies = sigbus_trials(args.trials, args.seconds)
    print(f"SIGBUS trials: {crashes} of {args.trials} crashed the server ({copies} DMA copies)")

    rss = {}
    for name, extra in (("bounded", ()), ("unbounded", (f"--max-queued-bytes={1 << 40}",))):
        before, after, dropped = queue_attack(args.flood, *extra)
        rss[name] = after
        print(
            f"queueing attack, {args.flood} x 1 MiB, {name} "
            f"({'default --max-queued-bytes' if not extra else extra[0]}): peak RSS "
            f"{before / MIB:.0f} MiB -> {after / MIB:.0f} MiB, "
            f"{'client dropped' if dropped else 'client kept'}"
        )

    set_back, one_send, sendall = so_sndtimeo(1)
    print(
        f"SO_SNDTIMEO set to 1 s reads back {set_back:g} s; one blocked send() took "
        f"{one_send:.2f} s; sendall() of 4 MiB to a reader that never reads took {sendall:.2f} s"
    )
    served = float("nan")
    if not args.skip_send_timeout:
        target = start()
        try:
            served = send_timeout_served_after(target)
        finally:
            target.cleanup()
        print(f"a client behind one that stopped reading was served after {served:.2f} s")

    costs = {}
    for size in (4, 4096, R.DMA_RAM_SIZE):
        costs[size] = c = dma_access_cost(size)
        whole = dma_through_server_us(size)
        print(
            f"DMA access of {size} B: read {c['read_old']:.2f} -> {c['read_new']:.2f} us, "
            f"write {c['write_old']:.2f} -> {c['write_new']:.2f} us "
            f"(former direct access -> pread/pwrite); a whole DMA through the server "
            f"{whole:.0f} us"
        )
    big = costs[R.DMA_RAM_SIZE]
    print(
        f"hostile_clients sigbus_crashes={crashes}/{args.trials} "
        f"rss_peak_mib={rss['bounded'] / MIB:.0f}/{rss['unbounded'] / MIB:.0f} "
        f"send_timeout_s={served:.2f} "
        f"dma_read_us={big['read_old']:.2f}/{big['read_new']:.2f} "
        f"dma_write_us={big['write_old']:.2f}/{big['write_new']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
