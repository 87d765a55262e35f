"""Hypothesis strategies for every vfio-user payload, and for hostile bytes.

Layers, from the bottom:

* integers weighted to the edges (``_integers``: ``u8s()`` .. ``u64s()``,
  ``s32s()``), bytes and tuples of bounded size (``_collections``);
* JSON values and the VERSION capabilities object (``_json``);
* one strategy per payload type, named for what it generates
  (``dma_maps()``, ``region_infos()``, ...: ``_dma``, ``_regions``, ``_irqs``,
  ``_migration``), collected in ``PAYLOAD_STRATEGIES`` (``_payloads``);
  ``message_payloads(command, reply)`` and ``messages()`` build on them
  (``_messages``);
* ``mutated(...)``: valid encodings damaged the ways a broken or hostile
  peer damages them (``_mutations``);
* for fuzzing a server (the last part): what goes on the wire
  (``_wire``: ``WireMessage``, ``RawBytes``, ``Transmission``), field values at
  the edges of the device under test (``_device_values``), valid requests of
  every command (``_requests``: ``requests(device)``, ``known_good_requests``),
  structure-aware mutations of them and requests carrying fds
  (``_request_mutations``: ``mutated_requests``, ``REQUEST_MUTATIONS``,
  ``requests_with_fds``), ``garbage()`` and hostile ``version_proposals()``
  (``_hostile``), and ``transmissions(...)``: several back to back, cut into
  writes (``_transmissions``).

Every payload strategy generates objects that encode, and that decode back
to themselves: whatever the encoding states twice (``count`` and the data
length, ``num_ranges`` and the ranges, ...) agrees. Everything the encoding
does not cross-check is drawn from its whole range, so the objects are not
necessarily meaningful requests; a fuzzer that wants meaningful ones
narrows the fields it cares about with the keyword arguments or ``.map``.

``CODEC_SETTINGS`` (``_settings``): the settings of the codec's property tests.

May import: ``protocol`` (and Hypothesis).
"""

from ._collections import MAX_DATA, MAX_ENTRIES, data_bytes
from ._device_values import (
    PAGE,
    access_counts,
    argsz_values,
    device_max_data_xfer_size,
    device_max_msg_fds,
    dma_addresses,
    dma_sizes,
    irq_indexes,
    region_indexes,
    region_offsets,
)
from ._dma import (
    BITMAP_KINDS,
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
from ._hostile import garbage, version_proposals
from ._integers import (
    enum_or_any,
    flags_of,
    ints_between,
    powers_of_two,
    s32s,
    u8s,
    u16s,
    u32s,
    u64s,
    uints,
)
from ._irqs import irq_infos, irq_set_flags, set_irqs
from ._json import (
    KNOWN_CAPABILITIES,
    capabilities,
    json_scalars,
    json_values,
    migration_capabilities,
    twin_socket_capabilities,
    version_json,
)
from ._messages import encodings, headers, message_payloads, messages
from ._migration import (
    device_features,
    dma_logging_controls,
    dma_logging_ranges,
    dma_logging_reports,
    feature_data,
    feature_mig_device_states,
    feature_migrations,
    mig_data_read_replies,
    mig_data_reads,
    mig_data_writes,
    migration_infos,
)
from ._mutations import HUGE_WORDS, hostile, mutated
from ._payloads import PAYLOAD_STRATEGIES, versions
from ._regions import (
    device_infos,
    io_fd_sub_regions,
    region_accesses,
    region_caps,
    region_infos,
    region_io_fds_replies,
    region_io_fds_requests,
    region_read_replies,
    region_reads,
    region_type_caps,
    region_write_multi_replies,
    region_write_multis,
    region_write_replies,
    region_writes,
    single_writes,
    sparse_mmap_caps,
    unknown_caps,
)
from ._request_mutations import (
    DATA_REPLIES,
    DEFINED_REQUEST_FLAGS,
    REQUEST_FIELDS,
    REQUEST_MUTATIONS,
    mutate_request,
    mutated_requests,
    requests_with_fds,
)
from ._requests import MAX_FUZZ_FDS, known_good_requests, request_payloads, requests
from ._settings import CODEC_SETTINGS
from ._transmissions import transmissions
from ._wire import RawBytes, Transmission, WireMessage

__all__ = [
    "BITMAP_KINDS",
    "CODEC_SETTINGS",
    "DATA_REPLIES",
    "DEFINED_REQUEST_FLAGS",
    "HUGE_WORDS",
    "KNOWN_CAPABILITIES",
    "MAX_DATA",
    "MAX_ENTRIES",
    "MAX_FUZZ_FDS",
    "PAGE",
    "PAYLOAD_STRATEGIES",
    "REQUEST_FIELDS",
    "REQUEST_MUTATIONS",
    "RawBytes",
    "Transmission",
    "WireMessage",
    "access_counts",
    "argsz_values",
    "bitmap_ranges",
    "capabilities",
    "data_bytes",
    "device_features",
    "device_infos",
    "device_max_data_xfer_size",
    "device_max_msg_fds",
    "dirty_pages",
    "dma_addresses",
    "dma_logging_controls",
    "dma_logging_ranges",
    "dma_logging_reports",
    "dma_maps",
    "dma_read_replies",
    "dma_reads",
    "dma_sizes",
    "dma_unmaps",
    "dma_write_replies",
    "dma_writes",
    "encodings",
    "enum_or_any",
    "feature_data",
    "feature_mig_device_states",
    "feature_migrations",
    "flags_of",
    "garbage",
    "headers",
    "hostile",
    "ints_between",
    "io_fd_sub_regions",
    "irq_indexes",
    "irq_infos",
    "irq_set_flags",
    "json_scalars",
    "json_values",
    "known_good_requests",
    "message_payloads",
    "messages",
    "mig_data_read_replies",
    "mig_data_reads",
    "mig_data_writes",
    "migration_capabilities",
    "migration_infos",
    "mutate_request",
    "mutated",
    "mutated_requests",
    "powers_of_two",
    "region_accesses",
    "region_caps",
    "region_indexes",
    "region_infos",
    "region_io_fds_replies",
    "region_io_fds_requests",
    "region_offsets",
    "region_read_replies",
    "region_reads",
    "region_type_caps",
    "region_write_multi_replies",
    "region_write_multis",
    "region_write_replies",
    "region_writes",
    "request_payloads",
    "requests",
    "requests_with_fds",
    "s32s",
    "set_irqs",
    "single_writes",
    "sparse_mmap_caps",
    "transmissions",
    "twin_socket_capabilities",
    "u16s",
    "u32s",
    "u64s",
    "u8s",
    "uints",
    "unknown_caps",
    "version_json",
    "version_proposals",
    "versions",
    "vfio_bitmaps",
]
