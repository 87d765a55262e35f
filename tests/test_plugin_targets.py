"""Target management: start failures, crashes, hangs, servers that exit, restart policies."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest
from scriptservers import SCRIPT, load_json, run, script_server

from pytest_vfiouser.verdict import ExitStatus

pytest_plugins = ["pytester"]

RESET_CASES = """
from pytest_vfiouser import case, MUST

@case("dev/reset", MUST)
def test_reset(vfu_client):
    vfu_client.reset()

@case("dev/after", MUST)
def test_after(vfu_client, vfu_target):
    assert vfu_client.device_get_info().ok
"""


def test_start_failure_is_an_error_with_a_helpful_message(pytester: pytest.Pytester):
    pytester.makepyfile(
        RESET_CASES + RESET_CASES.replace("test_", "test_again_").split("MUST", 1)[1]
    )
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, "--fail-start"),
        "--vfu-json=vfu.json",
    )
    # One cause, one verdict: the first case is the ERROR, the others are not run; the run
    # has its own exit status (a MUST failure is 1).
    result.assert_outcomes(errors=1, skipped=3)
    assert result.ret == ExitStatus.TARGET_NOT_STARTED == 6
    # Said once, in the summary: the ERROR, the cases it prevented in one line, and the
    # start failure's message whole (no ERRORS section: --tb=auto).
    assert "= ERRORS =" not in result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*vfio-user conformance*",
            "ERROR dev/reset ?1 of 2?: the target could not start: exited with status 3",
            "NOT-RUN 3 cases: the target could not start (see dev/reset)",
            "note: the target could not start: exited with status 3",
            "    command: *scriptserver.py /*/vfu.sock --fail-start",
            "    last lines of stderr*",
            "      scriptserver: cannot open /dev/vfio-nothing: No such device",
            "    hint: the server exited before listening*",
            "result: FAILED (1 ERROR)",
        ]
    )
    data = load_json(pytester)
    cases = data["by_name"]
    assert cases["test_reset"]["verdict"] == "ERROR"
    for name in ("test_after", "test_again_reset", "test_again_after"):
        assert cases[name]["verdict"] == "NOT-RUN"
        assert cases[name]["message"] == ("not run: the target could not start (see dev/reset)")
    (note,) = data["run"]["target"]["notes"]
    assert note.startswith("the target could not start: exited with status 3\n  command: ")
    assert "cannot open /dev/vfio-nothing" in note


def test_the_start_timeout_is_an_option(pytester: pytest.Pytester):
    """A server that is slow to listen is given --vfu-start-timeout seconds (tried twice),
    not the default 10."""
    pytester.makepyfile(RESET_CASES)
    (pytester.path / "slow").touch()  # the script server then sleeps 60 s before listening
    server = script_server(pytester.path, "--slow-start-if", str(pytester.path / "slow"))
    started = time.monotonic()
    result = run(pytester, "--vfu-server", server, "--vfu-start-timeout", "0.5", "-x", "--tb=short")
    assert time.monotonic() - started < 8, "each start waited longer than 0.5 s"
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*still running, not listening on */vfu.sock after 0.5 s*"])


def test_missing_program_hint(pytester: pytest.Pytester):
    pytester.makepyfile(RESET_CASES)
    result = run(pytester, "--vfu-server", "/nonexistent/vfio-server --socket {socket}")
    result.stdout.fnmatch_lines(
        [
            "note: the target could not start: *No such file or directory*",
            "    hint: the program was not found*",
        ]
    )


def test_crash_mid_test(pytester: pytest.Pytester):
    pytester.makepyfile(RESET_CASES)
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, "--abort-on", "13"),
        "--vfu-json=vfu.json",
        "--tb=short",  # the failure's sections, which --tb=auto leaves to the reports
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        [
            "*- vfio-user server crash -*",
            "server killed by SIGABRT*",
            "  command: *scriptserver.py*",
            "*- vfio-user wire log, connection 0 -*",
            "*>> DEVICE_RESET command id=1*",
        ]
    )
    cases = load_json(pytester)["by_name"]
    assert cases["test_reset"]["verdict"] == "CRASH"
    assert "SIGABRT" in cases["test_reset"]["message"]
    assert cases["test_after"]["verdict"] == "PASS"  # on a fresh server


def test_crash_after_the_test_closed_its_connection(pytester: pytest.Pytester):
    pytester.makepyfile(RESET_CASES)
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, "--abort-at-close"),
        "--vfu-json=vfu.json",
    )
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["CRASH dev/reset: server killed by SIGABRT*"])
    cases = load_json(pytester)["by_name"]
    assert cases["test_reset"]["verdict"] == "CRASH"
    assert cases["test_after"]["verdict"] == "PASS"


def test_hang(pytester: pytest.Pytester):
    pytester.makepyfile(RESET_CASES)
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, "--hang-on", "13"),
        "--vfu-timeout=0.3",
        "--vfu-json=vfu.json",
    )
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(
        ["HANG  dev/reset: no reply in time: timed out after 0.300s waiting for the DEV*"]
    )
    data = load_json(pytester)
    assert data["by_name"]["test_reset"]["verdict"] == "HANG"
    assert data["by_name"]["test_after"]["verdict"] == "PASS"
    assert data["run"]["target"]["starts"] == 2  # the hung server was replaced


@pytest.mark.parametrize("delay", ["0", "0.4"])  # 0.4: later than the 0.1 s first watched
def test_server_that_exits_after_each_client(pytester: pytest.Pytester, delay):
    pytester.makepyfile(RESET_CASES)
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, "--once", "--exit-delay", delay),
        "--vfu-restart=per-session",
        "--vfu-json=vfu.json",
    )
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["note: the server does not persist across clients*"])
    assert load_json(pytester)["run"]["target"]["starts"] >= 3  # discovery, then one per test


def test_sigterm_ignored_is_reported(pytester: pytest.Pytester):
    pytester.makepyfile(
        RESET_CASES.split("@case", 2)[0] + "@case" + RESET_CASES.split("@case", 2)[2]
    )
    result = run(pytester, "--vfu-server", script_server(pytester.path, "--ignore-term"))
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["SIGTERM honoured: NO (1 of 1 stops needed SIGKILL)"])


# A case needing the device, one needing a negotiated client, one on a raw connection.
DEVICE_CLIENT_RAW = """
from pytest_vfiouser import case, MUST

@case("d/device", MUST)
def test_device(vfu_device):
    pass

@case("d/client", MUST)
def test_client(vfu_client):
    pass

@case("d/raw", MUST)
def test_raw(vfu_connect):
    vfu_connect().negotiate()
"""


def test_device_discovery_failure(pytester: pytest.Pytester):
    """A server that refuses DEVICE_GET_INFO: the server's FAIL, said once; the cases that
    need the device or a negotiated connection (whose probe it is) are not run; a case
    on a raw connection runs."""
    pytester.makepyfile(DEVICE_CLIENT_RAW)
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, "--error-on", "4"),
        "--vfu-json=vfu.json",
    )
    result.assert_outcomes(passed=1, errors=1, skipped=1)
    result.stdout.fnmatch_lines(
        [
            "FAIL  d/device: device discovery failed: the server refused DEVICE_GET_INFO*",
            "NOT-RUN 1 case: device discovery failed (see d/device)",
            "note: device discovery failed: the server refused DEVICE_GET_INFO: errno 95*",
        ]
    )
    cases = load_json(pytester)["by_name"]
    assert cases["test_device"]["verdict"] == "FAIL"
    assert cases["test_client"]["verdict"] == "NOT-RUN"
    assert cases["test_client"]["message"] == "not run: device discovery failed (see d/device)"
    assert cases["test_raw"]["verdict"] == "PASS"


def test_a_crash_during_discovery_is_one_crash(pytester: pytest.Pytester):
    pytester.makepyfile(DEVICE_CLIENT_RAW)
    run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, "--abort-on", "4"),
        "--vfu-json=vfu.json",
    )
    data = load_json(pytester)
    cases = data["by_name"]
    assert cases["test_device"]["verdict"] == "CRASH"
    assert cases["test_device"]["message"].startswith(
        "device discovery failed: server killed by SIGABRT: the server closed the connection "
        "instead of answering: connection closed by the peer while waiting for the "
        "DEVICE_GET_INFO reply to msg_id 1\n"
    ), cases["test_device"]["message"]
    assert cases["test_client"]["message"] == "not run: device discovery failed (see d/device)"
    assert cases["test_raw"]["verdict"] == "PASS"
    crashed = [n for n in data["run"]["target"]["notes"] if "crashed during" in n]
    assert len(crashed) == 1 and "server killed by SIGABRT" in crashed[0], crashed


def test_a_version_that_fails_in_vfu_client_is_said_once(pytester: pytest.Pytester):
    """Discovery and the probe of a second client went well, then VERSION replies stop
    decoding: the first case on a negotiated connection is the FAIL, quoting the spec;
    the later ones are not run; a case on a raw connection still judges what it gets."""
    pytester.makepyfile("""
        from pytest_vfiouser import case, MUST

        @case("c/first", MUST)
        def test_first(vfu_client):
            pass

        @case("c/second", MUST)
        def test_second(vfu_client):
            pass

        @case("c/raw", MUST)
        def test_raw(vfu_connect):
            vfu_connect().negotiate()
    """)
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, "--malformed-on", "1", "--malformed-from", "3"),
        "--vfu-restart=per-session",
        "--vfu-json=vfu.json",
    )
    result.assert_outcomes(errors=1, skipped=1, failed=1)
    cases = load_json(pytester)["by_name"]
    first = cases["test_first"]
    assert first["verdict"] == "FAIL"
    assert first["message"].startswith(
        "negotiation failed: the VERSION reply does not decode: malformed VERSION: size: "
        "payload is 3 bytes, expected at least 4 [VERSION reply id=0 size=19]\n"
        'Spec (VFIO_USER_VERSION): "This is the initial message sent by the client'
    ), first["message"]
    assert cases["test_second"]["verdict"] == "NOT-RUN"
    assert cases["test_second"]["message"] == "not run: negotiation failed (see c/first)"
    assert cases["test_raw"]["verdict"] == "FAIL"
    assert "MalformedReply: malformed VERSION" in cases["test_raw"]["message"]


def test_a_discovery_in_a_case_that_finds_the_target_unanswering_judges_that_case(
    pytester: pytest.Pytester,
):
    """Discovery runs in the first case's setup (no case is parametrized over the
    device); the server never answers VERSION, nor does a fresh one: that case is the
    HANG, even on a raw connection, and the next one is not run."""
    pytester.makepyfile("""
        from pytest_vfiouser import case, MUST

        @case("u/first", MUST)
        def test_first(vfu_connect):
            vfu_connect().negotiate()

        @case("u/second", MUST)
        def test_second(vfu_connect):
            vfu_connect().negotiate()
    """)
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, "--never-answer"),
        "--vfu-timeout=0.3",
        "--vfu-json=vfu.json",
    )
    result.assert_outcomes(errors=1, skipped=1)
    cases = load_json(pytester)["by_name"]
    assert cases["test_first"]["verdict"] == "HANG"
    assert cases["test_first"]["message"] == (
        "the target stopped answering: a fresh server did not answer VERSION either (Timeout: "
        "timed out after 0.300s waiting for the VERSION reply to msg_id 0), after device "
        "discovery got no reply in time"
    )
    assert cases["test_second"]["verdict"] == "NOT-RUN"
    assert cases["test_second"]["message"] == (
        "not run: the target stopped answering (see u/first)"
    )


PID_CASES = """
from pytest_vfiouser import case, MUST

@case("{name}/one", MUST)
def test_one(vfu_target, vfu_client):
    with open("pids.txt", "a") as f:
        f.write("{name} %d\\n" % vfu_target.pid)

@case("{name}/two", MUST)
def test_two(vfu_target, vfu_client):
    with open("pids.txt", "a") as f:
        f.write("{name} %d\\n" % vfu_target.pid)
"""


@pytest.mark.parametrize(
    "policy, distinct", [("per-test", 4), ("per-module", 2), ("per-session", 1)]
)
def test_restart_policies(pytester: pytest.Pytester, policy, distinct):
    pytester.makepyfile(test_a=PID_CASES.format(name="a"), test_b=PID_CASES.format(name="b"))
    result = run(pytester, "--vfu-server", script_server(pytester.path), f"--vfu-restart={policy}")
    result.assert_outcomes(passed=4)
    pids = [line.split() for line in (pytester.path / "pids.txt").read_text().splitlines()]
    assert len({pid for _, pid in pids}) == distinct
    if policy == "per-module":
        assert len({pid for name, pid in pids if name == "a"}) == 1


REGION_CASES = """
from pytest_vfiouser import case, MUST

@case("r/each-region", MUST)
def test_each_region(vfu_target, vfu_client, vfu_region_index):
    with open("pids.txt", "a") as f:
        f.write("%d\\n" % vfu_target.pid)
"""


@pytest.mark.parametrize("policy, starts", [("per-module", 2), ("per-session", 1)])
def test_the_server_asked_at_collection_is_the_sessions_under_per_session(
    pytester: pytest.Pytester, policy, starts
):
    """The device is asked for its regions at collection (vfu_region_index), on a server
    of its own; under per-session the cases go on with that one."""
    pytester.makepyfile(test_r=REGION_CASES)
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path),
        f"--vfu-restart={policy}",
        "--vfu-json=vfu.json",
    )
    assert result.parseoutcomes()["passed"] >= 1
    assert load_json(pytester)["run"]["target"]["starts"] == starts
    assert len(set((pytester.path / "pids.txt").read_text().split())) == 1


def test_fresh_env_resources_and_fd_placeholder(pytester: pytest.Pytester):
    pytester.makepyfile("""
        from pytest_vfiouser import case, MUST

        @case("t/fresh", MUST)
        def test_fresh(vfu_target, vfu_connect):
            environ = open("/proc/%d/environ" % vfu_target.pid, "rb").read().split(b"\\0")
            assert b"VFU_TEST=hello world" in environ
            old = vfu_target.pid
            vfu_target.fresh()
            assert vfu_target.pid != old and vfu_target.alive
            c = vfu_connect()
            c.negotiate()
            assert vfu_target.before.fds > 0 and vfu_target.snapshot().rss_bytes > 0
    """)
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, fd=True),
        "--vfu-env",
        "VFU_TEST=hello world",
        "--vfu-json=vfu.json",
    )
    result.assert_outcomes(passed=1)
    resources = load_json(pytester)["by_name"]["test_fresh"]["resources"]
    assert set(resources) == {"vfu_fds_before", "vfu_fds_after", "vfu_rss_before", "vfu_rss_after"}
    assert resources["vfu_fds_after"] == resources["vfu_fds_before"]


def test_external_socket(pytester: pytest.Pytester):
    pytester.makepyfile(
        RESET_CASES.split("@case", 2)[0]
        + "@case"
        + RESET_CASES.split("@case", 2)[2]
        + """
def test_no_fresh(vfu_target):
    vfu_target.fresh()
"""
    )
    script = pytester.path / "server.py"
    script.write_text(SCRIPT)
    path = str(pytester.path / "ext.sock")
    proc = subprocess.Popen([sys.executable, str(script), path])
    try:
        deadline = time.monotonic() + 5
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.01)
        result = run(pytester, "--vfu-socket", path, "-rs")
        result.assert_outcomes(passed=1, skipped=1)
        result.stdout.fnmatch_lines(
            [
                "*needs a server the suite starts (--vfu-server)*",  # -rs, before the summary
                "target: external server at*",
                "*/ext.sock",
            ]
        )
        result.stdout.no_fnmatch_line("SIGTERM*")
        # The external server is still there: nobody stopped it.
        socket.socket(socket.AF_UNIX).connect(path)
    finally:
        proc.kill()
        proc.wait()
