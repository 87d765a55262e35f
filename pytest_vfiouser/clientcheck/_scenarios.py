"""Scenarios: the server doing what a careless client does not expect.

A scenario is a run of the client against the reference server with limits of its
own (the smallest the spec allows a server to state), doing what the spec allows
(DMA requests between a command and its reply, a closed connection), or with named
defects of the fault overlay (reference_server_faults, started by name): a server that
answers VERSION with another major, one whose twin-socket reply is inconsistent, one
whose DMA requests fall outside the client's mappings. What the spec asks of the client then is
judged from that run's sessions (the client cases that take ``vfu_scenario``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    faults: tuple[str, ...]  # of reference_server_faults: how the server misbehaves
    what: str
    revisions: tuple[str, ...] = ("0.9.1", "0.9.2")
    server_args: tuple[str, ...] = ()  # more of the server's command line


SCENARIOS = {
    s.name: s
    for s in (
        Scenario(
            "small-limits",
            (),
            "the server states max_msg_fds 1 and max_data_xfer_size 4096",
            server_args=("--max-msg-fds=1", "--max-data-xfer-size=4096"),
        ),
        Scenario(
            "other-major",
            ("version-unchecked",),
            "the server answers VERSION with major 1, whatever the client proposed",
        ),
        Scenario(
            "twin-inconsistent",
            ("twin-fd-index-off",),
            "the server's VERSION reply enables twin-socket mode with an fd_index that names "
            "no fd of the reply",
            ("0.9.2",),
        ),
        Scenario(
            "twin-refused",
            ("twin-never-enabled",),
            "the server does not enable twin-socket mode (its reply has no twin_socket), "
            "and, as dma-between, reads each new mapping with DMA_READ on the main socket",
            ("0.9.2",),
            server_args=("--dma-between",),
        ),
        Scenario(
            "dma-outside",
            ("dma-access-wrong",),
            "the server's DMA_READ/DMA_WRITE name offsets into the client's mappings, not "
            "client addresses: outside what the client mapped",
        ),
        Scenario(
            "dma-between",
            (),
            "after each DMA_MAP the server reads the new mapping's first 64 bytes with "
            "DMA_READ and writes them back with DMA_WRITE, before it answers the client's "
            "next command",
            server_args=("--dma-between",),
        ),
        Scenario(
            "dma-too-big",
            ("dma-too-big",),
            "as dma-between, and then each new mapping is read once more with a DMA_READ "
            "above the client's max_data_xfer_size (as much as the mapping and the server's "
            "own limit of 2 MiB allow)",
            server_args=("--dma-between", "--max-data-xfer-size=2097152"),
        ),
        Scenario(
            "errno-zero",
            (),
            "the server refuses every DEVICE_GET_IRQ_INFO with the Error bit and errno 0",
            server_args=("--refuse=DEVICE_GET_IRQ_INFO:0",),
        ),
        Scenario(
            "errno-einval",
            (),
            "the server refuses every DEVICE_GET_IRQ_INFO with EINVAL (errno-zero's control)",
            server_args=("--refuse=DEVICE_GET_IRQ_INFO:22",),
        ),
        Scenario(
            "reply-delayed",
            (),
            "the server sends its reply to each connection's first DEVICE_GET_INFO 4 s late "
            "(QEMU's client waits 5 s)",
            server_args=("--delay=DEVICE_GET_INFO:4",),
        ),
        Scenario(
            "irqs-raised",
            (),
            "the server raises each interrupt once as soon as a DEVICE_SET_IRQS gives it an "
            "eventfd, and watches whether the client reads that eventfd",
            server_args=("--raise-irqs",),
        ),
        Scenario(
            "server-closes",
            (),
            "the server closes the connection once it has answered the client's first "
            "DEVICE_SET_IRQS, and serves the client's next connection",
            server_args=("--close-after=DEVICE_SET_IRQS",),
        ),
    )
}
