"""Throughput of the reference server: REGION_READ of 4 bytes from a Python client.

    python benchmarks/server_roundtrip.py [--seconds 1.0] [--rounds 3]

Starts ``python -m reference_server`` on a socket in a temporary directory,
connects the raw client (pytest_vfiouser.client), and measures synchronous
round trips per second and pipelined messages per second (batches of 64).
Each figure is the median of several rounds. The last line is exactly
``reference_server sync=N1 pipelined=N2`` (integers, per second).

Synchronous round trips are dominated by wakeups: on a small VM a process
that blocks halts its vCPU, and waking it costs tens of microseconds, several
times the server's own work. The server therefore polls its socket briefly
before blocking, and so does the raw client while it waits for a reply
(pytest_vfiouser/client/busy_poll.py); ``--busy-poll-us 0`` turns the
server's off and ``--client-blocking`` the client's, to see the difference.
The scheduler places client and server on the same or different CPUs from
run to run; ``--pin`` runs both on CPU 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from client_roundtrip import run_for  # noqa: E402  (beside this script: the same measuring loop)

from pytest_vfiouser._unix import CEILING_NS
from pytest_vfiouser.client import Client  # noqa: E402
from pytest_vfiouser.protocol import Command, RegionRead  # noqa: E402
from pytest_vfiouser.target import Target

DEPTH = 64
REGION, OFFSET, COUNT = 0, 0x10, 4  # a BAR0 scratch register


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=1.0, help="per round and mode")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pin", action="store_true", help="run server and client on CPU 0")
    ap.add_argument(
        "--busy-poll-us",
        type=int,
        metavar="USEC",
        help="passed to the server (default: the server's own default)",
    )
    ap.add_argument(
        "--client-blocking",
        action="store_true",
        help="the client blocks at once on every receive (no polling)",
    )
    args = ap.parse_args(argv)
    if args.pin:
        os.sched_setaffinity(0, {0})  # inherited by the server
    # The server's log goes to a file (Target), so the figures stay the last lines.
    command = [sys.executable, "-m", "reference_server", "--socket-path={socket}"]
    if args.busy_poll_us is not None:
        command.append(f"--busy-poll-us={args.busy_poll_us}")
    target = Target(command)
    try:
        target.start()
        with Client.connect(
            target.socket_path, timeout=10.0, busy_poll_ns=0 if args.client_blocking else CEILING_NS
        ) as c:
            c.negotiate()
            payload = RegionRead(OFFSET, REGION, COUNT).pack()
            batch = [(Command.REGION_READ, payload)] * DEPTH
            assert c.request(Command.REGION_READ, payload).check().body.count == COUNT

            def sync_step():
                for _ in range(100):
                    c.request(Command.REGION_READ, payload)

            def pipelined_step():
                c.pipeline(batch)

            sync, piped = [], []
            for _ in range(args.rounds):
                sync.append(run_for(sync_step, args.seconds, 100))
                piped.append(run_for(pipelined_step, args.seconds, DEPTH))
            poll = c.busy_poll
            print(f"client receives: {poll.caught} caught by polling, {poll.blocked} blocked")
    finally:
        target.cleanup()
    s, p = statistics.median(sync), statistics.median(piped)
    print(f"sync rounds: {', '.join(f'{x:.0f}' for x in sync)}")
    print(f"pipelined rounds: {', '.join(f'{x:.0f}' for x in piped)}")
    print(f"reference_server sync={int(s)} pipelined={int(p)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
