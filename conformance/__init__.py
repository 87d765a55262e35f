"""The vfio-user conformance modules, one per spec section (fuzz has two).

``SECTIONS``: the sections of the cases (the part of their ids before the first
``/``), which ``--vfu-section`` takes: ``vfio-user-conformance`` checks a
``--vfu-section`` against it before the run (``tests/test_plugin_cli.py`` checks
it against the cases).
"""

__all__ = ["SECTIONS"]

SECTIONS = (
    "argsz",
    "backend",
    "device_feature",
    "device_info",
    "dirty_pages",
    "disconnect",
    "dma",
    "dma_logging",
    "dma_rw",
    "fuzz",
    "header",
    "irq_info",
    "migration",
    "migration_v2",
    "region_info",
    "region_io_fds",
    "region_rw",
    "region_write_multi",
    "reset",
    "set_irqs",
    "version",
)
