"""``python -m interop``: the conformance suite against libvfio-user's samples.

    python -m interop                      build, run every implementation at every revision,
                                           check against interop/expectations/, write the matrices
    python -m interop --check-only         check the reports already in reports/interop/
    python -m interop --update             rewrite the expectations from the reports
    python -m interop --only null --revision 0.9.2 --jobs 1

See README.md ("Interoperability: libvfio-user") and interop/__init__.py.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from ._tier import Options
from ._tier import main as run_tier

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    defaults = Options()
    parser = argparse.ArgumentParser(
        prog="python -m interop",
        description="Run the conformance suite against libvfio-user's sample servers and "
        "check the findings against interop/expectations/.",
    )
    add = parser.add_argument
    add(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="this implementation only (repeatable)",
    )
    add(
        "--revision",
        action="append",
        default=[],
        metavar="REV",
        help="this spec revision only (repeatable)",
    )
    add("--jobs", type=int, default=defaults.jobs, metavar="N", help="runs at a time (default 2)")
    add(
        "--run-timeout",
        type=float,
        default=defaults.run_timeout,
        metavar="SECONDS",
        help="kill a run after this long: it did not finish (default 600)",
    )
    add(
        "--update",
        action="store_true",
        help="rewrite the expectation files (and the README's matrix) from the reports",
    )
    add(
        "--check-only",
        action="store_true",
        help="check the reports of reports/interop/, run nothing",
    )
    add(
        "--source",
        metavar="DIR",
        help="libvfio-user's sources (build.sh and the snapshots); "
        "default $VFU_LIBVFIO_USER_SRC, else ../shared/third_party/libvfio-user",
    )
    add("--require", action="store_true", help="exit 2, not 0, when the sources are missing")
    add(
        "--build-dir",
        type=Path,
        default=defaults.build_dir,
        metavar="DIR",
        help="the build cache (default .interop-build/)",
    )
    add(
        "--reports",
        type=Path,
        default=defaults.reports,
        metavar="DIR",
        help="where the runs' reports go (default reports/interop/)",
    )
    add(
        "--expectations",
        type=Path,
        default=defaults.expectations,
        metavar="DIR",
        help="the expectation files (default interop/expectations/)",
    )
    add(
        "--readme",
        type=Path,
        default=defaults.readme,
        metavar="FILE",
        help="the README holding the matrix (default README.md)",
    )
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.run_timeout <= 0:
        parser.error("--jobs and --run-timeout must be positive")
    # SIGTERM unwinds like Ctrl-C, so that the runs going on are interrupted too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return run_tier(
        Options(
            only=args.only,
            revisions=args.revision,
            jobs=args.jobs,
            run_timeout=args.run_timeout,
            update=args.update,
            check_only=args.check_only,
            require=args.require,
            source=args.source,
            build_dir=args.build_dir,
            reports=args.reports,
            expectations=args.expectations,
            readme=args.readme,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
