"""The libvfio-user samples: where their sources are, building them into a cache.

The sources are a folder holding ``build.sh`` and the snapshots' tarballs
(``../shared/third_party/libvfio-user`` beside the repository, else what
``--source`` or ``VFU_LIBVFIO_USER_SRC`` say). ``build.sh OUTDIR REV`` unpacks a
snapshot into ``OUTDIR/libvfio-user-REV``, builds it and prints its samples
folder; a snapshot whose binaries are already in the cache is not rebuilt. A
sample that needs configure options (``-Dshadow-ioeventfd=true``) gets a build
folder of its own in the unpacked snapshot (``build-<options>``).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = [
    "ENV_SOURCE",
    "BuildError",
    "build",
    "build_with",
    "find_source",
    "has_source",
    "samples_dir",
    "skip_message",
]

ENV_SOURCE = "VFU_LIBVFIO_USER_SRC"
BUILD_SCRIPT = "build.sh"
BUILD_TIMEOUT = 900  # seconds per snapshot; build.sh says about a minute on 2 cores


class BuildError(Exception):
    """build.sh failed: its message and the tail of its output."""


def find_source(
    given: str | os.PathLike[str] | None, repo: Path, env: Mapping[str, str] = os.environ
) -> Path:
    """The source folder: ``--source``, else $VFU_LIBVFIO_USER_SRC, else the shared copy."""
    if given:
        return Path(given)
    if env.get(ENV_SOURCE):
        return Path(env[ENV_SOURCE])
    return repo.parent / "shared" / "third_party" / "libvfio-user"


def has_source(source: Path) -> bool:
    return (source / BUILD_SCRIPT).is_file()


def skip_message(source: Path) -> str:
    return f"interop: skipped: no libvfio-user source at {source}; give --source or {ENV_SOURCE}"


def samples_dir(cache: Path, snapshot: str) -> Path:
    """Where build.sh puts a snapshot's samples."""
    return cache / f"libvfio-user-{snapshot}" / "build" / "samples"


def _built(folder: Path, binaries: Iterable[str]) -> bool:
    return all(os.access(folder / b, os.X_OK) for b in binaries)


def build(source: Path, cache: Path, snapshot: str, binaries: Iterable[str]) -> Path:
    """The samples folder of ``snapshot`` holding ``binaries``, built with build.sh unless
    the cache already has them."""
    binaries = list(binaries)
    folder = samples_dir(cache, snapshot)
    if _built(folder, binaries):
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    command = ["bash", str(source / BUILD_SCRIPT), str(cache), snapshot]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=BUILD_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise BuildError(f"{' '.join(command)}: did not finish in {BUILD_TIMEOUT} s") from None
    if done.returncode != 0:
        tail = "\n".join(f"    {line}" for line in done.stderr.splitlines()[-20:])
        raise BuildError(f"{' '.join(command)}: exit status {done.returncode}\n{tail}")
    lines = done.stdout.strip().splitlines()
    printed = Path(lines[-1]) if lines else folder
    missing = [b for b in binaries if not os.access(printed / b, os.X_OK)]
    if missing:
        raise BuildError(f"{' '.join(command)}: no {', '.join(missing)} in {printed}")
    return printed


def build_with(
    source: Path, cache: Path, snapshot: str, binary: str, meson_options: Iterable[str]
) -> Path:
    """The samples folder of a build of ``snapshot`` configured with ``meson_options``,
    holding ``binary``: build.sh unpacks (and builds) the snapshot, then meson configures
    a folder of its own and ninja builds the one sample."""
    meson_options = list(meson_options)
    build(source, cache, snapshot, [binary])  # unpacks the tree (and builds it plain)
    tree = cache / f"libvfio-user-{snapshot}"
    name = "build-" + re.sub(r"[^A-Za-z0-9]+", "-", "-".join(meson_options)).strip("-")
    folder = tree / name / "samples"
    if _built(folder, [binary]):
        return folder
    setup = ["meson", "setup", *(["--wipe"] if (tree / name).exists() else []), name]
    for command in ([*setup, *meson_options], ["ninja", "-C", name, f"samples/{binary}"]):
        try:
            done = subprocess.run(
                command, cwd=tree, capture_output=True, text=True, timeout=BUILD_TIMEOUT
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildError(f"{' '.join(command)} (in {tree}): {exc}") from None
        if done.returncode != 0:
            lines = (done.stdout + done.stderr).splitlines()[-20:]
            tail = "\n".join(f"    {line}" for line in lines)
            raise BuildError(f"{' '.join(command)} (in {tree}): exit {done.returncode}\n{tail}")
    if not _built(folder, [binary]):
        raise BuildError(f"meson {' '.join(meson_options)}: no {binary} in {folder}")
    return folder
