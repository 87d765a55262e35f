"""Payloads of migration: MIGRATION_INFO (0.9.1); DEVICE_FEATURE with its features,
MIG_DATA_READ and MIG_DATA_WRITE (0.9.2)."""

from __future__ import annotations

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from pytest_vfiouser.protocol import (
    DeviceFeature,
    DeviceFeatureFlags,
    DmaLoggingControl,
    DmaLoggingReport,
    Feature,
    FeatureMigDeviceState,
    FeatureMigration,
    MigDataRead,
    MigDataReadReply,
    MigDataWrite,
    MigrationFlags,
    MigrationInfo,
    MigState,
)

from ._collections import MAX_DATA, _tuples_of, data_bytes
from ._integers import enum_or_any, flags_of, powers_of_two, s32s, u16s, u32s, u64s


def migration_infos() -> SearchStrategy[MigrationInfo]:
    return st.builds(
        MigrationInfo,
        device_state=st.one_of(st.integers(0, 7), u32s()),
        reserved=u32s(),
        pending_bytes=u64s(),
        data_offset=u64s(),
        data_size=u64s(),
    )


def feature_migrations() -> SearchStrategy[FeatureMigration]:
    return st.builds(FeatureMigration, flags=flags_of(MigrationFlags, 64))


def feature_mig_device_states() -> SearchStrategy[FeatureMigDeviceState]:
    return st.builds(
        FeatureMigDeviceState,
        device_state=enum_or_any(MigState),
        data_fd=st.one_of(st.just(-1), s32s()),
    )


def dma_logging_ranges() -> SearchStrategy[tuple[tuple[int, int], ...]]:
    return _tuples_of(st.tuples(u64s(), u64s()))


def dma_logging_controls() -> SearchStrategy[DmaLoggingControl]:
    return st.builds(
        lambda page_size, reserved, ranges: DmaLoggingControl(
            page_size, len(ranges), reserved, ranges
        ),
        st.one_of(powers_of_two(), u64s()),
        st.one_of(st.just(0), u32s()),
        dma_logging_ranges(),
    )


def dma_logging_reports() -> SearchStrategy[DmaLoggingReport]:
    """Requests (no bitmap) and replies (a bitmap of whole u64s)."""
    bitmap = st.lists(st.binary(min_size=8, max_size=8), max_size=MAX_DATA // 8).map(b"".join)
    return st.builds(
        DmaLoggingReport,
        iova=u64s(),
        length=u64s(),
        page_size=st.one_of(powers_of_two(), u64s()),
        bitmap=bitmap,
    )


_FEATURE_OPS = [
    int(DeviceFeatureFlags.GET),
    int(DeviceFeatureFlags.SET),
    int(DeviceFeatureFlags.PROBE),
    int(DeviceFeatureFlags.PROBE | DeviceFeatureFlags.GET),
    int(DeviceFeatureFlags.PROBE | DeviceFeatureFlags.SET),
]


def feature_data() -> SearchStrategy[tuple[int, bytes]]:
    """(feature index, data) with the data a feature carries, or none (GET, PROBE)."""

    def typed(feature, strategy):
        return st.tuples(
            st.just(int(feature)), st.one_of(st.just(b""), strategy.map(lambda p: p.pack()))
        )

    return st.one_of(
        typed(Feature.MIGRATION, feature_migrations()),
        typed(Feature.MIG_DEVICE_STATE, feature_mig_device_states()),
        typed(Feature.DMA_LOGGING_START, dma_logging_controls()),
        typed(Feature.DMA_LOGGING_STOP, dma_logging_controls()),
        typed(Feature.DMA_LOGGING_REPORT, dma_logging_reports()),
        st.tuples(u16s(), data_bytes()),
    )


def device_features() -> SearchStrategy[DeviceFeature]:
    """DEVICE_FEATURE requests and replies, the data usually that of the feature,
    argsz usually the size of the payload."""

    def build(feature_and_data, op, any_flags, any_argsz):
        feature, data = feature_and_data
        flags = op | feature if any_flags is None else any_flags
        argsz = DeviceFeature.FIXED_SIZE + len(data) if any_argsz is None else any_argsz
        return DeviceFeature(argsz, flags, data)

    return st.builds(
        build,
        feature_data(),
        st.sampled_from(_FEATURE_OPS),
        st.one_of(st.none(), u32s()),
        st.one_of(st.none(), u32s()),
    )


def mig_data_reads() -> SearchStrategy[MigDataRead]:
    return st.builds(MigDataRead, argsz=u32s(), size=u32s())


def _mig_data(cls) -> SearchStrategy:
    return st.builds(lambda argsz, data: cls(argsz, len(data), data), u32s(), data_bytes())


def mig_data_read_replies() -> SearchStrategy[MigDataReadReply]:
    return _mig_data(MigDataReadReply)


def mig_data_writes() -> SearchStrategy[MigDataWrite]:
    return _mig_data(MigDataWrite)
