"""The interop tier: the conformance suite against libvfio-user's real sample servers.

``python -m interop`` builds libvfio-user's samples from the source snapshots kept
beside the project (``_build``), runs ``vfio-user-conformance`` against each
implementation of ``implementations.toml`` at each spec revision (``_run``), and
checks every run's findings (FAIL, NON-STRICT, CRASH, HANG) against the committed
``expectations/<name>.toml`` (``_expectations``): a new finding, a finding gone or
a changed verdict fails the tier, and so does an ERROR (a defect of the suite).
It writes the cross-implementation matrix (``compare``) to
``reports/interop/matrix.html`` and the per-section summary into README.md
(``_matrix``).

* ``_implementations``: the implementations and revisions, read from implementations.toml.
* ``_build``: where the libvfio-user sources are, building the samples into a cache.
* ``_run``: one run of the suite (a process group, bounded by a wall-clock timeout), and
  several at a time.
* ``_expectations``: the expectation files: reading, checking a run against them, rewriting
  them from the reports (``--update``).
* ``_matrix``: the README's Markdown matrix and the HTML matrix of ``compare``.

Its public names serve the benchmarks (the samples' command lines): ``load_implementations``,
``find_source``, ``has_source``, ``build_samples``.

May import: ``pytest_vfiouser.report`` and ``pytest_vfiouser.verdict`` (public names only);
the suite itself runs as a command (``python -m pytest_vfiouser.cli``).
"""

from ._build import BuildError, find_source, has_source
from ._implementations import Implementation
from ._implementations import load as load_implementations
from ._tier import REPO, build_samples

__all__ = [
    "REPO",
    "BuildError",
    "Implementation",
    "build_samples",
    "find_source",
    "has_source",
    "load_implementations",
]
