"""pytest-vfiouser: a conformance test suite for the vfio-user protocol.

What conformance cases import::

    from pytest_vfiouser import case, MUST, SHOULD, MAY, observe

These names load lazily, so that importing ``pytest_vfiouser.protocol`` (as
the reference server does) does not import pytest.
"""

__version__ = "0.1.0"

__all__ = ["MAY", "MUST", "SHOULD", "Level", "__version__", "case", "observe"]

_LAZY = {
    "case": "markers",
    "Level": "markers",
    "MUST": "markers",
    "SHOULD": "markers",
    "MAY": "markers",
    "observe": "fixtures",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'pytest_vfiouser' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{module}", __name__), name)
