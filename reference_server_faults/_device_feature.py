"""0.9.2 commands under the faults: DEVICE_FEATURE (the message, the migration
features, DMA logging), MIG_DATA_READ/WRITE and REGION_WRITE_MULTI, the reference
server's handlers wrapped with the defects of device_feature.py's area and of
commands.region_write_multi (the state machine's own are in _migration_v2)."""

from __future__ import annotations

import errno
import struct
from dataclasses import replace

from pytest_vfiouser.protocol import (
    DEVICE_FEATURE_MASK,
    DeviceFeature,
    DmaLoggingControl,
    DmaLoggingReport,
    Feature,
    FeatureMigDeviceState,
    FeatureMigration,
    MigDataRead,
    MigrationFlags,
    MigState,
    RegionFlags,
    RegionWriteMulti,
    RegionWriteMultiReply,
    SingleWrite,
    bitmap_bytes,
)
from reference_server import commands
from reference_server import device_feature as df
from reference_server.errors import VfioError

from ._catalogue import FAULTS

_GET, _SET, _PROBE, _OPS = df._GET, df._SET, df._PROBE, df._OPS
_HEAD = df._HEAD
_U32 = struct.Struct("<I")
_REPORT_FAULTS = {
    "report-before-start-zeros",
    "report-page-size-unchecked",
    "report-empty-range-accepted",
    "report-page-size-ignored",
}


def _with(payload: bytes, argsz: int | None = None, flags: int | None = None) -> bytes:
    """``payload`` with its argsz and/or flags replaced."""
    head = bytearray(payload[:_HEAD])
    if argsz is not None:
        _U32.pack_into(head, 0, argsz)
    if flags is not None:
        _U32.pack_into(head, 4, flags)
    return bytes(head) + payload[_HEAD:]


def device_feature(conn, payload: bytes, fds: list[int]) -> bytes:
    req = conn.decode(DeviceFeature, payload)
    flags, feature = req.flags, req.feature
    if flags & _PROBE and "feature-probe-unchecked" in FAULTS:
        return bytes(payload)  # "probing": whatever the feature and the operations
    early = _message_faults(conn, req, payload)
    if early is not None:
        return early
    if req.argsz < _HEAD and "feature-argsz-below-head-taken" in FAULTS:
        payload = _with(payload, argsz=_HEAD)  # too small: as small as it may be
    ops = flags & _OPS
    served = flags
    if "feature-undefined-flags-ignored" in FAULTS:
        served = flags & (DEVICE_FEATURE_MASK | _OPS)  # the undefined bits dropped
    if not ops and "feature-no-op-as-get" in FAULTS:
        served = flags | _GET  # no action flag: a GET
    if ops == _GET | _SET and "feature-get-set-as-set" in FAULTS:
        served = flags & ~_GET  # GET and SET without PROBE: the SET wins
    get = served & _OPS == _GET
    sent = payload if served == flags else _with(payload, flags=served)
    if get and "feature-get-small-argsz-full-data" in FAULTS:
        sent = _with(sent, argsz=0xFFFFFFFF)  # argsz is not looked at: the whole data
    if get and feature == Feature.DMA_LOGGING_REPORT and FAULTS & _REPORT_FAULTS:
        early = _report_faults(conn, req)
        if early is not None:
            return early
    old_state = conn.device.migration_v2.state if conn.device.migration_v2 else None
    reply = df.device_feature(conn, sent, fds)
    if served != flags:
        reply = _with(reply, flags=flags)
    if get and len(reply) > _HEAD:  # a GET's data is there
        reply = _get_faults(conn, req, reply)
    elif flags & _PROBE and flags & _GET and "feature-probe-reply-data" in FAULTS:
        reply += _get_data(conn, feature)  # the PROBE of a GET answered like the GET
    elif served & _OPS == _SET:
        reply = _set_faults(req, reply, old_state)
        if feature == Feature.DMA_LOGGING_START and "start-no-ranges-logs-nothing" in FAULTS:
            if not DmaLoggingControl.unpack(req.data).num_ranges:
                conn.dma_map.dirty.ranges = ((0, 0),)  # no range: none logged
    return reply


def _message_faults(conn, req: DeviceFeature, payload: bytes) -> bytes | None:
    """The faults that answer a request in place of the correct handler (None: none did)."""
    flags, feature = req.flags, req.feature
    stop = feature == Feature.DMA_LOGGING_STOP
    if flags & _PROBE and stop and "probe-logging-stop-unsupported" in FAULTS:
        raise VfioError(errno.ENOTSUP, "DMA_LOGGING_STOP is not probed (START alone is)")
    if flags & _OPS == _SET and feature == Feature.DMA_LOGGING_STOP:
        if "stop-keeps-logging" in FAULTS:
            return bytes(payload)  # answered, but the log goes on
    if flags & _OPS == _SET and feature == Feature.MIG_DEVICE_STATE:
        if len(req.data) < 8 and "state-set-short-data-padded" in FAULTS:
            data = req.data + bytes(8 - len(req.data))  # the missing bytes read as zeros
            df.device_feature(conn, DeviceFeature(req.argsz, flags, data).pack(), [])
            return bytes(payload)
    return None


def _get_data(conn, feature: int) -> bytes:
    """The data a GET of ``feature`` gives (nothing for a feature GET cannot give)."""
    try:
        got = df.device_feature(conn, DeviceFeature(0xFFFFFFFF, _GET | feature).pack(), [])
    except VfioError:
        return b""
    return got[_HEAD:]


def _get_faults(conn, req: DeviceFeature, reply: bytes) -> bytes:
    data = reply[_HEAD:]
    if req.feature == Feature.MIGRATION and "migration-flags-no-stop-copy" in FAULTS:
        data = FeatureMigration(int(MigrationFlags.PRE_COPY)).pack()  # STOP_COPY "implied"
    if req.feature == Feature.MIG_DEVICE_STATE and "state-get-always-running" in FAULTS:
        data = replace(FeatureMigDeviceState.unpack(data), device_state=MigState.RUNNING).pack()
    if req.feature == Feature.DMA_LOGGING_REPORT:
        data = _report_reply_faults(conn, data)
    reply = reply[:_HEAD] + data
    if "feature-get-argsz-echoed" in FAULTS:
        reply = _with(reply, argsz=req.argsz)
    return reply


def _set_faults(req: DeviceFeature, reply: bytes, old_state: int | None) -> bytes:
    feature = req.feature
    if feature == Feature.MIG_DEVICE_STATE and "set-reply-previous-state" in FAULTS:
        data = FeatureMigDeviceState.unpack(reply[_HEAD:])
        return reply[:_HEAD] + replace(data, device_state=old_state).pack()
    if feature == Feature.DMA_LOGGING_START and "start-page-size-hint-echoed" in FAULTS:
        got = DmaLoggingControl.unpack(reply[_HEAD:])
        asked = DmaLoggingControl.unpack(req.data).page_size
        return reply[:_HEAD] + replace(got, page_size=asked).pack()  # the hint, not the choice
    if feature == Feature.DMA_LOGGING_START and "start-reply-page-size-zero" in FAULTS:
        got = DmaLoggingControl.unpack(reply[_HEAD:])
        asked = DmaLoggingControl.unpack(req.data).page_size
        if got.page_size == asked:  # only a changed page size is written back
            return reply[:_HEAD] + replace(got, page_size=0).pack()
    if feature == Feature.DMA_LOGGING_STOP and "stop-reply-empty" in FAULTS:
        return b""  # nothing to give back
    return reply


# ---- DMA_LOGGING_REPORT


def _report_faults(conn, req: DeviceFeature) -> bytes | None:
    """The faults that answer a REPORT in place of the correct handler (None: none did)."""
    rep = conn.decode(DmaLoggingReport, req.data)
    log = conn.dma_map.dirty
    if not rep.length and log is not None and "report-empty-range-accepted" in FAULTS:
        return _report_reply(req, rep, b"")  # an empty range: an empty bitmap
    if not rep.page_size or not rep.length:
        return None
    if log is not None and "report-page-size-ignored" in FAULTS and df._power_of_two(rep.page_size):
        size = bitmap_bytes(rep.length, rep.page_size)
        pages = bitmap_bytes(rep.length, log.pgsize)  # bits of the log's own pages
        got = int.from_bytes(log.bitmap(rep.iova, rep.length, pages, log.pgsize), "little")
        log.forget(rep.iova, rep.length)
        return _report_reply(req, rep, (got & ((1 << 8 * size) - 1)).to_bytes(size, "little"))
    if log is None and "report-before-start-zeros" in FAULTS:
        bits = bytes(bitmap_bytes(rep.length, rep.page_size))  # nothing was logged
        return _report_reply(req, rep, bits)
    unchecked = "report-page-size-unchecked" in FAULTS
    if log is not None and unchecked and not df._power_of_two(rep.page_size):
        size = bitmap_bytes(rep.length, rep.page_size)  # pages of page_size, whatever it is
        bits = log.bitmap(rep.iova, rep.length, size, rep.page_size)
        log.forget(rep.iova, rep.length)
        return _report_reply(req, rep, bits)
    return None


def _report_reply(req: DeviceFeature, rep: DmaLoggingReport, bits: bytes) -> bytes:
    data = replace(rep, bitmap=bits).pack()
    return DeviceFeature(_HEAD + len(data), req.flags, data).pack()


def _report_reply_faults(conn, data: bytes) -> bytes:
    rep = DmaLoggingReport.unpack(data)
    if "report-bits-past-range" in FAULTS and conn.dma_map.dirty is not None:
        # The bitmap is filled for its whole u64s: pages written past the range show.
        n = len(rep.bitmap)
        more = conn.dma_map.dirty.bitmap(rep.iova, n * 8 * rep.page_size, n, rep.page_size)
        both = int.from_bytes(rep.bitmap, "little") | int.from_bytes(more, "little")
        data = replace(rep, bitmap=both.to_bytes(n, "little")).pack()
    if "report-head-zeroed" in FAULTS:
        data = (
            bytes(DmaLoggingReport.HEAD_SIZE) + data[DmaLoggingReport.HEAD_SIZE :]
        )  # the bitmap alone is filled
    return data


# ---- MIG_DATA_READ / MIG_DATA_WRITE


def mig_data_read(conn, payload: bytes, fds: list[int]) -> bytes:
    reply = df.mig_data_read(conn, payload, fds)
    if "data-read-argsz-echoed" in FAULTS:
        reply = _with(reply, argsz=MigDataRead.unpack(payload).argsz)
    return reply


def mig_data_write(conn, payload: bytes, fds: list[int]) -> bytes:
    reply = df.mig_data_write(conn, payload, fds)
    if "data-write-reply-payload" in FAULTS:
        return bytes(payload[:_HEAD])  # argsz and size, echoed
    return reply


# ---- REGION_WRITE_MULTI


_MULTI_HEAD = struct.Struct("<Q")


def region_write_multi(conn, payload: bytes, fds: list[int]) -> bytes:
    if "write-multi-unnegotiated" in FAULTS and not conn.client.write_multiple:
        conn.client = replace(conn.client, write_multiple=True)
    if "write-multi-cnt-from-payload" in FAULTS and len(payload) >= 8:
        # wr_cnt is taken from the payload's length, whatever the field says
        n = (len(payload) - 8) // SingleWrite.SIZE
        payload = _MULTI_HEAD.pack(n) + payload[8 : 8 + n * SingleWrite.SIZE]
    if FAULTS & {"write-multi-partial-claims-all", "write-multi-read-only-ignored"}:
        return _one_by_one(conn, payload, fds)
    if len(payload) > 8 and FAULTS & {"write-multi-last-only", "write-multi-count-unchecked"}:
        req = conn.decode(RegionWriteMulti, payload)
        writes = req.writes
        if "write-multi-count-unchecked" in FAULTS:  # the 8 data bytes there are
            writes = tuple(replace(w, count=min(w.count, 8)) for w in writes)
        if "write-multi-last-only" in FAULTS:  # each write read into one slot
            return commands.region_write_multi(conn, RegionWriteMulti(writes[-1:]).pack(), fds)
        payload = RegionWriteMulti(writes).pack()
    return commands.region_write_multi(conn, payload, fds)


def _one_by_one(conn, payload: bytes, fds: list[int]) -> bytes:
    """Faults write-multi-partial-claims-all (a write that cannot be done is skipped) and
    write-multi-read-only-ignored (a write to a region without WRITE is skipped): the
    others are applied, and the reply counts every write."""
    req = conn.decode(RegionWriteMulti, payload)
    for w in req.writes:
        region = conn.region(w.region)
        if not region.flags & RegionFlags.WRITE and "write-multi-read-only-ignored" in FAULTS:
            continue
        try:
            commands.region_write_multi(conn, RegionWriteMulti((w,)).pack(), fds)
        except VfioError:
            if "write-multi-partial-claims-all" not in FAULTS:
                raise
    return RegionWriteMultiReply(len(req.writes)).pack()
