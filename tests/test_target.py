"""Tests for pytest_vfiouser.target, against real (tiny) server processes."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from pytest_vfiouser.target import (
    ExternalTarget,
    ResourceSnapshot,
    Target,
    TargetStartError,
    is_exiting,
    is_listening,
    wait_listening,
)

# One script, many behaviours: `srv.py MODE [PATH-or-FD]`.
SERVER = textwrap.dedent(
    """
    import os, resource, select, signal, socket, sys, time

    mode, where = sys.argv[1], (sys.argv[2] if len(sys.argv) > 2 else None)

    def listener():
        if mode.startswith("fd"):
            return socket.socket(fileno=int(where))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(where)  # deliberately no unlink: a stale file would break this
        s.listen(4)
        return s

    def serve(s, crash=None):
        n = 0
        while True:
            c, _ = s.accept()
            n += 1
            c.sendall(b"%d\\n" % n)  # the client learns which connection it was
            c.close()
            if crash:
                hard = resource.getrlimit(resource.RLIMIT_CORE)[1]
                resource.setrlimit(resource.RLIMIT_CORE, (hard if mode == "core" else 0, hard))
                os.kill(os.getpid(), crash)

    if mode == "exit3":
        for i in range(30):
            print("line", i, file=sys.stderr)
        print("boom: bad config", file=sys.stderr)
        sys.exit(3)
    if mode == "never":
        print("not going to listen", file=sys.stderr, flush=True)
        time.sleep(60)
    if mode == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if mode == "stdin":
        r, _, _ = select.select([0], [], [], 0.3)  # readable = EOF (or data)
        print("stdin:", "eof" if r else "open", file=sys.stderr, flush=True)
    if mode == "env":
        print("VFU_TEST=" + os.environ.get("VFU_TEST", "<unset>"), file=sys.stderr, flush=True)
    print("hello stdout", flush=True)
    print("hello stderr", file=sys.stderr, flush=True)
    s = listener()
    crash = {"segv": signal.SIGSEGV, "abort": signal.SIGABRT, "core": signal.SIGSEGV}
    serve(s, crash=crash.get(mode))
    """
)


@pytest.fixture
def srv(tmp_path: Path) -> str:
    """Command prefix running the test server script."""
    path = tmp_path / "srv.py"
    path.write_text(SERVER)
    return f"{sys.executable} {path}"


@pytest.fixture
def make(tmp_path: Path):
    """Build Targets under tmp_path and make sure every one is stopped."""
    made: list[Target] = []

    def make(command, **kw) -> Target:
        kw.setdefault("base_dir", tmp_path)
        t = Target(command, **kw)
        made.append(t)
        return t

    yield make
    for t in made:
        t.cleanup()


def client(path: str) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.settimeout(5)
        c.connect(path)
        return c.recv(16)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


# -- starting ----------------------------------------------------------------


@pytest.mark.parametrize("placeholder", ["{socket}", "{fd}"])
def test_start_and_readiness_did_not_connect(make, srv, placeholder):
    mode = "listen" if placeholder == "{socket}" else "fd"
    t = make(f"{srv} {mode} {placeholder}").start()
    assert t.alive and t.poll() is None
    assert is_listening(t.socket_path)
    # The server numbers its connections: ours must be the first it saw.
    assert client(t.socket_path) == b"1\n"
    assert client(t.socket_path) == b"2\n"
    assert t.stop() == -signal.SIGTERM
    assert t.sigterm_honoured is True
    assert not os.path.exists(t.socket_path)


def test_list_template_and_shell(make, srv):
    py, script = srv.split(" ", 1)
    t = make([py, script, "listen", "{socket}"]).start()
    assert client(t.socket_path) == b"1\n"
    assert t.command.endswith(f"listen {t.socket_path}")
    t2 = make(f"exec {srv} listen {{socket}}", shell=True).start()
    assert client(t2.socket_path) == b"1\n"
    assert t2.stop() == -signal.SIGTERM


def test_exit_before_listening(make, srv):
    t = make(f"{srv} exit3 {{socket}}")
    with pytest.raises(TargetStartError) as ei:
        t.start()
    msg = str(ei.value)
    assert "exited with status 3" in msg
    assert t.command in msg
    assert "boom: bad config" in msg and "line 11" in msg
    assert "line 10" not in msg  # only the last 20 lines of stderr
    assert ei.value.returncode == 3
    assert t.poll() == 3


def test_fd_child_exiting_at_once(make):
    # "At once": within the start's settle time (_FD_SETTLE) even on a loaded machine, which
    # a Python interpreter's start-up is not.
    t = make("/bin/sh -c 'exit 4' {fd}")
    with pytest.raises(TargetStartError, match="exited with status 4"):
        t.start()


def test_never_listens_times_out_and_is_killed(make, srv):
    t = make(f"{srv} never {{socket}}", startup_timeout=0.3)
    start = time.monotonic()
    with pytest.raises(TargetStartError) as ei:
        t.start()
    assert time.monotonic() - start < 3
    msg = str(ei.value)
    assert "still running, not listening" in msg and "0.3 s" in msg
    assert "not going to listen" in msg
    assert t.poll() is not None  # killed and reaped
    with pytest.raises(ProcessLookupError):
        os.kill(t.pid, 0)


def test_cannot_execute(make):
    t = make(["/nonexistent/server", "{socket}"])
    with pytest.raises(TargetStartError, match="cannot start target.*No such file"):
        t.start()


def test_template_without_placeholder():
    with pytest.raises(ValueError, match=r"neither a \{socket\} nor an \{fd\} placeholder"):
        Target("my-server --listen /tmp/x.sock")


def test_stale_socket_is_unlinked(make, srv):
    t = make(f"{srv} listen {{socket}}")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(t.socket_path)
    stale.close()  # leaves the file behind; bind() without unlink would fail
    t.start()
    assert client(t.socket_path) == b"1\n"


def test_old_listener_on_same_path_is_not_mistaken_for_the_server(make, srv):
    t = make(f"{srv} never {{socket}}", startup_timeout=0.2)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as old:
        old.bind(t.socket_path)
        old.listen(1)
        with pytest.raises(TargetStartError, match="not listening"):
            t.start()


def test_stdin_kept_open_and_logs_captured(make, srv):
    t = make(f"{srv} stdin {{socket}}").start()
    assert "stdin: open" in t.stderr_tail()
    assert t.stdout_path.read_text() == "hello stdout\n"
    assert t.stderr_tail(lines=1) == "hello stderr"
    assert t.stdout_path.parent == t.stderr_path.parent == Path(t.socket_path).parent
    t.stop()
    assert "hello stderr" in t.stderr_tail()  # logs outlive the process


def test_env_passed(make, srv):
    t = make(f"{srv} env {{socket}}", env={"VFU_TEST": "xyz"}).start()
    assert "VFU_TEST=xyz" in t.stderr_tail()


def test_socket_paths_unique_and_short(make, tmp_path):
    a = make("x {socket}")
    b = make("x {socket}")
    assert a.socket_path != b.socket_path
    assert not a.alive and a.poll() is None and a.snapshot().fds is None  # not started
    assert str(os.getpid()) in a.socket_path
    long = make("x {socket}", base_dir=tmp_path / ("d" * 120))
    assert len(os.fsencode(long.socket_path)) < 108


# -- watching ----------------------------------------------------------------


@pytest.mark.parametrize(("mode", "name"), [("segv", "SIGSEGV"), ("abort", "SIGABRT")])
def test_death_by_signal_after_client(make, srv, mode, name):
    t = make(f"{srv} {mode} {{socket}}").start()
    assert t.termsig is None and t.core_dumped is None
    assert client(t.socket_path) == b"1\n"
    assert t.wait(5) == -getattr(signal, name)
    assert t.signal_name == name
    assert t.exit_description().startswith(f"killed by {name}")
    assert isinstance(t.core_dumped, bool)  # depends on the kernel's core_pattern
    assert name in t.describe()
    t.stop()
    assert t.sigterm_honoured is None  # it was already dead


def test_core_dump_is_noted(make, srv, tmp_path):
    pattern = Path("/proc/sys/kernel/core_pattern").read_text().strip()
    if resource.getrlimit(resource.RLIMIT_CORE)[1] == 0 or pattern.startswith("|"):
        pytest.skip(f"core dumps not written to files here (core_pattern {pattern!r})")
    t = make(f"{srv} core {{socket}}", cwd=tmp_path).start()
    client(t.socket_path)
    assert t.wait(10) == -signal.SIGSEGV
    assert t.core_dumped is True
    assert "core dumped" in t.core_note()
    assert t.exit_description() == "killed by SIGSEGV (core dumped)"


def test_resource_readings(make, srv):
    t = make(f"{srv} listen {{socket}}").start()
    assert t.fd_count() >= 4  # stdin, stdout, stderr, listener
    assert t.rss_bytes() > 1_000_000
    snap = t.snapshot()
    assert isinstance(snap, ResourceSnapshot) and snap.fds and snap.rss_bytes
    t.stop()
    assert t.fd_count() is None and t.rss_bytes() is None
    assert t.snapshot().fds is None


# -- stopping ----------------------------------------------------------------


def test_sigterm_ignored_falls_back_to_sigkill(make, srv):
    t = make(f"{srv} ignore-term {{socket}}").start()
    start = time.monotonic()
    assert t.stop(grace=0.3) == -signal.SIGKILL
    assert 0.3 <= time.monotonic() - start < 3
    assert t.sigterm_honoured is False
    assert t.stop() == -signal.SIGKILL  # idempotent


def test_context_manager(tmp_path, srv):
    with Target(f"{srv} listen {{socket}}", base_dir=tmp_path) as t:
        assert client(t.socket_path) == b"1\n"
    assert t.poll() == -signal.SIGTERM and t.sigterm_honoured
    t.cleanup()
    assert not t.run_dir.exists()


def test_no_fd_leaks(tmp_path, srv):
    before = open_fds()
    for template in (f"{srv} listen {{socket}}", f"{srv} fd {{fd}}", f"{srv} exit3 {{socket}}"):
        t = Target(template, base_dir=tmp_path)
        try:
            t.start()
            client(t.socket_path)
        except TargetStartError:
            pass
        t.cleanup()
    assert open_fds() == before


# -- external targets and standalone helpers ---------------------------------


def test_external_target(tmp_path):
    path = str(tmp_path / "ext.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        with pytest.raises(TargetStartError, match="no server listening"):
            ExternalTarget(path).start()  # bound, not yet listening
        s.listen(1)
        t = ExternalTarget(path).start(timeout=1)
        assert t.poll() is None and t.alive and t.command is None
        assert t.snapshot().fds is None  # no pid, no readings
        assert t.stop() is None and t.poll() is None
        assert path in t.describe()
        mine = ExternalTarget(path, pid=os.getpid(), command="in-process")
        assert mine.fd_count() > 0 and mine.rss_bytes() > 0
        assert "in-process" in mine.describe()


def test_wait_listening_standalone(tmp_path):
    path = str(tmp_path / "w.sock")
    start = time.monotonic()
    assert wait_listening(path, 0.1) is False
    assert wait_listening(path, 5, alive=lambda: False) is False  # gives up at once
    assert time.monotonic() - start < 1
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(path)
        assert not is_listening(path)
        s.listen(1)
        assert is_listening(path)
        assert wait_listening(path, 1) is True


def test_is_exiting_tells_a_dying_process(tmp_path):
    """A live process is not exiting; a zombie (dead, not yet reaped) is."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not is_exiting(proc.pid)
    finally:
        proc.kill()
    deadline = time.monotonic() + 5
    while not is_exiting(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert is_exiting(proc.pid)  # a zombie until reaped
    proc.wait()
    assert is_exiting(proc.pid)  # gone


def test_cpu_busy_tells_a_spinning_process_from_a_sleeping_one():
    """What judges a server left spinning after its client: the share of a window the
    process is runnable (running, waiting for a CPU, or throttled in state R)."""
    from pytest_vfiouser.target._process import cpu_busy  # noqa: PLC0415

    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    rest = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        time.sleep(0.3)  # both started
        assert cpu_busy(spin.pid, 0.2) >= 0.9
        assert cpu_busy(rest.pid, 0.2) < 0.1
    finally:
        for p in (spin, rest):
            p.kill()
            p.wait()
    assert cpu_busy(spin.pid, 0.05) is None  # gone
