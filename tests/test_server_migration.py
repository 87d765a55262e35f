"""The 0.9.1 migration region (reference_server/migration.py) and the VERSION
migration capability: states and transitions, field access, the pre-copy and
stop-and-copy loop, resuming, and whole migrations between two server processes."""

from __future__ import annotations

import errno
import os
import struct
import zlib

import pytest
from test_server_support import (  # noqa: F401  (fixtures)
    RefServer,
    client,
    eventfd,
    eventfd_value,
    read32,
    ref_server,
    write32,
)

from pytest_vfiouser.protocol import (
    V1_TABLE_STATES,
    Command,
    IrqSetFlags,
    MigrationInfo,
    RegionTypeCap,
    Version,
    v1_transition_valid,
)
from pytest_vfiouser.protocol import MigrationStateV1 as S
from reference_server import migration as M
from reference_server import pytest_hooks
from reference_server import registers as R
from reference_server.device import Device
from reference_server.device_config import ConfigError, parse

MIG = R.MIGRATION_REGION
U32, U64 = struct.Struct("<I"), struct.Struct("<Q")
MIGRATION_CAPS = {"max_msg_fds": 16, "max_data_xfer_size": 1 << 20, "migration": {"pgsize": 4096}}


# ---- helpers


def state(c) -> int:
    return U32.unpack(c.region_read(MIG, MigrationInfo.DEVICE_STATE, 4).check().body.data)[0]


def set_state(c, value: int):
    return c.region_write(MIG, MigrationInfo.DEVICE_STATE, U32.pack(value))


def field(c, offset: int) -> int:
    return U64.unpack(c.region_read(MIG, offset, 8).check().body.data)[0]


def write_field(c, offset: int, value: int):
    return c.region_write(MIG, offset, U64.pack(value))


def read_chunks(c, piece: int | None = None) -> list[list[bytes]]:
    """One saving phase (the spec's loop) until pending_bytes is 0: each chunk as
    the list of REGION_READ transactions it was read in."""
    chunks = []
    while field(c, MigrationInfo.PENDING_BYTES):
        offset = field(c, MigrationInfo.DATA_OFFSET)
        size = field(c, MigrationInfo.DATA_SIZE)
        assert size and M.DATA_OFFSET <= offset and offset + size <= R.MIGRATION_SIZE
        step = piece or size
        chunks.append(
            [
                c.region_read(MIG, offset + o, min(step, size - o)).check().body.data
                for o in range(0, size, step)
            ]
        )
        assert len(chunks) < 100
    return chunks


def save(c, precopy: bool = True, piece: int | None = None) -> list[list[bytes]]:
    """Migrate out: RUNNING (-> PRE_COPY) -> STOP_AND_COPY -> STOPPED; every chunk read."""
    chunks = []
    if precopy:
        set_state(c, S.PRE_COPY).check()
        chunks += read_chunks(c, piece)
    set_state(c, S.STOP_AND_COPY).check()
    chunks += read_chunks(c, piece)
    set_state(c, S.STOPPED).check()
    return chunks


def write_chunk(c, transactions: list[bytes], size: int | None = None):
    """Resume one chunk: read data_offset, write the data (same transactions), data_size."""
    offset = field(c, MigrationInfo.DATA_OFFSET)
    pos = offset
    for t in transactions:
        c.region_write(MIG, pos, t).check()
        pos += len(t)
    return write_field(c, MigrationInfo.DATA_SIZE, pos - offset if size is None else size)


def restore(c, chunks: list[list[bytes]]) -> None:
    set_state(c, S.RESUMING).check()
    for transactions in chunks:
        write_chunk(c, transactions).check()
    set_state(c, S.RUNNING).check()


def header(chunk: bytes) -> tuple:
    return M.HEADER.unpack_from(chunk)


def reach(c, target: S) -> None:
    """From RUNNING to ``target`` by a valid path."""
    if target != S.RUNNING:
        set_state(c, target).check()


@pytest.fixture
def mc(ref_server):  # noqa: F811
    """A negotiated client; the device is put back to RUNNING (DEVICE_RESET) afterwards."""
    c = ref_server.connect(capabilities=MIGRATION_CAPS)
    assert state(c) == S.RUNNING
    yield c
    c.reset().check()
    assert state(c) == S.RUNNING
    c.close()


# ---- the region and the capability


def test_region_info(client):  # noqa: F811
    info = client.region_info(MIG, argsz=4096).check().body
    assert (info.flags, info.size, info.offset) == (11, R.MIGRATION_SIZE, 0)
    assert info.caps == (RegionTypeCap(3, 1),) and info.argsz == 48


@pytest.mark.parametrize(
    "proposed, answered",
    [
        ({"pgsize": 4096}, 4096),
        ({"pgsize": 512}, 512),
        ({"pgsize": 1 << 16}, 4096),
        ({}, 4096),
    ],
)
def test_migration_capability_pgsize_is_the_smaller(ref_server, proposed, answered):  # noqa: F811
    with ref_server.connect(negotiate=False) as c:
        v = c.request(Command.VERSION, Version.with_capabilities(0, 0, migration=proposed))
        assert v.check().body.json["capabilities"] == {"migration": {"pgsize": answered}}


def test_migration_capability_only_when_proposed(client):  # noqa: F811
    assert "migration" not in client.negotiated.capabilities.raw


def test_migration_not_echoed_without_migration_region(tmp_path):
    dev = tmp_path / "d.toml"
    dev.write_text('[[regions]]\nindex = 9\nkind = "absent"\n')
    srv = RefServer(tmp_path, f"--device={dev}")
    try:
        with srv.connect(negotiate=False) as c:
            v = (
                c.request(
                    Command.VERSION, Version.with_capabilities(0, 0, migration={"pgsize": 4096})
                )
                .check()
                .body
            )
            assert "migration" not in v.json["capabilities"]
            assert c.region_info(MIG).check().body.size == 0
    finally:
        assert srv.stop() == 0


def test_device_state_starts_running(tmp_path):
    srv = RefServer(tmp_path)
    try:
        with srv.connect() as c:
            data = c.region_read(MIG, 0, MigrationInfo.SIZE).check().body.data
            assert MigrationInfo.unpack(data) == MigrationInfo(S.RUNNING, 0, 0, M.DATA_OFFSET, 0)
    finally:
        assert srv.stop() == 0


# ---- transitions


@pytest.mark.parametrize(
    "target", [*V1_TABLE_STATES, S.INVALID_101, S.ERROR, S.INVALID_111, 8, 0x81, 0xFFFFFFFF]
)
@pytest.mark.parametrize("start", V1_TABLE_STATES)
def test_transition(mc, start, target):
    reach(mc, start)
    assert state(mc) == start
    r = set_state(mc, target)
    if v1_transition_valid(start, target) or start == target:
        assert r.ok and r.payload == struct.pack("<QII", 0, MIG, 4)
        assert state(mc) == target
    else:
        assert r.error == errno.EINVAL and not r.payload
        assert state(mc) == start


def test_walk_every_valid_transition(mc):
    # A path through every arc of the table, reading back each state.
    path = [
        S.STOPPED,
        S.RUNNING,
        S.STOP_AND_COPY,
        S.STOPPED,
        S.RUNNING,
        S.PRE_COPY,
        S.STOP_AND_COPY,
        S.RUNNING,
        S.RESUMING,
        S.RUNNING,
    ]
    cur = S.RUNNING
    for s in path:
        assert v1_transition_valid(cur, s)
        set_state(mc, s).check()
        assert state(mc) == s
        cur = s


def test_state_outlives_the_connection(ref_server):  # noqa: F811
    with ref_server.connect() as c:
        set_state(c, S.STOPPED).check()
    with ref_server.connect() as c:
        assert state(c) == S.STOPPED
        c.reset().check()


def test_reset_returns_to_running_and_drops_the_migration(mc):
    set_state(mc, S.PRE_COPY).check()
    assert field(mc, MigrationInfo.PENDING_BYTES) > 0
    mc.reset().check()
    assert state(mc) == S.RUNNING and field(mc, MigrationInfo.PENDING_BYTES) == 0


# ---- field access


@pytest.mark.parametrize("offset", [MigrationInfo.PENDING_BYTES, MigrationInfo.DATA_OFFSET])
@pytest.mark.parametrize("start", [S.RUNNING, S.PRE_COPY, S.RESUMING])
def test_read_only_fields_refuse_writes(mc, offset, start):
    reach(mc, start)
    before = mc.region_read(MIG, 0, MigrationInfo.SIZE).check().body.data
    r = write_field(mc, offset, 0x1234)
    assert r.error == errno.EPERM and not r.payload
    assert mc.region_read(MIG, 0, MigrationInfo.SIZE).check().body.data == before


@pytest.mark.parametrize("start", [S.RUNNING, S.STOPPED, S.PRE_COPY, S.STOP_AND_COPY])
def test_data_size_is_written_only_while_resuming(mc, start):
    reach(mc, start)
    assert write_field(mc, MigrationInfo.DATA_SIZE, 64).error == errno.EPERM
    assert state(mc) == start


@pytest.mark.parametrize("offset, data", [(4, b"\xff\xff\xff\xff"), (5, b"\1\2"), (7, b"\1")])
def test_reserved_is_ignored(mc, offset, data):
    mc.region_write(MIG, offset, data).check()
    assert mc.region_read(MIG, 4, 4).check().body.data == b"\0" * 4
    assert state(mc) == S.RUNNING


@pytest.mark.parametrize(
    "offset, data, err",
    [
        (0, b"\1\0", errno.EINVAL),  # half of device_state
        (0, b"\1\0\0\0\0\0\0\0", errno.EINVAL),  # device_state and reserved
        (2, b"\0\0\0\0", errno.EINVAL),
        (8, b"\0" * 4, errno.EINVAL),  # half of pending_bytes
        (24, b"\0" * 4, errno.EINVAL),
        (20, b"\0" * 8, errno.EINVAL),
        (0, b"\0" * 32, errno.EINVAL),  # the whole structure
        (32, b"\0" * 4, errno.EINVAL),  # the gap
        (M.DATA_OFFSET - 4, b"\0" * 8, errno.EINVAL),  # gap and data area
        (M.DATA_OFFSET, b"\0" * 8, errno.EPERM),  # the data area, not resuming
    ],
)
def test_bad_writes(mc, offset, data, err):
    assert mc.region_write(MIG, offset, data).error == err
    assert state(mc) == S.RUNNING


def test_reads_of_any_shape_have_no_side_effects(mc):
    set_state(mc, S.STOP_AND_COPY).check()
    pending = field(mc, MigrationInfo.PENDING_BYTES)
    whole = MigrationInfo.unpack(mc.region_read(MIG, 0, 32).check().body.data)
    assert whole == MigrationInfo(S.STOP_AND_COPY, 0, pending, M.DATA_OFFSET, 0)
    assert mc.region_read(MIG, 0, 1).check().body.data == bytes([S.STOP_AND_COPY])
    assert mc.region_read(MIG, 30, 8).check().body.data == bytes(8)  # data_size and gap
    assert mc.region_read(MIG, 0, 0).check().body.data == b""
    assert field(mc, MigrationInfo.DATA_SIZE) == 0  # no chunk was offered by those reads
    assert field(mc, MigrationInfo.PENDING_BYTES) == pending


# ---- saving


def test_precopy_and_stop_and_copy_loop(mc):
    blob_size = len(Device().save_state())  # the same device: the same size
    set_state(mc, S.PRE_COPY).check()
    pending = field(mc, MigrationInfo.PENDING_BYTES)
    room = M.CHUNK_MAX - M.HEADER.size
    n_chunks = -(-blob_size // room)
    assert pending == blob_size + n_chunks * M.HEADER.size
    assert field(mc, MigrationInfo.PENDING_BYTES) == pending  # idempotent
    assert field(mc, MigrationInfo.DATA_SIZE) == 0  # nothing offered before data_offset
    seen = []
    while pending:
        assert field(mc, MigrationInfo.DATA_OFFSET) == M.DATA_OFFSET
        assert field(mc, MigrationInfo.DATA_OFFSET) == M.DATA_OFFSET  # same chunk again
        size = field(mc, MigrationInfo.DATA_SIZE)
        assert 0 < size <= M.CHUNK_MAX
        chunk = mc.region_read(MIG, M.DATA_OFFSET, size).check().body.data
        magic, seq, kind, off, total, crc, length = header(chunk)
        assert (magic, seq, kind, total, length) == (
            M.MAGIC,
            len(seen),
            M.PRECOPY,
            blob_size,
            size - M.HEADER.size,
        )
        assert off == sum(h[6] for h in seen) and zlib.crc32(chunk[M.HEADER.size :]) == crc
        seen.append(header(chunk))
        new = field(mc, MigrationInfo.PENDING_BYTES)
        assert new == pending - size
        pending = new
    assert len(seen) == n_chunks
    # Pre-copy with nothing left: the client must try again; nothing is offered.
    assert field(mc, MigrationInfo.PENDING_BYTES) == 0
    assert field(mc, MigrationInfo.DATA_OFFSET) == M.DATA_OFFSET
    assert field(mc, MigrationInfo.DATA_SIZE) == 0
    set_state(mc, S.STOP_AND_COPY).check()
    final = read_chunks(mc)
    heads = [header(t[0]) for t in final]
    assert [h[1] for h in heads] == list(range(n_chunks, 2 * n_chunks))
    assert {h[2] for h in heads} == {M.FINAL}
    assert field(mc, MigrationInfo.PENDING_BYTES) == 0  # stop-and-copy ends with 0
    assert field(mc, MigrationInfo.DATA_SIZE) == 0


def test_stop_and_copy_before_precopy_is_done(mc):
    set_state(mc, S.PRE_COPY).check()
    field(mc, MigrationInfo.PENDING_BYTES)
    field(mc, MigrationInfo.DATA_OFFSET)  # one chunk offered, then the switch
    set_state(mc, S.STOP_AND_COPY).check()
    chunks = read_chunks(mc)
    assert [header(t[0])[1] for t in chunks] == list(range(1, 1 + len(chunks)))


def test_leaving_stop_and_copy_drops_what_was_not_read(mc):
    set_state(mc, S.STOP_AND_COPY).check()
    set_state(mc, S.RUNNING).check()
    assert field(mc, MigrationInfo.PENDING_BYTES) == 0
    set_state(mc, S.STOP_AND_COPY).check()
    field(mc, MigrationInfo.PENDING_BYTES)
    field(mc, MigrationInfo.DATA_OFFSET)
    assert header(mc.region_read(MIG, M.DATA_OFFSET, 40).check().body.data)[1] == 0


# ---- whole migrations between two processes


def _dirty_up(c, tag: int) -> None:
    """Distinctive state in every part of the device."""
    c.region_write(R.RAM_REGION, 0, bytes((i * 7 + tag) & 0xFF for i in range(R.RAM_SIZE)))
    c.region_write(R.DMA_RAM_REGION, 0x100, b"dma ram %d" % tag).check()
    c.region_write(R.DMA_RAM_REGION, R.DMA_RAM_SIZE - 4, b"END!").check()
    for n in range(R.SCRATCH_COUNT):
        write32(c, R.scratch(n), 0x11111111 * (n + 1) ^ tag).check()
    write32(c, R.REG_DMA_LENGTH, 0x123 + tag).check()
    c.region_write(R.CONFIG_REGION, 0x3C, bytes([tag])).check()  # interrupt line
    c.set_irqs(R.IRQ_MSIX, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_MASK, 3, 1).check()


def _device_state(c) -> bytes:
    return pytest_hooks.pytest_vfu_device_state(c, None)


@pytest.fixture
def pair(tmp_path):
    src, dst = RefServer(tmp_path, name="src"), RefServer(tmp_path, name="dst")
    yield src, dst
    for srv in (src, dst):
        assert srv.stop() == 0
        assert "Traceback" not in srv.log()


@pytest.mark.parametrize(
    "precopy, piece", [(True, None), (False, None), (True, 4096), (True, 1000)]
)
def test_full_migration(pair, precopy, piece):
    src, dst = pair
    with (
        src.connect(capabilities=MIGRATION_CAPS) as s,
        dst.connect(capabilities=MIGRATION_CAPS) as d,
    ):
        _dirty_up(s, 0x5A)
        before = _device_state(s)
        assert before != _device_state(d)
        chunks = save(s, precopy, piece)
        assert state(s) == S.STOPPED and _device_state(s) == before
        restore(d, chunks)
        assert state(d) == S.RUNNING
        assert _device_state(d) == before
        # The interrupt mask came along: MSI-X 3 is masked, so a trigger is held pending.
        fd = eventfd()
        try:
            d.set_irqs(
                R.IRQ_MSIX, IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER, 3, 1, [fd]
            ).check()
            write32(d, R.REG_IRQ_TRIGGER, R.irq_trigger_value(R.IRQ_MSIX, 3)).check()
            assert eventfd_value(fd) == 0
            d.set_irqs(R.IRQ_MSIX, IrqSetFlags.DATA_NONE | IrqSetFlags.ACTION_UNMASK, 3, 1).check()
            assert eventfd_value(fd) == 1
        finally:
            os.close(fd)


def test_migration_back_and_forth(pair):
    src, dst = pair
    with src.connect() as s, dst.connect() as d:
        _dirty_up(s, 1)
        restore(d, save(s))
        _dirty_up(d, 2)
        state_d = _device_state(d)
        set_state(s, S.RUNNING).check()
        restore(s, save(d))
        assert _device_state(s) == state_d


# ---- resuming with bad data


@pytest.fixture
def stream(tmp_path):
    """Chunks saved from a second server with distinctive state."""
    srv = RefServer(tmp_path, name="other")
    try:
        with srv.connect() as c:
            _dirty_up(c, 0x33)
            chunks = save(c, precopy=True)
            expected = _device_state(c)
    finally:
        assert srv.stop() == 0
    kinds = [header(t[0])[2] for t in chunks]
    return [t[0] for t in chunks], kinds.index(M.FINAL), expected


def _resume_refused(mc, chunk: bytes, size: int | None = None):
    r = write_chunk(mc, [chunk], size)
    assert r.error == errno.EINVAL and not r.payload
    assert state(mc) == S.RESUMING


def test_resume_with_chunk_order_and_sizes(mc, stream):
    chunks, first_final, expected = stream
    before = _device_state(mc)
    set_state(mc, S.RESUMING).check()
    _resume_refused(mc, chunks[1])  # chunk 1 before chunk 0
    _resume_refused(mc, chunks[0], len(chunks[0]) - 1)  # data_size not the chunk's
    _resume_refused(mc, chunks[0], len(chunks[0]) + 1)
    _resume_refused(mc, chunks[0], 0)
    _resume_refused(mc, chunks[0], 1 << 40)
    write_chunk(mc, [chunks[0]]).check()
    _resume_refused(mc, chunks[0])  # twice
    assert field(mc, MigrationInfo.DATA_SIZE) == len(chunks[0])
    # Pre-copy data only: incomplete.
    assert set_state(mc, S.RUNNING).error == errno.EINVAL and state(mc) == S.RESUMING
    for chunk in chunks[1 : first_final + 1]:
        write_chunk(mc, [chunk]).check()
    # Part of the device state: incomplete, and nothing applied.
    assert set_state(mc, S.RUNNING).error == errno.EINVAL and state(mc) == S.RESUMING
    assert _device_state(mc) == before
    for chunk in chunks[first_final + 1 :]:
        write_chunk(mc, [chunk]).check()
    set_state(mc, S.RUNNING).check()
    assert _device_state(mc) == expected


@pytest.mark.parametrize("damage", ["magic", "crc", "length", "kind", "offset", "total", "short"])
def test_damaged_chunk_is_refused_and_not_consumed(mc, stream, damage):
    chunks, _, _ = stream
    chunk = bytearray(chunks[0])
    fields = list(header(chunk))
    if damage == "magic":
        chunk[0] ^= 1
    elif damage == "crc":
        chunk[-1] ^= 0x80
    elif damage == "short":
        chunk = chunk[: M.HEADER.size - 1]
    else:
        i = {"length": 6, "kind": 2, "offset": 3, "total": 4}[damage]
        fields[i] = {"length": fields[6] - 1, "kind": 5, "offset": 8, "total": fields[6] - 1}[
            damage
        ]  # total: the chunk runs past it
        chunk[: M.HEADER.size] = M.HEADER.pack(*fields)
    set_state(mc, S.RESUMING).check()
    _resume_refused(mc, bytes(chunk))
    write_chunk(mc, [chunks[0]]).check()  # the damaged one was not consumed


def test_precopy_after_final_is_refused(mc, stream):
    chunks, first_final, _ = stream
    set_state(mc, S.RESUMING).check()
    for chunk in chunks[: first_final + 1]:
        write_chunk(mc, [chunk]).check()
    bad = bytearray(chunks[0])
    magic, seq, kind, off, total, crc, length = header(bad)
    bad[: M.HEADER.size] = M.HEADER.pack(magic, first_final + 1, kind, off, total, crc, length)
    _resume_refused(mc, bytes(bad))


def test_resume_without_data_runs_on_unchanged(mc):
    before = _device_state(mc)
    set_state(mc, S.RESUMING).check()
    mc.region_write(MIG, M.DATA_OFFSET, b"written but never handed over").check()
    set_state(mc, S.RUNNING).check()
    assert _device_state(mc) == before


def test_state_of_another_device_is_refused(mc, tmp_path):
    dev = tmp_path / "d.toml"
    dev.write_text('[[regions]]\nindex = 1\nkind = "ram"\nsize = 0x8000\n')
    srv = RefServer(tmp_path, f"--device={dev}", name="small")
    try:
        with srv.connect() as c:
            chunks = save(c, precopy=False)
    finally:
        assert srv.stop() == 0
    before = _device_state(mc)
    set_state(mc, S.RESUMING).check()
    for t in chunks:
        write_chunk(mc, t).check()
    assert set_state(mc, S.RUNNING).error == errno.EINVAL
    assert state(mc) == S.RESUMING and _device_state(mc) == before


# ---- in-process: the device description and the chunk format


def test_device_config_migration_kind():
    cfg = parse({"regions": [{"index": 9, "kind": "migration", "size": 0x4000}]})
    d = Device(cfg)
    try:
        assert d.supports_migration and d.regions[9].size == 0x4000
        assert d.regions[9].chunk_max == 0x3000
    finally:
        d.close()
    cfg = parse(
        {
            "device": {"num_regions": 12},
            "regions": [{"index": 9, "kind": "absent"}, {"index": 11, "kind": "migration"}],
        }
    )
    assert cfg.region(11).size == R.MIGRATION_SIZE


@pytest.mark.parametrize(
    "doc, key",
    [
        ({"regions": [{"index": 1, "kind": "migration"}]}, "regions[0].kind: region 1"),
        ({"regions": [{"index": 9, "kind": "migration", "size": 0x1000}]}, "regions[0].size"),
        ({"regions": [{"index": 9, "kind": "migration", "read": False}]}, "regions[0].read"),
        (
            {"device": {"num_regions": 11}, "regions": [{"index": 10, "kind": "migration"}]},
            "regions: at most one",
        ),
    ],
)
def test_device_config_migration_errors(doc, key):
    with pytest.raises(ConfigError) as e:
        parse(doc)
    assert str(e.value).startswith(key)


def test_small_region_chunks_and_roundtrip():
    cfg = parse({"regions": [{"index": 9, "kind": "migration", "size": 0x2000}]})
    src, dst = Device(cfg), Device(cfg)
    try:
        src.regions[R.RAM_REGION].write(0, b"small chunks")
        ms, md = src.regions[9], dst.regions[9]
        ms.write(0, U32.pack(S.STOP_AND_COPY))
        md.write(0, U32.pack(S.RESUMING))
        n = 0
        while U64.unpack(ms.read(8, 8))[0]:
            ms.read(16, 8)
            size = U64.unpack(ms.read(24, 8))[0]
            assert size <= 0x1000
            md.write(M.DATA_OFFSET, ms.read(M.DATA_OFFSET, size))
            md.write(24, U64.pack(size))
            n += 1
        md.write(0, U32.pack(S.RUNNING))
        assert n > 30 and dst.save_state() == src.save_state()
    finally:
        src.close()
        dst.close()
