"""VERSION payloads, and ``PAYLOAD_STRATEGIES``: one strategy per payload type."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from pytest_vfiouser.protocol import (
    BitmapRange,
    DeviceFeature,
    DeviceInfo,
    DirtyPages,
    DmaLoggingControl,
    DmaLoggingReport,
    DmaMap,
    DmaRead,
    DmaReadReply,
    DmaUnmap,
    DmaWrite,
    DmaWriteReply,
    FeatureMigDeviceState,
    FeatureMigration,
    IoFdSubRegion,
    IrqInfo,
    MigDataRead,
    MigDataReadReply,
    MigDataWrite,
    MigrationInfo,
    Payload,
    RegionAccess,
    RegionInfo,
    RegionIoFdsReply,
    RegionIoFdsRequest,
    RegionRead,
    RegionReadReply,
    RegionWrite,
    RegionWriteMulti,
    RegionWriteMultiReply,
    RegionWriteReply,
    SetIrqs,
    Version,
    VfioBitmap,
)

from ._dma import (
    bitmap_ranges,
    dirty_pages,
    dma_maps,
    dma_read_replies,
    dma_reads,
    dma_unmaps,
    dma_write_replies,
    dma_writes,
    vfio_bitmaps,
)
from ._integers import u16s
from ._irqs import irq_infos, set_irqs
from ._json import version_json
from ._migration import (
    device_features,
    dma_logging_controls,
    dma_logging_reports,
    feature_mig_device_states,
    feature_migrations,
    mig_data_read_replies,
    mig_data_reads,
    mig_data_writes,
    migration_infos,
)
from ._regions import (
    device_infos,
    io_fd_sub_regions,
    region_accesses,
    region_infos,
    region_io_fds_replies,
    region_io_fds_requests,
    region_read_replies,
    region_reads,
    region_write_multi_replies,
    region_write_multis,
    region_write_replies,
    region_writes,
)


def versions(with_json: bool | None = None) -> SearchStrategy[Version]:
    """VERSION payloads, with version data (``with_json=True``), without, or either."""
    json = {None: st.one_of(st.none(), version_json()), True: version_json(), False: st.none()}[
        with_json
    ]
    return st.builds(Version, major=u16s(), minor=u16s(), json=json)


PAYLOAD_STRATEGIES: dict[type[Payload], SearchStrategy] = {
    Version: versions(),
    DmaMap: dma_maps(),
    VfioBitmap: vfio_bitmaps(),
    DmaUnmap: dma_unmaps(),
    DmaRead: dma_reads(),
    DmaReadReply: dma_read_replies(),
    DmaWrite: dma_writes(),
    DmaWriteReply: dma_write_replies(),
    DeviceInfo: device_infos(),
    IrqInfo: irq_infos(),
    SetIrqs: set_irqs(),
    RegionIoFdsRequest: region_io_fds_requests(),
    IoFdSubRegion: io_fd_sub_regions(),
    RegionIoFdsReply: region_io_fds_replies(),
    RegionInfo: region_infos(),
    RegionAccess: region_accesses(),
    RegionRead: region_reads(),
    RegionReadReply: region_read_replies(),
    RegionWrite: region_writes(),
    RegionWriteReply: region_write_replies(),
    RegionWriteMulti: region_write_multis(),
    RegionWriteMultiReply: region_write_multi_replies(),
    BitmapRange: bitmap_ranges(),
    DirtyPages: dirty_pages(),
    MigrationInfo: migration_infos(),
    DeviceFeature: device_features(),
    FeatureMigration: feature_migrations(),
    FeatureMigDeviceState: feature_mig_device_states(),
    DmaLoggingControl: dma_logging_controls(),
    DmaLoggingReport: dma_logging_reports(),
    MigDataRead: mig_data_reads(),
    MigDataReadReply: mig_data_read_replies(),
    MigDataWrite: mig_data_writes(),
}
