"""What writing the JSON report while the run goes on costs the default run.

    python benchmarks/json_overhead.py [ROUNDS] [extra vfio-user-conformance arguments]

Runs ``vfio-user-conformance`` (the embedded reference server, reports into a
temporary directory) ROUNDS times (default 3) each way, interleaved: as shipped
(the report rewritten as cases are judged, ``JsonWriter``) and with those writes
turned off (a plugin makes ``JsonWriter.changed`` do nothing; the final report is
written as before). Prints each run, the writes of a shipped run and the time its
thread spent writing, and as its last line
``json_incremental_seconds=A json_final_only_seconds=B overhead_percent=P``
(medians of the wall times).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from suite_time import command  # noqa: E402

PLUGIN = """
import pytest
from pytest_vfiouser.report import JsonWriter

if "{off}" == "1":
    JsonWriter.changed = lambda self: None

@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    from pytest_vfiouser.plugin import get_state
    writer = get_state(config).json
    if writer is not None:
        with open("writes.json", "w") as f:
            f.write('{{"writes": %d, "seconds": %f}}' % (writer.writes, writer.seconds))
"""


def one(off: bool, argv: list[str]) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory(prefix="vfu-json-overhead-") as tmp:
        Path(tmp, "vfu_json_bench.py").write_text(PLUGIN.format(off=int(off)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, os.environ.get("PYTHONPATH", "")])}
        start = time.perf_counter()
        subprocess.run(
            [*command(), "-p", "vfu_json_bench", "-q", *argv],
            cwd=tmp,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        seconds = time.perf_counter() - start
        cases = len(json.loads(Path(tmp, "reports", "conformance.json").read_text())["cases"])
        writes = json.loads(Path(tmp, "writes.json").read_text())
    writes["cases"] = cases
    return seconds, writes


def main(argv: list[str]) -> int:
    rounds = int(argv.pop(0)) if argv and argv[0].isdigit() else 3
    times: dict[bool, list[float]] = {False: [], True: []}
    for n in range(rounds):
        for off in (False, True):
            seconds, writes = one(off, argv)
            times[off].append(seconds)
            how = "final only " if off else "incremental"
            print(
                f"round {n + 1} {how}: {seconds:.2f} s, {writes['cases']} cases, "
                f"{writes['writes']} writes while running ({writes['seconds']:.3f} s writing)"
            )
    on, off = statistics.median(times[False]), statistics.median(times[True])
    print(
        f"json_incremental_seconds={on:.2f} json_final_only_seconds={off:.2f} "
        f"overhead_percent={100 * (on - off) / off:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
