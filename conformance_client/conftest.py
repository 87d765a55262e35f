"""What the client cases' collection shares."""

from __future__ import annotations

from pytest_vfiouser import unselected_module

from . import SECTIONS


def pytest_ignore_collect(collection_path, config):
    """With --vfu-section, the other sections' modules are not collected."""
    return unselected_module(config, collection_path, SECTIONS)
