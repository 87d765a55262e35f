"""Process-level faults: the command line, the socket, signals, daemonizing,
exiting after a client. A Program and a Server of the reference server's,
subclassed."""

from __future__ import annotations

import logging
import os
import select
import signal
import tempfile
import threading
import time

from reference_server import server as _server
from reference_server.__main__ import Program
from reference_server.server import Server

from ._catalogue import FAULTS, catalogue_text, enable
from ._device import FaultyDevice
from ._framing import FaultyConnection

log = logging.getLogger("reference_server")
MAX_DAEMON_SECONDS = 300
_serving = False  # a client is connected (fault sigterm-ignored-with-client)
_deferred: int | None = None  # the signal that fault deferred


def on_signal(signum, frame):
    global _deferred
    if _serving and "sigterm-ignored-with-client" in FAULTS:
        _deferred = signum  # looked at only between clients
        return
    _server.on_signal(signum, frame)


class FaultyServer(Server):
    connection_type = FaultyConnection
    served = False  # a client came and went (fault exit-after-client)

    def serve_one(self, sock) -> None:
        global _serving
        _serving = True
        try:
            super().serve_one(sock)
        finally:
            _serving = False
            self.served = True
        if _deferred is not None:
            on_signal(_deferred, None)

    def accepting(self) -> bool:
        if self.served and "exit-after-client" in FAULTS:
            log.info("client gone: exiting")
            return False
        return super().accepting()


def daemonize() -> None:
    """Fault "daemonize": double fork; the process started exits, the copy serves.

    The copy also exits when its stdin reaches EOF (the suite keeps a pipe there and
    closes it when it stops the server) or after MAX_DAEMON_SECONDS: a test run must not
    leave it behind.
    """
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)

    def watch() -> None:
        deadline = time.monotonic() + MAX_DAEMON_SECONDS
        try:
            while (left := deadline - time.monotonic()) > 0:
                if select.select([0], [], [], left)[0] and not os.read(0, 4096):
                    break
        except OSError:
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


class FaultyProgram(Program):
    """``python -m reference_server_faults``: the reference server's options, and
    --fault NAME (repeatable) and --list-faults."""

    prog = "vfio-user-faulty-server"
    server_type = FaultyServer
    device_type = FaultyDevice

    def parser(self):
        p = super().parser()
        p.add_argument(
            "--fault",
            action="append",
            default=[],
            metavar="NAME",
            help="inject a named defect (repeatable; see --list-faults)",
        )
        p.add_argument(
            "--list-faults",
            action="store_true",
            help="print the fault catalogue, one line each, and exit",
        )
        return p

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)

    def check(self, args, parser):
        if args.list_faults:
            print(catalogue_text())
            raise SystemExit(0)
        try:
            enable(args.fault)
        except ValueError as e:
            parser.error(f"--fault: {e}")
        if "socket-path-unsupported" in FAULTS and args.socket_path is not None:
            parser.error("unrecognized arguments: --socket-path")
        return super().check(args, parser)

    def listen(self, path, fd):
        if "fd-ignored" in FAULTS and fd is not None:
            path, fd = (
                os.path.join(tempfile.gettempdir(), f"vfio-user-ref-{os.getpid()}.sock"),
                None,
            )
        found = super().listen(path, fd)
        if "daemonize" in FAULTS:
            daemonize()
        return found


def main(argv: list[str] | None = None) -> int:
    return FaultyProgram().main(argv)
