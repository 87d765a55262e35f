"""Servers that fork: one that daemonizes (double fork, setsid, the started process exits 0
once the daemon listens) and one that forks a child that calls setsid and stays. The suite
follows the daemon (our child: the suite is a subreaper while a server runs), judges it
like any server (a crash is a CRASH), stops every process either one started, reaps their
zombies, and says what the server does.
"""

from __future__ import annotations

import fnmatch
import os
import re
import time
import uuid

import pytest
from scriptservers import load_json, run, script_server

from pytest_vfiouser.target import Target, listening_inodes

pytest_plugins = ["pytester"]

CASES = """
import os
import pytest
from pytest_vfiouser import case, MUST

@pytest.mark.parametrize("n", range(4))
@case("dev/info", MUST)
def test_info(vfu_target, vfu_client, n):
    assert vfu_client.device_get_info().ok
    with open("/proc/%d/stat" % vfu_target.pid) as f:
        ppid = int(f.read().rsplit(")", 1)[1].split()[1])
    with open("servers.txt", "a") as f:
        f.write("%d %d\\n" % (vfu_target.pid, ppid))
"""


def tagged(tag: str) -> list[int]:
    """Processes whose command line holds ``tag`` (every fork of the server keeps it)."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if tag.encode() in f.read():
                    found.append(int(name))
        except (OSError, ValueError):
            pass
    return found


def zombie_children() -> set[int]:
    out = set()
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/children") as f:
            for pid in f.read().split():
                try:
                    with open(f"/proc/{pid}/stat") as s:
                        if s.read().rsplit(")", 1)[1].split()[0] == "Z":
                            out.add(int(pid))
                except OSError:
                    pass
    return out


@pytest.mark.parametrize(
    "flag, note",
    [
        (
            "--daemonize",
            "note: the server daemonizes: the process the suite starts exits (status 0) and "
            "leaves another one listening (pid *); the suite follows that process and stops it",
        ),
        (
            "--fork-setsid",
            "note: the server starts processes outside its session (setsid): pid * at one "
            "stop; the suite stops them with the server",
        ),
    ],
)
def test_no_orphan_and_said(pytester: pytest.Pytester, flag, note):
    tag = f"vfu-test-{uuid.uuid4().hex}"
    pytester.makepyfile(CASES)
    zombies = zombie_children()
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, flag, "--tag", tag),
        "--vfu-restart=per-test",
        "--vfu-json=vfu.json",
    )
    result.assert_outcomes(passed=4)
    # The summary wraps at 80 columns: its text, lines joined
    said = re.sub(r"\s+", " ", "\n".join(result.stdout.lines))
    assert fnmatch.fnmatch(said, f"*{note}*"), said[-1500:]
    left = tagged(tag)
    for pid in left:
        os.kill(pid, 9)
    assert not left, f"{flag}: processes left: {left}"
    servers = [line.split() for line in (pytester.path / "servers.txt").read_text().splitlines()]
    # Only the servers' zombies count: a child of an earlier test may end meanwhile.
    unreaped = (zombie_children() - zombies) & {int(pid) for pid, _ in servers}
    assert not unreaped, f"zombies of the server's processes were not reaped: {unreaped}"
    assert len({pid for pid, _ in servers}) == 4
    if flag == "--daemonize":  # the process the tests talk to is the daemon, our child now
        assert {int(ppid) for _, ppid in servers} == {os.getpid()}
    data = load_json(pytester)
    assert any(n.startswith(note.split(":")[1].strip()) for n in data["run"]["target"]["notes"])


def test_a_daemon_that_crashes_is_a_crash(pytester: pytest.Pytester):
    pytester.makepyfile("""
        from pytest_vfiouser import case, MUST

        @case("dev/reset", MUST)
        def test_reset(vfu_client):
            vfu_client.reset()
    """)
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, "--daemonize", "--abort-on", "13"),
        "--vfu-json=vfu.json",
    )
    result.assert_outcomes(failed=1)
    case = load_json(pytester)["by_name"]["test_reset"]
    assert case["verdict"] == "CRASH" and "SIGABRT" in case["message"]


@pytest.mark.parametrize("late", [False, True], ids=["exits", "exits-late"])
@pytest.mark.parametrize("fd", [False, True], ids=["socket", "fd"])
def test_target_follows_a_daemon(tmp_path, fd, late):
    """Followed whether the started process exits before the suite sees the socket listen
    or after (``late``: then the suite follows the daemon when it sees the exit)."""
    tag = f"vfu-test-{uuid.uuid4().hex}"
    more = ["--exit-late", "0.5"] if late else []
    target = Target(
        script_server(tmp_path, "--daemonize", *more, "--tag", tag, fd=fd), base_dir=tmp_path
    )
    try:
        target.start()
        if late:
            started = target.pid
            assert target.alive and not target.daemonized
            time.sleep(1.0)
            assert target.pid != started
        # On a loaded machine the daemon may listen before its parent has exited: then
        # the suite follows it when it sees the exit, as in the late case.
        deadline = time.monotonic() + 5.0
        while not target.daemonized and target.pid and time.monotonic() < deadline:
            time.sleep(0.05)
        assert target.daemonized and target.started_status == 0
        assert target.alive and target.pid in tagged(tag)
        assert listening_inodes(target.socket_path)
    finally:
        target.cleanup()
    assert not tagged(tag)
    assert target.exit_description() in ("killed by SIGTERM", "exited with status 0")
    assert not target.run_dir.exists()
