"""Run a client command against the reference server and keep what it sent.

The server is the embedded reference server (``python -m reference_server``) at the
revision asked, with the device description asked, recording every message
(``--record``). The client command gets the socket path for ``{socket}``; it runs
in a session of its own until it exits or its time is up (then SIGTERM, SIGKILL),
and leaves nothing behind either way.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_vfiouser.target import wait_listening

from ._transcript import Transcript, read_transcript

STOP_GRACE = 3.0  # seconds between SIGTERM and SIGKILL
_TAIL = 4000


class ClientRunError(Exception):
    """The run could not happen: the server did not listen, the client did not start."""


@dataclass
class ClientRun:
    command: list[str]
    status: int | None  # the client's exit status (negative: a signal); None: stopped by us
    seconds: float
    output: str  # the end of what the client printed
    server_output: str
    transcript: Transcript

    def describe(self) -> str:
        if self.status is None:
            return f"ran until stopped after {self.seconds:.1f} s"
        if self.status < 0:
            return f"was killed by {signal.Signals(-self.status).name} after {self.seconds:.1f} s"
        return f"exited with status {self.status} after {self.seconds:.1f} s"


def client_argv(template: str, socket_path: str) -> list[str]:
    """The client's command line: ``template`` split as a shell would, every "{socket}"
    replaced by ``socket_path``. ValueError if it cannot be split or is empty."""
    words = shlex.split(template)
    if not words:
        raise ValueError("the client command is empty")
    return [w.replace("{socket}", socket_path) for w in words]


def run_client(
    template: str,
    workdir: Path,
    *,
    spec: str,
    seconds: float,
    device: str | None = None,
    start_timeout: float = 10.0,
    faults: tuple[str, ...] = (),
    server_args: tuple[str, ...] = (),
) -> ClientRun:
    """The client's run against the reference server (with ``faults`` of the fault
    overlay: a scenario); ClientRunError if the server or the client cannot start."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    sock, record = workdir / "vfu.sock", workdir / "record.jsonl"
    record.unlink(missing_ok=True)
    argv = client_argv(template, str(sock))
    module = "reference_server_faults" if faults else "reference_server"
    server_cmd = [sys.executable, "-m", module, f"--socket-path={sock}"]
    server_cmd += [f"--spec={spec}", f"--record={record}"]
    for fault in faults:
        server_cmd += ["--fault", fault]
    server_cmd += server_args
    if device:
        server_cmd.append(f"--device={device}")
    server_log = workdir / "server.log"
    with open(server_log, "wb") as log:
        server = subprocess.Popen(
            server_cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        if not wait_listening(sock, start_timeout, lambda: server.poll() is None):
            raise ClientRunError(
                f"the reference server did not listen on {sock}: {_tail(server_log)}"
            )
        client_log = workdir / "client.log"
        started = time.monotonic()
        with open(client_log, "wb") as log:
            try:
                client = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                )
            except OSError as e:
                raise ClientRunError(f"cannot start the client {argv[0]}: {e.strerror}") from None
        try:
            status = client.wait(seconds)
        except subprocess.TimeoutExpired:
            status = None
        finally:
            _stop(client)
        elapsed = time.monotonic() - started
    finally:
        _stop(server)
    return ClientRun(
        argv, status, elapsed, _tail(client_log), _tail(server_log), read_transcript(record)
    )


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process's group, SIGKILL after STOP_GRACE; reaped either way."""
    for sig, wait in ((signal.SIGTERM, STOP_GRACE), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except OSError:
            pass
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _tail(path: Path) -> str:
    try:
        return path.read_bytes()[-_TAIL:].decode("utf-8", "replace")
    except OSError:
        return ""
