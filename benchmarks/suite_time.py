"""Wall time of the whole conformance suite against the embedded reference server.

    python benchmarks/suite_time.py [extra vfio-user-conformance arguments]

Runs ``vfio-user-conformance`` (reports into a temporary directory, removed
afterwards), and prints as its last line ``suite_seconds=S cases=N``
(N: cases in the JSON report).  Exits with the suite's exit status.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def command() -> list[str]:
    """The installed console script, or the module when it is not on PATH."""
    script = Path(sys.executable).parent / "vfio-user-conformance"
    if script.exists():
        return [str(script)]
    found = shutil.which("vfio-user-conformance")
    return [found] if found else [sys.executable, "-m", "pytest_vfiouser.cli"]


def main(argv: list[str]) -> int:
    with tempfile.TemporaryDirectory(prefix="vfu-suite-time-") as tmp:
        start = time.perf_counter()
        proc = subprocess.run([*command(), *argv], cwd=tmp, env=os.environ.copy())
        seconds = time.perf_counter() - start
        report = Path(tmp) / "reports" / "conformance.json"
        cases = len(json.loads(report.read_text())["cases"]) if report.exists() else 0
    print(f"suite_seconds={seconds:.2f} cases={cases}")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
