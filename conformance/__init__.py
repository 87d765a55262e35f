"""The vfio-user conformance modules, one per spec section (fuzz has two).

``SECTIONS``: the sections of the cases (the part of their ids before the first
``/``), which ``--vfu-section`` takes: ``vfio-user-conformance`` checks a
``--vfu-section`` against it before the run (``tests/test_plugin_cli.py`` checks
it against the cases). ``ONLY_AT``: the sections whose every case exists at one
revision only (the commands they are about are that revision's).
"""

__all__ = ["ONLY_AT", "SECTIONS"]

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
    "twin_socket",
    "version",
)

ONLY_AT = {
    "device_feature": "0.9.2",
    "dirty_pages": "0.9.1",
    "dma_logging": "0.9.2",
    "migration": "0.9.1",
    "migration_v2": "0.9.2",
    "region_write_multi": "0.9.2",
    "twin_socket": "0.9.2",
}
