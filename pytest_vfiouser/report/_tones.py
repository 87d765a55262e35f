"""The colour of each verdict's tone (``Verdict.tone``): CSS for the HTML report and compare,
pytest TerminalWriter markup for the terminal summary."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pytest_vfiouser.verdict import VERDICTS, Verdict

__all__ = ["TONE_MARKUP", "TONE_STYLES", "tone_css"]

TONE_STYLES = {
    "pass": "color:green",
    "bad": "color:#c00;font-weight:bold",
    "warn": "color:#c60",
    "info": "color:#36c",
    "skip": "color:#888",
}

# The same tones on a terminal (keyword arguments of TerminalWriter.write); skip stays plain.
TONE_MARKUP: dict[str, dict[str, bool]] = {
    "pass": {"green": True},
    "bad": {"red": True, "bold": True},
    "warn": {"yellow": True},
    "info": {"blue": True},
    "skip": {},
}


def tone_css(selector: Callable[[str, Sequence[Verdict]], str]) -> str:
    """One CSS rule a tone; ``selector(tone, its verdicts)`` says which elements it colours."""
    return "\n".join(
        f"{selector(tone, [v for v in VERDICTS if v.tone == tone])}{{{style}}}"
        for tone, style in TONE_STYLES.items()
    )
