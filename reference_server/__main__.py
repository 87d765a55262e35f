"""vfio-user-reference-server: the command line.

    vfio-user-reference-server (--socket-path=PATH | --fd=FDNUM)
                               [--device FILE.toml] [--spec 0.9.1] [-v]
                               [--busy-poll-us USEC] [--message-timeout SECONDS]
                               [--idle-timeout SECONDS] [--send-timeout SECONDS]
                               [--max-queued-bytes BYTES]

--fd takes an inherited listening UNIX socket; a connected one is served as
the one client and the server then exits (errata 9). The timeouts and
--max-queued-bytes bound what one client may cost (limits.py). Exit status: 0 after
SIGTERM/SIGINT (or the end of an --fd connection), 2 for usage and device
description errors, 1 when the socket cannot be set up.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import logging
import os
import sys

from pytest_vfiouser._unix import CEILING_NS

from .device import Device
from .device_config import ConfigError, DeviceConfig, check_command, default_config, load
from .errors import Terminate
from .limits import DEFAULT, Limits
from .record import Recorder
from .server import (
    Server,
    SetupError,
    bind_path,
    inherited_socket,
    install_signal_handlers,
    remove_socket_file,
)

SPECS = ("0.9.1", "0.9.2")
PROG = "vfio-user-reference-server"
BUSY_POLL_US = CEILING_NS // 1000


def _ensure_std_fds() -> None:
    """Fds 0-2 closed at exec would be reused by our sockets; park /dev/null there."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def _err(text: str) -> None:
    try:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
    except (AttributeError, OSError):
        pass


class Program:
    """The command line, step by step: options, the device, the socket, the server.

    reference_server_faults subclasses it (more options, other kinds of server and
    device, faulty sockets); each step is a method for that reason.
    """

    prog = PROG
    server_type = Server
    device_type = Device

    def parser(self) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(
            prog=self.prog,
            description="A strict vfio-user server (reference "
            "device) for the pytest-vfiouser conformance suite.",
        )
        p.add_argument("--socket-path", metavar="PATH", help="UNIX socket to create and listen on")
        p.add_argument("--fd", metavar="FDNUM", help="inherited listening UNIX socket")
        p.add_argument(
            "--device",
            metavar="FILE.toml",
            help="device description "
            "(see reference_server/device_config.py); default: the built-in device",
        )
        p.add_argument(
            "--spec",
            default="0.9.1",
            metavar="REVISION",
            help="vfio-user revision to serve: 0.9.1 (default) or 0.9.2",
        )
        p.add_argument(
            "--busy-poll-us",
            type=int,
            default=BUSY_POLL_US,
            metavar="USEC",
            help="poll a client's socket for up to USEC microseconds before blocking "
            "on it, adaptively (reference_server/busy_poll.py); 0: always block "
            f"(default {BUSY_POLL_US})",
        )
        limits = p.add_argument_group(
            "what one client may cost (the connection is closed beyond it; "
            "reference_server/limits.py)"
        )
        limits.add_argument(
            "--message-timeout",
            type=float,
            default=DEFAULT.message_timeout,
            metavar="SECONDS",
            help="a message must arrive whole within SECONDS of its first bytes "
            f"(default {DEFAULT.message_timeout:g})",
        )
        limits.add_argument(
            "--idle-timeout",
            type=float,
            default=DEFAULT.idle_timeout,
            metavar="SECONDS",
            help="a client that sends no whole message for SECONDS while another client "
            f"waits to be served is closed (default {DEFAULT.idle_timeout:g})",
        )
        limits.add_argument(
            "--send-timeout",
            type=float,
            default=DEFAULT.send_timeout,
            metavar="SECONDS",
            help="a reply must go out within SECONDS: a client that does not read its replies "
            f"is closed (default {DEFAULT.send_timeout:g})",
        )
        limits.add_argument(
            "--max-queued-bytes",
            type=int,
            default=DEFAULT.max_queued_bytes,
            metavar="BYTES",
            help="bytes of commands held while the server waits for the client's reply "
            "to a DMA_READ/DMA_WRITE; one command is always held "
            f"(default {DEFAULT.max_queued_bytes})",
        )
        p.add_argument(
            "-v", "--verbose", action="store_true", help="log every message, decoded, to stderr"
        )
        p.add_argument(
            "--max-msg-fds",
            type=int,
            metavar="N",
            help="the max_msg_fds the server states and takes (1..253), over the device "
            "description's [server] value",
        )
        p.add_argument(
            "--max-data-xfer-size",
            type=int,
            metavar="BYTES",
            help="the max_data_xfer_size the server states and takes (4096..67108864), over "
            "the device description's [server] value",
        )
        p.add_argument(
            "--dma-between",
            action="store_true",
            help="after each DMA_MAP, DMA_READ 64 bytes of the new mapping and DMA_WRITE them "
            "back before answering the client's next command (its [server] dma_between)",
        )
        p.add_argument(
            "--close-after",
            metavar="COMMAND",
            help="close the first connection once the first reply to COMMAND (e.g. "
            "DEVICE_SET_IRQS) is sent; later ones are served (its [server] close_after)",
        )
        p.add_argument(
            "--refuse",
            metavar="COMMAND[:ERRNO]",
            help="refuse every COMMAND (e.g. DEVICE_GET_IRQ_INFO) with ERRNO (default EINVAL; "
            "0: the Error bit alone) (its [server] refuse and refuse_errno)",
        )
        p.add_argument(
            "--delay",
            metavar="COMMAND:SECONDS",
            help="send the first reply to COMMAND (e.g. DEVICE_GET_INFO) of each connection "
            "SECONDS late (its [server] delay and delay_seconds)",
        )
        p.add_argument(
            "--raise-irqs",
            action="store_true",
            help="raise each interrupt once as soon as a SET_IRQS gives it an eventfd, and "
            "record whether the client took it (its [server] raise_irqs)",
        )
        p.add_argument(
            "--record",
            metavar="FILE",
            help="append every message received and sent, one JSON object a line "
            "(reference_server/record.py), to FILE",
        )
        return p

    @staticmethod
    def server_given(args, config, parser) -> DeviceConfig:
        """--max-msg-fds, --max-data-xfer-size and the client-mode scenarios' options
        (--dma-between, --close-after, --refuse, --delay, --raise-irqs: conduct.py) over
        the description's [server]."""
        given = {}
        for name, low, high in (
            ("max_msg_fds", 1, 253),
            ("max_data_xfer_size", 4096, 64 << 20),
        ):
            value = getattr(args, name)
            if value is None:
                continue
            if not low <= value <= high:
                parser.error(f"--{name.replace('_', '-')}: {value} is not in {low}..{high}")
            given[name] = value
        for flag in ("dma_between", "raise_irqs"):
            if getattr(args, flag):
                given[flag] = True
        if args.close_after is not None:
            try:
                check_command(args.close_after, "--close-after")
            except ConfigError as e:
                parser.error(str(e))
            given["close_after"] = args.close_after
        if args.refuse is not None:
            name, _, number = args.refuse.partition(":")
            try:
                check_command(name, "--refuse")
            except ConfigError as e:
                parser.error(str(e))
            number = number or str(errno.EINVAL)
            if not number.isdigit() or int(number) > 4095:
                parser.error(f"--refuse: {number!r} is not an errno number (0..4095)")
            given["refuse"], given["refuse_errno"] = name, int(number)
        if args.delay is not None:
            name, _, seconds = args.delay.partition(":")
            try:
                check_command(name, "--delay")
                given["delay_seconds"] = float(seconds)
            except ConfigError as e:
                parser.error(str(e))
            except ValueError:
                parser.error(f"--delay: {seconds!r} is not a number of seconds")
            if not 0 <= given["delay_seconds"] <= 3600:
                parser.error(f"--delay: {seconds} is not in [0, 3600] seconds")
            given["delay"] = name
        if not given:
            return config
        return dataclasses.replace(config, server=dataclasses.replace(config.server, **given))

    @staticmethod
    def limits(args) -> Limits:
        return Limits(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Limits)})

    def install_signal_handlers(self) -> None:
        install_signal_handlers()

    def check(self, args, parser: argparse.ArgumentParser) -> int | None:
        """Validate the options; the --fd number, or None for --socket-path."""
        if (args.socket_path is None) == (args.fd is None):
            parser.error("exactly one of --socket-path=PATH and --fd=FDNUM is required")
        fd = None
        if args.fd is not None:
            try:
                fd = int(args.fd, 10)
            except ValueError:
                parser.error(f"--fd: {args.fd!r} is not a file descriptor number")
            if fd < 0:
                parser.error(f"--fd: {fd} is not a file descriptor number")
        if not 0 <= args.busy_poll_us <= 1_000_000:
            parser.error(f"--busy-poll-us: {args.busy_poll_us} is not in 0..1000000")
        try:
            self.limits(args).check()
        except ValueError as e:
            parser.error(str(e))
        if args.spec not in SPECS:
            parser.error(
                f"--spec: {args.spec!r} is not supported; this server implements {', '.join(SPECS)}"
            )
        return fd

    def main(self, argv: list[str] | None = None) -> int:
        _ensure_std_fds()
        self.install_signal_handlers()
        parser = self.parser()
        args = parser.parse_args(argv)
        fd = self.check(args, parser)
        _setup_logging(args.verbose, self.prog)
        try:
            return self.run(args, fd, parser)
        except Terminate:
            return 0

    def listen(self, path: str | None, fd: int | None):
        """The socket to serve: (socket, listening?, path, (st_dev, st_ino) of a file made)."""
        if path:
            listener, made = bind_path(path)
            return listener, True, path, made
        listener, listening = inherited_socket(fd)
        return listener, listening, None, None

    def run(self, args, fd: int | None, parser: argparse.ArgumentParser) -> int:
        log = logging.getLogger("reference_server")
        config = None
        if args.device:
            try:
                config = load(args.device)
            except ConfigError as e:
                parser.error(f"--device {args.device}: {e}")
        config = self.server_given(args, config or default_config(), parser)
        recorder = None
        if args.record:
            try:
                recorder = Recorder(args.record)
            except OSError as e:
                parser.error(f"--record {args.record}: {e.strerror}")
        device = self.device_type(config, args.spec)
        listener = made = None
        path = os.path.abspath(args.socket_path) if args.socket_path else None
        try:
            try:
                listener, listening, path, made = self.listen(path, fd)
            except SetupError as e:
                _err(f"{self.prog}: {e}")
                return 1
            server = self.server_type(
                device,
                args.spec,
                trace=args.verbose,
                busy_poll_ns=args.busy_poll_us * 1000,
                limits=self.limits(args),
                recorder=recorder,
            )
            if not listening:
                log.info("serving the connected socket on fd %d", fd)
                server.serve_one(listener)
                listener = None  # the connection closed it
                return 0
            log.info("listening on %s (vfio-user %s)", path or f"fd {fd}", args.spec)
            server.serve_forever(listener)
            return 0
        except Terminate:
            log.info("terminated by signal")
            return 0
        finally:
            if listener is not None:
                listener.close()
            if made is not None:
                remove_socket_file(path, made)
            device.close()
            if recorder is not None:
                recorder.close()


def _setup_logging(verbose: bool, prog: str) -> None:
    logging.raiseExceptions = False  # a closed stderr must not cost us anything
    log = logging.getLogger("reference_server")
    handler = logging.StreamHandler(sys.stderr) if sys.stderr else logging.NullHandler()
    handler.setFormatter(logging.Formatter(f"{prog}[%(process)d]: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def main(argv: list[str] | None = None) -> int:
    return Program().main(argv)


if __name__ == "__main__":
    sys.exit(main())
