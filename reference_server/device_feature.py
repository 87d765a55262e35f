"""0.9.2: VFIO_USER_DEVICE_FEATURE, VFIO_USER_MIG_DATA_READ and VFIO_USER_MIG_DATA_WRITE.

DEVICE_FEATURE (argsz u32, flags u32, data): flags bits 0-15 the feature,
16 GET, 17 SET, 18 PROBE. EINVAL: a payload under 8 bytes, argsz under 8,
undefined flag bits, none of GET/SET/PROBE, GET and SET without PROBE ("mutually
exclusive, except for use with VFIO_DEVICE_FEATURE_PROBE"), an operation the
feature does not have (PROBE too: "the probe will only return success if all
of the indicated methods are supported"), data that does not decode. ENOTSUP:
a feature index the device does not have (migration features without
``Device.migration_v2``; indexes other than 1, 2, 6, 7, 8).

Replies: SET and PROBE give the request payload back ("The reply payload must
be the same as the request payload for setting or probing a feature"; EINVAL
before anything is done when argsz is below it). GET gives argsz = 8 + the
data's length, flags, data; argsz below that gets argsz = the size needed and
no data ("Message sizes"), and changes nothing.

Features:
  MIGRATION (1)         GET: flags STOP_COPY | PRE_COPY (without PRE_COPY for a
                        device described with pre_copy = false)
  MIG_DEVICE_STATE (2)  GET: device_state, data_fd -1; SET: migration_v2.py
                        (data_fd "is unused in vfio-user": ignored)
  DMA_LOGGING_START (6) SET: page_size is a hint: a power of two up to 1 GiB is
                        taken, anything else becomes the server's
                        migration_pgsize (4096), and the reply says which;
                        ranges (none: all writes) must not be empty, pass
                        2**64 or overlap (EINVAL); EBUSY while logging
  DMA_LOGGING_STOP (7)  SET: logging off, its log gone (off already: nothing)
  DMA_LOGGING_REPORT (8) GET: iova, length, page_size (a power of two, EINVAL
                        otherwise), then one bit per page from iova in u64s
                        (errata 8); EINVAL while logging is off, for an empty
                        range or one past 2**64; E2BIG for a bitmap above
                        max_data_xfer_size. The pages reported are cleared.
The log (dirty.DirtyLog on the connection's DMA map table) sees every write
of the DMA engine to client memory, as the 0.9.1 DIRTY_PAGES log does.

MIG_DATA_READ (argsz u32, size u32): EINVAL unless the payload is 8 bytes and
argsz covers the reply (8 + size); E2BIG for size above max_data_xfer_size;
the state rules are migration_v2.py's. Reply: argsz 8 + n, size n, n bytes.
MIG_DATA_WRITE (argsz u32, size u32, data): size must be the data's length,
E2BIG above max_data_xfer_size; no reply payload.
"""

from __future__ import annotations

import errno

from pytest_vfiouser.protocol import (
    DEVICE_FEATURE_MASK,
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
    bitmap_bytes,
)

from .dirty import DirtyLog
from .dma_map import check_range
from .errors import VfioError

_GET, _SET, _PROBE = (
    int(f) for f in (DeviceFeatureFlags.GET, DeviceFeatureFlags.SET, DeviceFeatureFlags.PROBE)
)
_OPS = _GET | _SET | _PROBE
_HEAD = DeviceFeature.FIXED_SIZE
_MAX_PAGE = 1 << 30
_MIGRATION_FEATURES = (Feature.MIGRATION, Feature.MIG_DEVICE_STATE)
# The operations each feature has.
OPERATIONS = {
    Feature.MIGRATION: _GET,
    Feature.MIG_DEVICE_STATE: _GET | _SET,
    Feature.DMA_LOGGING_START: _SET,
    Feature.DMA_LOGGING_STOP: _SET,
    Feature.DMA_LOGGING_REPORT: _GET,
}


def _power_of_two(n: int) -> bool:
    return n > 0 and not n & (n - 1)


def device_feature(conn, payload: bytes, fds: list[int]) -> bytes:
    req = conn.decode(DeviceFeature, payload)
    conn.check_argsz(req.argsz, _HEAD)
    flags = req.flags
    undefined = flags & ~(DEVICE_FEATURE_MASK | _OPS)
    if undefined:
        raise VfioError(errno.EINVAL, f"undefined flag bits {undefined:#x}")
    get, set_, probe = flags & _GET, flags & _SET, flags & _PROBE
    if not (get or set_ or probe):
        raise VfioError(errno.EINVAL, "none of GET, SET and PROBE is set")
    if get and set_ and not probe:
        raise VfioError(errno.EINVAL, "GET and SET are mutually exclusive without PROBE")
    feature = req.feature
    ops = _operations(conn, feature)
    asked = flags & (_GET | _SET)
    if asked & ~ops:
        raise VfioError(errno.EINVAL, f"feature {Feature(feature).name} has no such operation")
    if probe or set_:
        if req.argsz < len(payload):
            raise VfioError(
                errno.EINVAL, f"argsz {req.argsz} is below the {len(payload)}-byte reply"
            )
        if probe:
            return bytes(payload)
        data = _set(conn, Feature(feature), req.data)
        return DeviceFeature(req.argsz, flags, data).pack()
    size, data = _get(conn, Feature(feature), req.data, req.argsz - _HEAD)
    if data is None:  # argsz says the size needed, and no data comes
        return DeviceFeature(_HEAD + size, flags).pack()
    return DeviceFeature(_HEAD + size, flags, data).pack()


def _operations(conn, feature: int) -> int:
    ops = OPERATIONS.get(feature)
    if ops is None:
        raise VfioError(errno.ENOTSUP, f"no device feature {feature}")
    if feature in _MIGRATION_FEATURES and conn.device.migration_v2 is None:
        raise VfioError(errno.ENOTSUP, "the device does not migrate")
    return ops


def _set(conn, feature: Feature, data: bytes) -> bytes:
    """Do a SET; the reply's data (the request's, but for the page size START chose)."""
    if feature == Feature.MIG_DEVICE_STATE:
        req = conn.decode(FeatureMigDeviceState, data)
        conn.device.migration_v2.set_state(req.device_state)
    elif feature == Feature.DMA_LOGGING_START:
        return _logging_start(conn, data)
    else:  # DMA_LOGGING_STOP
        conn.dma_map.dirty = None
    return data


def _get(conn, feature: Feature, data: bytes, room: int) -> tuple[int, bytes | None]:
    """The size of the feature's data, and the data: None when ``room`` bytes cannot hold
    it (then nothing changed)."""
    if feature == Feature.DMA_LOGGING_REPORT:
        return _report(conn, data, room)
    if feature == Feature.MIGRATION:
        out = FeatureMigration(conn.device.migration_v2.flags).pack()
    else:  # MIG_DEVICE_STATE
        out = FeatureMigDeviceState(conn.device.migration_v2.state, -1).pack()
    return len(out), out if len(out) <= room else None


# ---- DMA logging


def _logging_start(conn, data: bytes) -> bytes:
    ctl = conn.decode(DmaLoggingControl, data)
    if conn.dma_map.dirty is not None:
        raise VfioError(errno.EBUSY, "DMA logging is already started")
    ends = []
    for iova, length in ctl.ranges:
        check_range(iova, length)
        ends.append((iova, iova + length))
    ends.sort()
    for (_, a_end), (b_start, _) in zip(ends, ends[1:], strict=False):
        if b_start < a_end:
            raise VfioError(errno.EINVAL, f"range at {b_start:#x} overlaps another range")
    page = ctl.page_size
    if not (_power_of_two(page) and page <= _MAX_PAGE):
        page = conn.settings.migration_pgsize
    conn.dma_map.dirty = DirtyLog(page, ctl.ranges)
    return DmaLoggingControl(page, ctl.num_ranges, ctl.reserved, ctl.ranges).pack()


def _report(conn, data: bytes, room: int) -> tuple[int, bytes | None]:
    req = conn.decode(DmaLoggingReport, data)
    if req.bitmap:
        raise VfioError(
            errno.EINVAL,
            f"{len(data)} bytes of request data, expected {DmaLoggingReport.HEAD_SIZE}",
        )
    log = conn.dma_map.dirty
    if log is None:
        raise VfioError(errno.EINVAL, "DMA_LOGGING_REPORT while DMA logging is off")
    if not _power_of_two(req.page_size):
        raise VfioError(errno.EINVAL, f"page_size {req.page_size:#x} is not a power of two")
    check_range(req.iova, req.length)
    size = bitmap_bytes(req.length, req.page_size)
    conn.check_xfer_size(size, f"a {size}-byte bitmap")
    need = DmaLoggingReport.HEAD_SIZE + size
    if need > room:
        return need, None
    bits = log.bitmap(req.iova, req.length, size, req.page_size)
    log.forget(req.iova, req.length)
    return need, DmaLoggingReport(req.iova, req.length, req.page_size, bits).pack()


# ---- migration data


def mig_data_read(conn, payload: bytes, fds: list[int]) -> bytes:
    req = conn.decode(MigDataRead, payload)
    conn.check_xfer_size(req.size, f"size {req.size}")
    conn.check_argsz(req.argsz, MigDataRead.SIZE + req.size)
    migration = _migration(conn)
    data = migration.read(req.size)
    return MigDataReadReply(MigDataRead.SIZE + len(data), len(data), data).pack()


def mig_data_write(conn, payload: bytes, fds: list[int]) -> bytes:
    req = conn.decode(MigDataWrite, payload)
    conn.check_xfer_size(req.size, f"size {req.size}")
    _migration(conn).write(req.data)
    return b""


def _migration(conn):
    if conn.device.migration_v2 is None:
        raise VfioError(errno.EINVAL, "the device does not migrate")
    return conn.device.migration_v2
