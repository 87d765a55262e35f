"""A verdict's message as the reports show it: shortened, and without pytest's clutter.

* ``clip_message(text, limit)``: at most ``limit`` characters, keeping the start
  and the end. The end matters as much as the start: a crash's message ends with
  the last lines of the server's stderr (the assertion that killed it), after
  its command line and start-up noise.
* ``plain_message(text)``: without what pytest's assertion rewriting adds to a
  failed ``assert``: the ``+  where ...`` lines, and the ``assert ...`` line
  after a message of the case's own; without the exception type of a
  requirement not met (``AssertionError``, ``Unmet``, ``FuzzFailure``: the
  verdict says that), and another type without its module
  (``ConnectionClosed: ...``).
"""

from __future__ import annotations

import re

from pytest_vfiouser.verdict import Unmet

__all__ = ["clip_message", "plain_message"]

_EXPLANATION = re.compile(r"\s*\+\s+(where|and)\b")  # pytest: " +  where 1 = f(x)"
# The fuzzer's failures by name: importing the fuzz engine would import Hypothesis, which the
# plugin loads only when a fuzz case runs (tests/test_reports_messages.py checks the name).
_FUZZ_FAILURE = "pytest_vfiouser.fuzz._engine.FuzzFailure"
_NOT_MET = ("AssertionError: ", f"{Unmet.__module__}.{Unmet.__qualname__}: ", f"{_FUZZ_FAILURE}: ")
_QUALIFIED = re.compile(r"(?:[a-z_][a-z0-9_]*\.)+([A-Z][A-Za-z0-9_]*: )")  # module.Class: ...
_ELLIPSIS = "..."


def clip_message(text: str, limit: int) -> str:
    """``text`` if it fits in ``limit`` characters; else its first lines (whole lines in a
    quarter of ``limit``; at least the start of the first) and as many of its last lines
    as fit, and between them a line that says how many lines were left out. A single line
    too long keeps its start."""
    if len(text) <= limit:
        return text
    lines = text.splitlines()
    if len(lines) == 1:
        return text[: max(limit - len(_ELLIPSIS), 0)] + _ELLIPSIS
    marker_room = len(f"[... {len(lines)} lines left out ...]") + 2  # and its two newlines
    budget = max(limit - marker_room, 0)
    head: list[str] = []
    used = 0
    for line in lines:
        if used + len(line) + 1 > budget // 4:
            break
        head.append(line)
        used += len(line) + 1
    rest = lines[len(head) :]
    if not head:  # the first line alone is longer than its share: its start
        head = [_start(lines[0], budget // 4)]
        used = len(head[0]) + 1
        rest = lines[1:]
    tail: list[str] = []
    room = budget - used
    for line in reversed(rest):
        if len(line) + 1 > room:
            break
        tail.insert(0, line)
        room -= len(line) + 1
    if not tail and rest and room > len(_ELLIPSIS) + 1:  # the last line alone: its end
        tail = [_ELLIPSIS + rest[-1][-(room - len(_ELLIPSIS) - 1) :]]
    left_out = len(rest) - len(tail)
    return "\n".join([*head, f"[... {left_out} lines left out ...]", *tail])


def plain_message(text: str) -> str:
    """``text`` without pytest's assertion clutter (see the module's docstring)."""
    lines = [line for line in text.splitlines() if not _EXPLANATION.match(line)]
    if not lines:
        return ""
    first = lines[0]
    prefix = next((p for p in _NOT_MET if first.startswith(p)), None)
    if prefix is not None:
        own = first[len(prefix) :]
        if own.startswith("assert "):  # no message of its own: pytest's line is all there is
            return "\n".join([own, *lines[1:]])
        # pytest's "assert <expression>" line (and its indented details) after the message
        for i in range(len(lines) - 1, 0, -1):
            if lines[i].startswith("assert "):
                if all(not line.strip() or line[0].isspace() for line in lines[i + 1 :]):
                    lines = lines[:i]
                break
        lines[0] = own
    elif qualified := _QUALIFIED.match(first):
        lines[0] = qualified.group(1) + first[qualified.end() :]
    return "\n".join(lines)


def _start(line: str, room: int) -> str:
    return line[: max(room - len(_ELLIPSIS) - 1, 0)] + _ELLIPSIS
