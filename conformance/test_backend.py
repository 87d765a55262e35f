"""Backend Program Conventions: how the server program is started and stopped.

These cases start their own server processes from the target's command line
(``--vfu-server``, or the embedded reference server's). The option cases replace
the argument that carries ``{socket}``/``{fd}`` by the option under test
(``--socket-path={socket}`` or ``--fd={fd}``), keeping the rest; the others
(SIGTERM, no daemonizing, redirected fds) run the command line as given, so that
a program without ``--socket-path`` fails that one case only. Each program runs
in an empty directory of its own: what it creates there (a socket file named
after an option it took for a path) is seen, and left in no user's folder. A
target given as a socket (``--vfu-socket``) cannot be started: the cases are
UNIMPLEMENTED then.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import time

import pytest

from pytest_vfiouser import MAY, MUST, SHOULD, case, watch_client
from pytest_vfiouser.client import Client, ClientError
from pytest_vfiouser.target import Target, TargetStartError, listening_inodes

SOCKET_OPTION = "--socket-path={socket}"
FD_OPTION = "--fd={fd}"
SIGTERM_GRACE = 5.0  # seconds a server gets to exit after SIGTERM
_PLACEHOLDER = re.compile(r"(\{socket\}|\{fd\})")


def _with_option(args: list[str], option: str) -> list[str]:
    """``args`` with the socket argument (the one holding {socket} or {fd}, and the option
    word before it when the placeholder is a word of its own) replaced by ``option``."""
    out: list[str] = []
    for arg in args:
        if _PLACEHOLDER.search(arg):
            if (
                _PLACEHOLDER.fullmatch(arg)
                and out
                and out[-1].startswith("-")
                and ("=" not in out[-1])
            ):
                out.pop()  # "--socket {socket}": the option goes too
            continue
        out.append(arg)
    return out + [option]


def _shell_word(arg: str) -> str:
    """``arg`` quoted for /bin/sh, leaving the placeholders for Target to fill in."""
    return "".join(
        p if _PLACEHOLDER.fullmatch(p) else shlex.quote(p) for p in _PLACEHOLDER.split(arg) if p
    )


@pytest.fixture
def backend(vfu_settings, tmp_path, vfu_target):
    """``backend(option=None, redirect=False)``: start the server program with ``option`` as
    its socket argument (None: its command line as given), optionally with fds 0-2 on
    /dev/null, and wait until it listens; a started ``Target``. Every program started is
    stopped at teardown."""
    template, env = vfu_target.template, vfu_target.env
    if template is None:
        pytest.skip(
            "needs the target's command line (--vfu-server): an external socket "
            "(--vfu-socket) cannot be started"
        )
    args = shlex.split(template) if isinstance(template, str) else list(template)
    started: list[Target] = []
    where = dict(base_dir=tmp_path, startup_timeout=vfu_settings.start_timeout)
    cwd = tmp_path / "cwd"
    cwd.mkdir()

    def start(option: str | None = None, redirect: bool = False) -> Target:
        argv = args if option is None else _with_option(args, option)
        if redirect:
            command = (
                "exec " + " ".join(_shell_word(a) for a in argv) + " </dev/null >/dev/null 2>&1"
            )
            target = Target(command, env=env, shell=True, cwd=cwd, **where)
        else:
            target = Target(argv, env=env, cwd=cwd, **where)
        started.append(target)
        try:
            target.start()
        except TargetStartError as e:
            daemons = _daemons(target)
            if daemons:
                raise AssertionError(
                    f"the process started ({target.pid}) {target.exit_description()}, and "
                    f"process(es) {sorted(daemons)} listen on its socket: it daemonized "
                    f"(killed them)\n  command: {target.command}"
                ) from e
            how = (f"with {option}" if option else "from its command line") + (
                " and fds 0-2 on /dev/null" if redirect else ""
            )
            raise AssertionError(f"the server program did not start {how}:\n{e}") from e
        return target

    start.timeout, start.cwd = vfu_settings.timeout, cwd
    yield start
    for target in started:
        inodes = listening_inodes(target.socket_path)
        target.cleanup()
        _kill(_owners(inodes) if inodes else set())


def _serve_one(target: Target, timeout: float, what: str) -> None:
    """A client connects, negotiates and gets DEVICE_GET_INFO answered."""
    try:
        with Client.connect(target.socket_path, timeout=timeout) as client:
            watch_client(client)
            client.negotiate()
            client.device_get_info().check()
    except (ClientError, OSError) as e:
        _not_crashed(target)
        raise AssertionError(f"{what}, the server did not serve a client: {e}") from e


def _not_crashed(target: Target) -> None:
    rc = target.poll()
    assert rc is None or rc >= 0, (
        f"the server was killed by {target.signal_name}: {target.describe()}\n"
        f"{target.stderr_tail()}"
    )


def _socket_inodes(pid: int) -> set[int]:
    """The socket inodes among the open fds of ``pid``."""
    found = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return found
    for name in names:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        m = re.fullmatch(r"socket:\[(\d+)\]", link)
        if m:
            found.add(int(m.group(1)))
    return found


def _owners(inodes: set[int]) -> set[int]:
    """Pids holding any of the socket ``inodes`` (a daemonized server, to report and end)."""
    owners = set()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid() and _socket_inodes(int(name)) & inodes:
            owners.add(int(name))
    return owners


def _kill(pids: set[int]) -> None:
    """SIGKILL processes a started program left behind (daemonized copies of it)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _daemons(target: Target, wait: float = 1.0) -> set[int]:
    """After the process started exited: the processes that listen on its socket anyway
    (its daemonized copies), killed; empty if none shows up within ``wait`` s."""
    if target.poll() is None:
        return set()
    deadline = time.monotonic() + wait
    while True:
        inodes = listening_inodes(target.socket_path)
        owners = _owners(inodes) if inodes else set()
        if owners or time.monotonic() >= deadline:
            _kill(owners)
            return owners
        time.sleep(0.02)


@case("backend/socket-path-option", MUST)
def test_socket_path_option(backend):
    """The program accepts --socket-path=PATH, listens on PATH and serves a client there.

    Spec (Backend Program Conventions): "The backend program must accept the following
    commands line options: --socket-path=PATH: path to UNIX domain socket"
    """
    target = backend(SOCKET_OPTION)
    _serve_one(target, backend.timeout, f"started with --socket-path={target.socket_path}")


@case("backend/fd-option", MAY)
def test_fd_option(backend, vfu_observe):
    """The program accepts --fd=FDNUM, given a listening UNIX socket, and serves a client
    on it (errata 9: the spec does not say listening or connected; what the server does is
    reported as information).

    Spec (Backend Program Conventions): "--fd=FDNUM: file descriptor for UNIX domain
    socket, incompatible with --socket-path"
    """
    target = backend(FD_OPTION)
    deadline = time.monotonic() + 0.5  # a program that took --fd=N for a path binds it
    while not (taken := sorted(p.name for p in backend.cwd.iterdir() if p.is_socket())):
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    assert not taken, (
        f"started with {target.command!r}, the server listens on a socket file it created, "
        f"{taken[0]!r}: it took the --fd option for a socket path"
    )
    _serve_one(
        target,
        backend.timeout,
        f"started with {target.command!r} (an inherited "
        "listening socket, as vhost-user backends take it)",
    )
    deadline = time.monotonic() + 0.5
    while target.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if target.poll() is not None:
        _not_crashed(target)
        vfu_observe(
            f"with --fd (a listening socket) the server served one client, then exited "
            f"(status {target.poll()})"
        )
        return
    _serve_one(target, backend.timeout, "after a first client on the --fd listening socket")


@case("backend/sigterm", MUST)
@pytest.mark.parametrize("state", ["idle", "client-connected"])
def test_sigterm(backend, state):
    """The program exits promptly on SIGTERM, idle or while a client is connected.

    Spec (Backend Program Conventions): "The backend program must honor the SIGTERM
    signal."
    """
    target = backend()
    client = None
    try:
        if state == "client-connected":
            client = Client.connect(target.socket_path, timeout=backend.timeout)
            watch_client(client)
            client.negotiate()
            client.device_get_info().check()
        target.stop(grace=SIGTERM_GRACE)  # SIGTERM, then SIGKILL after the grace period
    finally:
        if client is not None:
            client.close()
    assert target.sigterm_honoured, (
        f"the server did not exit within {SIGTERM_GRACE:g} s of SIGTERM ({state}); it was "
        "killed with SIGKILL"
    )
    rc = target.poll()
    assert rc is not None and (rc >= 0 or rc == -signal.SIGTERM), (
        f"after SIGTERM the server {target.exit_description()}"
    )


@case("backend/no-daemonize", MUST)
def test_no_daemonize(backend):
    """The program does not daemonize: the process started keeps running and is the one
    holding the listening socket.

    Spec (Backend Program Conventions): "The backend program must not daemonize itself."
    """
    target = backend()
    # A daemonizing program's started process exits once its copy listens: on a loaded
    # machine maybe only after the suite saw the socket listen. Seeing that exit, the
    # suite follows the copy (daemonized), so that is looked at after the wait too.
    target.wait(1.0)
    status = target.poll()
    if target.daemonized:  # the suite follows the process that listens: not the one started
        raise AssertionError(
            f"the process started exited (status {target.started_status}) once process "
            f"{target.pid} listened on the socket: it daemonized"
        )
    inodes = listening_inodes(target.socket_path)
    if status is not None:
        owners = _daemons(target)
        _not_crashed(target)
        raise AssertionError(
            f"the process started ({target.pid}) {target.exit_description()} right after it "
            "started listening"
            + (
                f", while process(es) {sorted(owners)} still listen on the socket: it daemonized"
                if owners
                else ""
            )
        )
    held = _socket_inodes(target.pid) & inodes
    assert held, (
        f"the process started ({target.pid}) runs, but does not hold the socket listening on "
        f"{target.socket_path} (held by process(es) {sorted(_owners(inodes))})"
    )


@case("backend/std-fds-redirected", SHOULD)
def test_std_fds_redirected(backend):
    """With stdin, stdout and stderr redirected to /dev/null, the program starts, serves a
    client and keeps running.

    Spec (Backend Program Conventions): "File descriptors 0, 1 and 2 must exist, must have
    regular stdin/stdout/stderr semantics, and can be redirected." (The musts bind whoever
    starts the program; that the program keeps working when they are redirected follows
    from "can be redirected": SHOULD.)
    """
    target = backend(redirect=True)
    time.sleep(0.1)  # a program that quits at EOF on stdin does so at once
    _not_crashed(target)
    assert target.poll() is None, (
        f"with fds 0-2 on /dev/null, the server {target.exit_description()} right after it "
        f"started listening\n{target.stderr_tail()}"
    )
    links = []
    for fd in (0, 1, 2):
        try:
            links.append(os.readlink(f"/proc/{target.pid}/fd/{fd}"))
        except OSError:
            links.append(None)
    if links != ["/dev/null"] * 3:
        pytest.skip(f"could not redirect the server's fds 0-2 to /dev/null (they are {links})")
    try:
        with Client.connect(target.socket_path, timeout=backend.timeout) as client:
            watch_client(client)
            client.negotiate()
            client.device_get_info().check()
            time.sleep(0.1)
            assert target.poll() is None, (
                f"with fds 0-2 on /dev/null, the server {target.exit_description()} while its "
                "client was connected"
            )
    except (ClientError, OSError) as e:
        _not_crashed(target)
        raise AssertionError(
            f"with fds 0-2 on /dev/null, the server did not serve a client: {e}"
        ) from e
