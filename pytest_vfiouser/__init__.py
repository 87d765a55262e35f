"""pytest-vfiouser: a conformance test suite for the vfio-user protocol.

What conformance cases import::

    from pytest_vfiouser import case, MUST, SHOULD, MAY, observe, watch_client
    raise Unmet("what the server did", SHOULD)   # a failure that rests on a weaker sentence

and what a case package's conftest.py calls: ``unselected_module`` (pytest_ignore_collect).

These names load lazily, so that importing ``pytest_vfiouser.protocol`` (as
the reference server does) does not import pytest.
"""

__version__ = "0.1.0"

from .verdict import Unmet

__all__ = [
    "MAY",
    "MUST",
    "SHOULD",
    "Level",
    "Unmet",
    "__version__",
    "case",
    "observe",
    "unselected_module",
    "watch_client",
]

# from .plugin
_LAZY = frozenset(
    {"case", "Level", "MUST", "SHOULD", "MAY", "observe", "unselected_module", "watch_client"}
)


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'pytest_vfiouser' has no attribute {name!r}")
    from importlib import import_module  # noqa: PLC0415  (lazy: see the docstring)

    return getattr(import_module(".plugin", __name__), name)
