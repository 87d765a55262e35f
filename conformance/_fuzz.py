"""What the fuzz modules share: capabilities, settings and the end-of-run checks
(the ``fuzzer`` fixture is in conftest.py).

The fuzzer (pytest_vfiouser.fuzzing.Fuzzer) keeps one connection across a
case's examples, checks every answer, and turns a failing example into an
assertion message with its wire log and a standalone reproducer under
``--vfu-fuzz-dir`` (default reports/fuzz-repro). ``--vfu-fuzz campaign``
runs many more random examples than the default ``ci`` effort.
"""

from __future__ import annotations

from pytest_vfiouser.fuzz import Fuzzer, fuzz_settings

__all__ = ["case_name", "end_of_run", "fuzz_for", "negotiated_caps"]

PGSIZE = 4096


def negotiated_caps(device, spec: str) -> dict:
    """What the fuzzing connections propose: the client's limits, and migration (pgsize
    4096) when the device has a 0.9.1 migration region, so that migration and dirty page
    requests get past negotiation."""
    caps = {"max_msg_fds": 16, "max_data_xfer_size": 1 << 20}
    if spec == "0.9.1" and device.has("migration_v1"):
        caps["migration"] = {"pgsize": PGSIZE}
    return caps


def case_name(node) -> str:
    mark = node.get_closest_marker("vfu_requirement")  # the case id (pytest_vfiouser.case)
    name = mark.args[0] if mark else node.name
    callspec = getattr(node, "callspec", None)
    return f"{name}-{callspec.id}" if callspec is not None else name


def fuzz_for(request, share: float = 1.0, **overrides):
    """The Hypothesis settings of a fuzz case (--vfu-fuzz: ci or campaign)."""
    options = request.getfixturevalue("vfu_settings")
    return fuzz_settings(options.fuzz, share, options.fuzz_db, **overrides)


def end_of_run(fuzzer: Fuzzer, device, observe) -> int | None:
    """After the examples: a new connection negotiates and gets DEVICE_GET_INFO right;
    observations for connections the server closed, exits, and fds it still holds.
    Returns the fd growth (None when unknown)."""
    growth = fuzzer.finish(device.info)
    if fuzzer.closes:
        observe(
            f"the server closed the connection {fuzzer.closes} times on messages it could "
            f"frame, instead of replying (first after: {fuzzer.first_close or 'a message'})"
        )
    if fuzzer.exits:
        observe(
            f"a fresh server process was started {len(fuzzer.exits)} times while fuzzing "
            f"(first because {fuzzer.exits[0]})"
        )
    if growth:
        observe(
            f"after the fuzzing and with every client gone, the server holds {growth} more "
            "open fds than before it (see fuzz/fds-released)"
        )
    return growth
