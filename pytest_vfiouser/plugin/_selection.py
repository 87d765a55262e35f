"""Which collected cases run: spec revision, --vfu-section, and the baseline check."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path

import pytest

from pytest_vfiouser.report import case_key

from ._markers import case_marks
from ._state import get_state

__all__ = ["VfuWarning", "select", "unselected_module"]


class VfuWarning(pytest.PytestWarning):
    """A problem with the vfio-user suite's configuration that does not stop the run."""


def unselected_module(config: pytest.Config, path: Path, sections: Iterable[str]) -> bool | None:
    """For ``pytest_ignore_collect`` in a case package's conftest.py (``sections``: the
    package's): True for a module that holds no case of the --vfu-section sections, so
    that it is not even collected (a run of one section skips a second of collecting
    the others). A section's cases live in modules named after its last part (``dma``:
    test_dma.py, test_dma_*.py; ``client/fds``: test_fds.py); tests/test_plugin_cli.py
    checks it. None (no opinion) without a selection, or with a section the package
    does not have: then every module is collected, and the run's usage error names the
    sections there are."""
    try:
        selected = get_state(config).settings.sections
    except RuntimeError:  # the plugin is not configured
        return None
    if not selected or not set(selected) <= set(sections):
        return None
    if path.suffix != ".py" or not path.name.startswith("test_"):
        return None
    stem = path.stem.removeprefix("test_")
    names = {s.rsplit("/", 1)[-1] for s in selected}
    return None if any(stem == n or stem.startswith(n + "_") for n in names) else True


def select(config: pytest.Config, items: list[pytest.Item], state) -> None:
    """Deselect cases of another revision or of unselected sections (in place).

    Raises pytest.UsageError for a --vfu-section that names no section of
    the collected cases (on an xdist worker: records it in state.usage_error).
    """
    settings = state.settings
    items_seen = list(items)
    marks = [case_marks(item) for item in items]
    known = sorted({section for _, section, _ in marks if section})
    unknown = [s for s in settings.sections if s not in known]
    if unknown:
        message = (
            f"--vfu-section: unknown section {', '.join(map(repr, unknown))}; "
            f"known sections: {', '.join(known) or '(none: no conformance case was collected)'}"
        )
        if not hasattr(config, "workerinput"):
            raise pytest.UsageError(message)
        # An xdist worker cannot stop the run with a usage error: it runs
        # nothing and the controller reports the error (plugin.py).
        state.usage_error = message
        config.hook.pytest_deselected(items=list(items))
        items[:] = []
        return
    keep, drop = [], []
    by_revision = 0
    for item, (_, section, revisions) in zip(items, marks, strict=True):
        if revisions and settings.spec not in revisions:
            by_revision += 1
            drop.append(item)
        elif settings.sections and section not in settings.sections:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    state.deselected_by_revision = by_revision

    # An entry names a case (every parametrization) or one parametrization of it.
    named = {case_id for case_id, _, _ in marks if case_id}
    named |= {
        case_key(c, item.nodeid) for item, (c, _, _) in zip(items_seen, marks, strict=True) if c
    }
    stale = tuple(sorted(b for b in settings.profile.baseline if b not in named))
    state.unknown_baselines = stale
    if stale:
        warnings.warn(
            VfuWarning(
                f"profile {settings.profile.name!r}: [baseline] entries that match no collected "
                f"case: {', '.join(stale)}"
            ),
            stacklevel=1,
        )
