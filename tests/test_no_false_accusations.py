"""Behaviour the spec allows, met in real servers (libvfio-user's samples), that the
suite once judged a failure. Each test runs the suite against a script server that
behaves that way and expects the verdict the spec supports."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from scriptservers import cli, script_server


def verdicts(tmp_path: Path, *args: str) -> dict[str, str]:
    proc = cli(tmp_path, *args, "--vfu-json", "out.json")
    report = tmp_path / "out.json"
    assert report.exists(), proc.stdout + proc.stderr
    return {c["id"]: c["verdict"] for c in json.loads(report.read_text())["cases"]}


def test_a_server_that_closes_and_exits_is_not_asked_for_another_client(tmp_path):
    """libvfio-user closes the connection on a header it cannot frame, and its samples
    exit once their client is gone ("the server can automatically exit"). The refusal
    is judged; the exit is not a failure to accept a new connection."""
    got = verdicts(
        tmp_path,
        "--vfu-server",
        script_server(tmp_path, "--close-on-bad-size", "--once"),
        "--vfu-section",
        "header",
        "-k",
        "msg_size_below_header or msg_size_huge",
    )
    assert got and set(got.values()) == {"PASS"}, got


def test_an_accepted_set_irqs_may_keep_its_eventfds(tmp_path):
    """libvfio-user grants SET_IRQS whose argsz is above its payload and keeps the eventfd
    it assigned: refused-fds-closed judges only the fds a request could not use (whether
    it should have been granted is refuse-argsz-mismatch's to say)."""
    got = verdicts(
        tmp_path,
        "--vfu-server",
        script_server(tmp_path, "--accept-set-irqs"),
        "--vfu-section",
        "set_irqs",
        "-k",
        "refused_fds_closed and above",
    )
    assert got == {"set_irqs/refused-fds-closed[irq0-argsz-above-payload]": "PASS"}, got


def test_a_region_that_refuses_the_width_tried_is_not_judged_on_it(tmp_path):
    """The script server refuses every REGION_READ (registers that take widths the suite
    does not guess): read-reply cannot judge, and says so; it does not fail the server
    for a width the spec does not require."""
    got = verdicts(
        tmp_path,
        "--vfu-server",
        script_server(tmp_path),
        "--vfu-section",
        "region_rw",
        "-k",
        "read_reply or out_of_bounds",
    )
    assert got and set(got.values()) == {"UNIMPLEMENTED"}, got


def test_a_reset_observed_by_unmapping_not_by_remapping(tmp_path):
    """A server that takes an identical DMA_MAP for a replacement (as libvfio-user does)
    kept the mapping across the reset: exactly unmapping it shows that."""
    server = (
        f"{sys.executable} -m reference_server_faults --socket-path={{socket}} "
        "--fault dma-table-keyed-by-address"
    )
    got = verdicts(tmp_path, "--vfu-server", server, "--vfu-section", "reset", "-k", "map_survives")
    assert got == {"reset/dma-map-survives": "PASS"}, got


def test_a_program_without_socket_path_fails_that_case_only(tmp_path):
    """The script server takes its socket path positionally, as libvfio-user's samples do:
    backend/socket-path-option fails, the other conventions are judged on the command line
    as given, and --fd taken for a path is seen, with no file left in the user's folder."""
    got = verdicts(tmp_path, "--vfu-server", script_server(tmp_path), "--vfu-section", "backend")
    assert got["backend/socket-path-option"] == "FAIL", got
    for case in ("backend/sigterm[idle]", "backend/no-daemonize", "backend/std-fds-redirected"):
        assert got[case] == "PASS", (case, got)
    assert got["backend/fd-option"] == "INFORMATIONAL", got
    stray = [p.name for p in tmp_path.iterdir() if p.name.startswith("--")]
    assert not stray, stray


def test_a_message_cut_into_writes_reaches_a_slow_reader_cut(tmp_path):
    """A server that reads a header and a body with one recv() each, and slower than the
    suite writes: each piece of header/split-message must reach it apart (the suite waits
    until the server has read one before it writes the next), so the finding does not
    depend on the scheduler. Sent back to back, the pieces would meet in the server's
    socket and the case would pass."""
    got = verdicts(
        tmp_path,
        "--vfu-server",
        script_server(tmp_path, "--recv-once", "0.05"),
        "--vfu-section",
        "header",
        "-k",
        "split_message and version",
    )
    assert got == {
        "header/split-message[version-header-then-body]": "PASS",
        "header/split-message[version-inside-header]": "NON-STRICT",
        "header/split-message[version-byte-by-byte]": "NON-STRICT",
    }, got


def test_a_server_left_spinning_after_a_client_is_non_strict_not_a_hang(tmp_path):
    """libvfio-user's shadow_ioeventfd_server exits after its client, except after one that
    left in the middle of a message: then it spins at full CPU and serves nobody. The spec
    does not promise another client (as with a server that serves one client), so no
    HANG; spinning with no client is a SHOULD not met (Security Considerations). The next
    case gets a fresh server, not the spinning one."""
    got = verdicts(
        tmp_path,
        "--vfu-server",
        script_server(tmp_path, "--once", "--spin-mid-message"),
        "--vfu-section",
        "disconnect",
        "--vfu-section",
        "header",
        "-k",
        "abrupt_mid_message or msg_size_truncated or reply_echoes or new_client",
    )
    spun = {k: v for k, v in got.items() if v not in ("PASS", "INFORMATIONAL", "UNIMPLEMENTED")}
    assert spun == {
        "disconnect/abrupt-mid-message[partial-header]": "NON-STRICT",
        "disconnect/abrupt-mid-message[header-without-payload]": "NON-STRICT",
        "disconnect/abrupt-mid-message[partial-payload]": "NON-STRICT",
        "disconnect/abrupt-mid-message[partial-payload-with-fd]": "NON-STRICT",
        "header/msg-size-truncated[header-only]": "NON-STRICT",
        "header/msg-size-truncated[part-of-body]": "NON-STRICT",
        "header/msg-size-truncated[one-byte-short]": "NON-STRICT",
    }, got
    assert got["disconnect/new-client-accepted"] == "INFORMATIONAL"  # it exits: allowed
    report = json.loads((tmp_path / "out.json").read_text())
    message = next(c["message"] for c in report["cases"] if c["verdict"] == "NON-STRICT")
    assert "of a CPU with no client" in message and "denial of service" in message


def test_an_unmap_that_matches_nothing_breaks_a_should_a_map_over_a_map_a_must(tmp_path):
    """libvfio-user's null sample grants every DMA_UNMAP. "The address and size of the DMA
    region being unmapped must match exactly a previous mapping" binds the request: the
    spec does not say how a server answers one that breaks it, so granting it breaks only
    the SHOULD of validating input (NON-STRICT; it was FAIL). Granting a map over a
    mapping does break a MUST ("must be failed by the server with EEXIST"): still FAIL."""
    got = verdicts(
        tmp_path,
        "--vfu-server",
        script_server(tmp_path, "--grant-dma"),
        "--vfu-section",
        "dma",
        "-k",
        "unmap_must_match or unmap_twice or unmap_spanning or overlap_is_eexist",
    )
    assert got and {v for k, v in got.items() if "/unmap-" in k} == {"NON-STRICT"}, got
    assert {v for k, v in got.items() if "map-overlap-eexist" in k} == {"FAIL"}, got


def test_undefined_unmap_flags_are_not_judged_at_0_9_2(tmp_path):
    """0.9.2: DMA_UNMAP's "flags is unused in this version" (errata 7): a server that
    ignores them breaks nothing, so the undefined-flag refusals are 0.9.1's only."""
    listed = {}
    for spec in ("0.9.1", "0.9.2"):
        proc = cli(
            tmp_path,
            "--vfu-server",
            script_server(tmp_path),
            "--vfu-spec",
            spec,
            "--collect-only",
            "-q",
            "-k",
            "unmap_invalid_refused",
        )
        listed[spec] = {line.rsplit("[", 1)[-1] for line in proc.stdout.split() if "[" in line}
    assert {"flag-bit-1]", "flag-bit-31]", "payload-32]"} <= listed["0.9.1"], listed
    assert "payload-32]" in listed["0.9.2"] and not any("flag" in p for p in listed["0.9.2"])
