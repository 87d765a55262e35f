"""The reference server with named, realistic defects: faults as an overlay.

    python -m reference_server_faults --socket-path=PATH --fault NAME [--fault NAME ...]
    python -m reference_server_faults --list-faults

The faults exist to prove the conformance suite: every fault must be detected
by some case, and every case must detect some fault (tests/test_faults.py,
tests/kill_matrix.py). The catalogue (``CATALOGUE``: name, description, the
sections and verdicts that must show it, the run's scope and socket option)
is in _catalogue.py.

Design: reference_server holds the correct behaviour only, with no fault
switch in it, so that reading it reads the spec. The faulty behaviour lives
here, as subclasses of the server's parts, installed through the kinds a
part is built of (class attributes: ``Connection.handlers`` and
``dma_map_table``, ``Server.connection_type``, ``Device.irqs_type``, ...;
``Program`` of reference_server.__main__ for the command line). A faulty
method overrides one of the server's small methods (seams such as
``Connection.check_argsz`` or ``Device.region_info``): it calls the correct one
and alters its result, or replaces that one small decision; a faulty handler
wraps the correct handler and alters its reply. Each looks its faults up in
``FAULTS``; with none enabled each takes the correct path. Subclasses rather
than patches: the correct server never learns that an overlay exists
(reference_server imports nothing from here), and no faulty method repeats the
correct code around its change.

Modules, by area:

  _catalogue   Fault, CATALOGUE, catalogue_text, enable, FAULTS, crash
  _framing     FaultyConnection: header, framing, replies, disconnect
  _commands    the command handlers (message sizes, info, io fds, region access)
  _negotiation VERSION
  _dirty       DIRTY_PAGES and DMA_UNMAP's dirty bitmap
  _device      DMA map table, DMA engine, interrupts, migration region, device
  _device_feature  0.9.2: DEVICE_FEATURE (migration features, DMA logging),
               MIG_DATA_READ/WRITE, REGION_WRITE_MULTI
  _migration_v2    0.9.2: the v2 migration state machine and its data stream
  _twin        0.9.2: twin-socket mode (the fd passed, where requests travel,
               whether the main socket is served meanwhile)
  _process     FaultyProgram and FaultyServer: options, socket, signals, daemonizing

The daemonizing fault's detached copy also exits when its stdin reaches EOF
(the suite keeps a pipe there and closes it when it stops the server) or
after MAX_DAEMON_SECONDS, so a test run cannot leave it behind.
"""

from ._catalogue import (
    CATALOGUE,
    CRASH,
    FAIL,
    FAULTS,
    HANG,
    INFORMATIONAL,
    NON_STRICT,
    Fault,
    catalogue_text,
    crash,
    enable,
)
from ._process import MAX_DAEMON_SECONDS, FaultyProgram, FaultyServer, main

__all__ = [
    "CATALOGUE",
    "CRASH",
    "FAIL",
    "FAULTS",
    "HANG",
    "INFORMATIONAL",
    "MAX_DAEMON_SECONDS",
    "NON_STRICT",
    "Fault",
    "FaultyProgram",
    "FaultyServer",
    "catalogue_text",
    "crash",
    "enable",
    "main",
]
