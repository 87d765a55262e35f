"""The kill matrix: the conformance suite against the reference server with each fault.

    python benchmarks/kill_matrix.py [--workers N] [--fault NAME ...] [--out DIR] [--reports DIR]

Runs the fault-free suite and the suite under every fault of
reference_server_faults (or the ones named), N at a time (default: CPUs + 2,
the runs mostly wait on the server), writes reports/kill-matrix.json and
reports/kill-matrix.md, and prints as its last line
``faults_detected=D/F cases_killing=K/N``. The runs' own reports stay in --out
(default: a temporary directory, removed afterwards).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# The harness is tests/kill_matrix.py; ahead of this script's own folder, where the
# same module name is this file.
sys.path[:0] = [os.path.join(ROOT, "tests"), ROOT]

import kill_matrix as km  # noqa: E402

from reference_server_faults import CATALOGUE  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=(os.cpu_count() or 1) + 2)
    ap.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=list(CATALOGUE),
        metavar="NAME",
        help="only these faults (repeatable)",
    )
    ap.add_argument("--out", help="where the runs' reports go (kept)")
    ap.add_argument("--reports", default="reports", help="where the matrix goes")
    args = ap.parse_args(argv)
    names = args.fault or list(CATALOGUE)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="vfu-kill-matrix-"))
    unkillable = km.load_unkillable()
    every = [*km.clean_runs_for(names), *names]
    runner = km.Runner(out, every, args.workers, km.excluded_sections(unkillable))
    start = time.monotonic()
    try:
        runner.start()
        cleans, runs = km.collect(runner, names)
    finally:
        runner.close()
    seconds = time.monotonic() - start
    catalogue = {n: CATALOGUE[n] for n in names}
    matrix = km.build(cleans, runs, unkillable, catalogue)
    jpath, mpath = km.write(matrix, Path(args.reports))
    for name, info in matrix["faults"].items():
        state = "detected" if info["detected"] else "NOT DETECTED"
        print(f"{name:34} {state:13} killed={info['killed']:3} {info['seconds']} s")
    if matrix["unkilled"]:
        print("cases that kill no fault:", ", ".join(matrix["unkilled"]))
    if matrix["stale_unkillable"]:
        print("listed as unkillable but killing:", ", ".join(matrix["stale_unkillable"]))
    print(
        f"{len(every)} runs in {seconds:.0f} s with {args.workers} at a time; "
        f"matrix: {jpath}, {mpath}"
    )
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    print(km.figures_line(matrix))
    return 0


if __name__ == "__main__":
    sys.exit(main())
