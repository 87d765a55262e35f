"""The client cases: what a vfio-user client sends, judged against the spec.

One module per section, as the server cases (conformance/); each case reads the
sessions the client had with the reference server (the ``vfu_sessions`` fixture:
run once by ``vfio-user-conformance client --vfu-client CMD``, or read from a record
with ``--vfu-transcript``). A case whose messages the client never sent is
UNIMPLEMENTED: it could not be judged from this session.
"""

__all__ = ["SECTIONS"]

SECTIONS = (
    "client/device_feature",
    "client/dirty_pages",
    "client/disconnect",
    "client/dma_logging",
    "client/dma_map",
    "client/dma_rw",
    "client/dma_unmap",
    "client/fds",
    "client/header",
    "client/info",
    "client/migration",
    "client/migration_v2",
    "client/region_rw",
    "client/region_write_multi",
    "client/set_irqs",
    "client/timeout",
    "client/twin_socket",
    "client/version",
)
