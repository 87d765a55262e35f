"""pytest-vfiouser: a conformance test suite for the vfio-user protocol."""

__version__ = "0.1.0"
