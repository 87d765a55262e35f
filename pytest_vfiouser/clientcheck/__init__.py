"""Checking clients: run one against the reference server and read its session.

* ``_run``: ``run_client(command, workdir, spec=..., seconds=...)`` starts the
  reference server recording every message (``--record``) and the client command
  with its socket, until the client exits or its time is up: a ``ClientRun``.
* ``_transcript``: ``read_transcript(record)`` is the record as ``Session``s of
  ``Message``s (and ``Interrupt``s raised), which the client cases (conformance_client/)
  judge.
* ``_scenarios``: ``SCENARIOS``, runs against a server that does what the spec allows
  and a careless client does not expect (reference_server/conduct.py), or misbehaves
  (faults of the overlay), for what the spec asks of a client then.

May import: ``protocol`` and ``target``.
"""

from ._run import ClientRun, ClientRunError, client_argv, run_client
from ._scenarios import SCENARIOS, Scenario
from ._transcript import (
    C2S,
    S2C,
    Interrupt,
    Message,
    Session,
    Transcript,
    TranscriptError,
    read_transcript,
)

__all__ = [
    "C2S",
    "S2C",
    "ClientRun",
    "ClientRunError",
    "Interrupt",
    "Message",
    "SCENARIOS",
    "Scenario",
    "Session",
    "Transcript",
    "TranscriptError",
    "client_argv",
    "read_transcript",
    "run_client",
]
