"""Wall time of the whole conformance suite, against the reference server and others.

    python benchmarks/suite_time.py [-- extra vfio-user-conformance arguments]
    python benchmarks/suite_time.py --server NAME="/path/to/server {socket}" [--server ...]
    python benchmarks/suite_time.py --libvfio-user [--spec 0.9.2] [--keep DIR]

Runs ``vfio-user-conformance`` once per target, one after the other (reports
into a temporary directory, removed afterwards): always the embedded reference
server first, then each ``--server`` and, with ``--libvfio-user``, each sample
server of ``interop/implementations.toml`` (built into ``.interop-build/`` as
``python -m interop`` does). Prints a line per target (seconds, cases, verdict
counts) and, as its last line,

    suite_seconds=S cases=N                                (the reference server alone)
    suite_seconds reference=S0 NAME=S1(R1x) ... worst=NAME Rx   (with other targets)

where each R is the target's time over the reference server's in the same run.
Exits 1 if a run ended without a JSON report.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import interop  # noqa: E402 (the checkout's, beside this script)

REFERENCE = "reference"


def command() -> list[str]:
    """The installed console script, or the module when it is not on PATH."""
    script = Path(sys.executable).parent / "vfio-user-conformance"
    if script.exists():
        return [str(script)]
    found = shutil.which("vfio-user-conformance")
    return [found] if found else [sys.executable, "-m", "pytest_vfiouser.cli"]


def timed(
    server: str | None, extra: list[str], keep: Path | None = None
) -> tuple[float, dict | None]:
    """One run: its wall time and its JSON report (None if it wrote none); with ``keep``,
    its reports folder is copied there."""
    args = ["--vfu-server", server] if server else []
    with tempfile.TemporaryDirectory(prefix="vfu-suite-time-") as tmp:
        start = time.perf_counter()
        subprocess.run(
            [*command(), "-q", *args, *extra],
            cwd=tmp,
            env=os.environ.copy(),
            stdout=subprocess.DEVNULL,
            check=False,
        )
        seconds = time.perf_counter() - start
        report = Path(tmp) / "reports" / "conformance.json"
        if keep is not None and report.parent.is_dir():
            shutil.copytree(report.parent, keep, dirs_exist_ok=True)
        return seconds, json.loads(report.read_text()) if report.exists() else None


def libvfio_user_servers(build_dir: Path) -> dict[str, str]:
    """name -> --vfu-server command of every libvfio-user sample the catalogue names."""
    source = interop.find_source(None, interop.REPO)
    if not interop.has_source(source):
        raise SystemExit(f"suite_time: no libvfio-user source at {source}")
    impls = [i for i in interop.load_implementations().implementations if not i.is_reference]
    folders = interop.build_samples(source, build_dir, impls, lambda text: None)
    return {i.name: i.server_command(folders[i.name]) for i in impls}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="suite_time.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        metavar='NAME="CMD {socket}"',
        help="another target (repeatable)",
    )
    parser.add_argument(
        "--libvfio-user", action="store_true", help="also every libvfio-user sample"
    )
    parser.add_argument("--spec", default=None, help="--vfu-spec of every run")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="keep each run's reports in DIR/NAME/"
    )
    parser.add_argument("--build-dir", type=Path, default=interop.REPO / ".interop-build")
    parser.add_argument("extra", nargs="*", help="more vfio-user-conformance arguments")
    options = parser.parse_args(argv)

    targets: dict[str, str | None] = {REFERENCE: None}
    for item in options.server:
        name, sep, server = item.partition("=")
        if not sep or not name or "{" not in server:
            parser.error(f'--server {item!r}: give NAME="CMD {{socket}}"')
        targets[name] = server
    if options.libvfio_user:
        targets.update(libvfio_user_servers(options.build_dir))

    seconds: dict[str, float] = {}
    cases = 0
    failed = False
    for name, server in targets.items():
        spec = ["--vfu-spec", options.spec] if options.spec else []
        keep = options.keep / name if options.keep else None
        took, report = timed(server, [*spec, *options.extra], keep)
        seconds[name] = took
        if report is None:
            failed = True
            print(f"{name}: {took:.1f} s, no JSON report", flush=True)
            if name == REFERENCE:  # nothing to compare the others with
                print("suite_time: the reference run wrote no report; is the suite installed?")
                return 1
            continue
        counts = Counter(c["verdict"] for c in report["cases"])
        cases = len(report["cases"]) if name == REFERENCE else cases
        text = ", ".join(f"{n} {v}" for v, n in counts.most_common())
        print(f"{name}: {took:.1f} s, {len(report['cases'])} cases ({text})", flush=True)
    if len(targets) == 1:
        print(f"suite_seconds={seconds[REFERENCE]:.2f} cases={cases}")
        return 1 if failed else 0
    base = seconds[REFERENCE]
    ratios = {n: s / base for n, s in seconds.items() if n != REFERENCE}
    worst = max(ratios, key=ratios.get)
    parts = [f"{REFERENCE}={base:.1f}"]
    parts += [f"{n}={seconds[n]:.1f}({r:.2f}x)" for n, r in ratios.items()]
    print(f"suite_seconds {' '.join(parts)} worst={worst} {ratios[worst]:.2f}x")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
