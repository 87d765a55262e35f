"""A client's session as the reference server recorded it (``--record``): pure data.

Each line of the record is a message or an event of one connection
(reference_server/record.py); ``read_transcript`` groups them by connection. The
client cases (conformance_client/) read their verdicts off it: what the client
sent, what it was answered, in order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pytest_vfiouser.protocol import (
    FLAG_ERROR,
    FLAG_NO_REPLY,
    TYPE_MASK,
    CodecError,
    Command,
    MsgType,
    Version,
    command_name,
)

C2S, S2C = "c2s", "s2c"


class TranscriptError(Exception):
    """The record cannot be read: which line, what is wrong."""


@dataclass(frozen=True)
class Message:
    index: int  # its place in the connection, from 0
    direction: str  # C2S (the client's) or S2C (the server's)
    channel: str  # main, or twin (0.9.2 twin-socket mode)
    msg_id: int
    command: int
    msg_size: int
    flags: int
    error: int
    fds: int
    payload: bytes
    t: float
    fd_kinds: tuple[str, ...] = ()  # what its fds were (the client's; records since fd_kinds)

    @property
    def is_command(self) -> bool:
        return self.flags & TYPE_MASK == MsgType.COMMAND

    @property
    def is_reply(self) -> bool:
        return self.flags & TYPE_MASK == MsgType.REPLY

    @property
    def is_error(self) -> bool:
        return bool(self.flags & FLAG_ERROR)

    @property
    def no_reply(self) -> bool:
        return bool(self.flags & FLAG_NO_REPLY)

    def describe(self) -> str:
        kind = "command" if self.is_command else "error reply" if self.is_error else "reply"
        return f"{command_name(self.command)} {kind} msg_id {self.msg_id} (message {self.index})"


@dataclass(frozen=True)
class Interrupt:
    """An interrupt the server raised through the client's eventfd ([server] raise_irqs)."""

    index: int
    vector: int
    taken: bool  # the client read the eventfd
    after: float  # seconds: when it did, or how long the server watched
    t: float


@dataclass
class Session:
    """One connection: its messages in order, the interrupts raised, how it ended."""

    number: int
    messages: list[Message] = field(default_factory=list)
    interrupts: list[Interrupt] = field(default_factory=list)
    ended: str | None = None  # the server's reason, None if the record stops first
    ended_at: float | None = None  # when (the record's clock), with ``ended``

    def sent(self, command: int | None = None) -> list[Message]:
        """The client's commands (on the main socket), of ``command`` if given."""
        return [
            m
            for m in self.messages
            if m.direction == C2S
            and m.channel == "main"
            and m.is_command
            and (command is None or m.command == command)
        ]

    def answers(self) -> list[Message]:
        """The client's replies to the server's requests (on either socket)."""
        return [m for m in self.messages if m.direction == C2S and m.is_reply]

    def server_requests(self) -> list[Message]:
        return [m for m in self.messages if m.direction == S2C and m.is_command]

    def reply_to(self, request: Message) -> Message | None:
        """The reply to ``request`` (the client's command or the server's): the first
        reply after it from the other side, on the socket it came on, with its msg_id
        and command."""
        other = S2C if request.direction == C2S else C2S
        for m in self.messages[request.index + 1 :]:
            if (
                m.direction == other
                and m.is_reply
                and m.channel == request.channel
                and (m.msg_id, m.command) == (request.msg_id, request.command)
            ):
                return m
        return None

    def sent_after(self, message: Message) -> Message | None:
        """The client's first message after ``message`` (None: it sent nothing more)."""
        return next((m for m in self.messages[message.index + 1 :] if m.direction == C2S), None)

    def went_on_past(self, request: Message) -> Message | None:
        """The client's next message, if it left the server's ``request`` unanswered and
        went on (None: it answered, or sent nothing more)."""
        return self.sent_after(request) if self.reply_to(request) is None else None

    def silent_since(self) -> Message | None:
        """The server's first request (on either socket, expecting a reply) that the
        client neither answered nor sent anything after: where it stopped talking."""
        for m in self.server_requests():
            if not m.no_reply and self.reply_to(m) is None and self.sent_after(m) is None:
                return m
        return None

    def version(self) -> tuple[Version | None, Version | None]:
        """The client's first VERSION proposal and the server's successful reply to it
        (None where there is none, or it does not decode)."""
        proposals = self.sent(Command.VERSION)
        if not proposals:
            return None, None
        proposal = reply = None
        try:
            proposal = Version.unpack(proposals[0].payload)
        except CodecError:
            pass
        answer = self.reply_to(proposals[0])
        if answer is not None and not answer.is_error:
            try:
                reply = Version.unpack(answer.payload)
            except CodecError:
                pass
        return proposal, reply


@dataclass
class Transcript:
    sessions: list[Session]

    def with_messages(self) -> list[Session]:
        return [s for s in self.sessions if s.messages]


def read_transcript(path: str | Path) -> Transcript:
    """The sessions of a record file, in the order they connected."""
    sessions: dict[int, Session] = {}
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise TranscriptError(f"{path}: {e.strerror}") from None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            session = sessions.setdefault(item["conn"], Session(item["conn"]))
            if "event" in item:
                if item["event"] == "disconnect":
                    session.ended = item.get("detail") or "disconnected"
                    session.ended_at = item["t"]
                elif item["event"] == "irq":
                    session.interrupts.append(
                        Interrupt(
                            item["index"], item["vector"], item["taken"], item["after"], item["t"]
                        )
                    )
                continue
            session.messages.append(
                Message(
                    len(session.messages),
                    item["dir"],
                    item["channel"],
                    item["msg_id"],
                    item["command"],
                    item["msg_size"],
                    item["flags"],
                    item["error"],
                    item["fds"],
                    bytes.fromhex(item["payload"]),
                    item["t"],
                    tuple(item.get("fd_kinds", ())),
                )
            )
        except (ValueError, KeyError, TypeError) as e:
            raise TranscriptError(f"{path}, line {n}: not a record line ({e!r})") from None
    return Transcript([sessions[k] for k in sorted(sessions)])
