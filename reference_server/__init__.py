"""A complete, strict vfio-user server in Python: the suite's reference target.

    python -m reference_server --socket-path=PATH [--device FILE.toml] [-v]

Modules, by responsibility:

  __main__        command line, exit codes, logging setup
  server          listening socket (--socket-path / --fd, a stale socket file
                  taken over), accept loop, SIGTERM
  connection      one client: framing, fds, header checks, replies, and the
                  server's own DMA_READ/DMA_WRITE requests (with queueing of
                  commands that arrive meanwhile, or serving them in
                  twin-socket mode)
  twin            0.9.2: the server's end of the twin socket
  limits          what one client may cost in time and memory (the timeouts,
                  --max-queued-bytes)
  commands        one handler per command; ``dispatch_table(revision)``
  negotiation     VERSION
  device          the device: regions, IRQs, DMA engine, reset, save/load state
  device_config   the TOML device description (format in its docstring)
  registers       ids, default layout and BAR0 register offsets (constants)
  register_block  BAR0's behaviour
  regions         the region backend interface and RAM/pattern/sink backends
  pci_config      PCI config space (region 7)
  irqs            SET_IRQS, eventfds, masking
  dma_map         the per-connection DMA map table
  dma_engine      copies between device RAM and client memory
  dirty           DIRTY_PAGES and DMA_UNMAP's dirty bitmap (dirty page logging)
  migration       the 0.9.1 migration region (region 9): states, data stream
  migration_v2    0.9.2: the v2 state machine and its data stream
  device_feature  0.9.2: DEVICE_FEATURE, DMA logging, MIG_DATA_READ/WRITE
  record          --record: every message of every connection, as JSON lines
  errors          VfioError (-> error reply), ClientGone, Terminate

The code is the correct behaviour only: the named defects that prove the suite
(``--fault NAME``) live in the package beside it, reference_server_faults, which
subclasses what the seams below let it change and is never imported from here.

Extension points: a region is any ``regions.Region`` (``Device.set_region``);
``Device.supports_migration`` (a region with the migration type capability)
turns on the VERSION migration capability; ``DmaMapTable.note_write`` feeds
the dirty page log; ``commands.HANDLERS`` maps commands to handlers and
``protocol.COMMANDS_BY_REVISION`` selects which exist. The kinds a part is
built of are class attributes a subclass replaces: ``Connection.handlers`` and
``Connection.dma_map_table``, ``DmaMapTable.mapping_type``,
``Server.connection_type``, ``Device.irqs_type``,
``dma_engine_type`` and ``migration_region_type``, ``Irqs.index_type``, and
``__main__.Program``'s ``server_type``, ``device_type`` and steps (``parser``,
``check``, ``listen``, ``install_signal_handlers``). Within a part, each
decision that could go another way is its own small method: what a handler
asks of the connection (``decode``, ``check_argsz``, ``must_be_zero``,
``region``, ``check_access``, ...), whether a message gets a reply and how it
is built (``wants_reply``, ``_reply``), ``Device.region_info``,
``DmaMapTable._slot``/``_find``, ``Irqs.irq``/``sub_indexes``,
``MigrationRegion._check_transition``, ``Server.accepting``.
"""
