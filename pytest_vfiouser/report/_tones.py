"""The colour of each verdict's tone (``Verdict.tone``): CSS for the HTML report and compare,
pytest TerminalWriter markup for the terminal summary."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pytest_vfiouser.verdict import VERDICTS, Verdict

__all__ = ["TONE_COLOURS", "TONE_FILLS", "TONE_MARKUP", "TONE_STYLES", "tone_css"]

TONE_COLOURS = {
    "pass": "green",
    "bad": "#c00",
    "warn": "#c60",
    "info": "#36c",
    "skip": "#888",
}
# Text in the tone's colour; what fails the run also bold.
TONE_STYLES = {
    tone: f"color:{colour}" + (";font-weight:bold" if tone == "bad" else "")
    for tone, colour in TONE_COLOURS.items()
}
# Shapes (the chart's bars) filled with it.
TONE_FILLS = {tone: f"fill:{colour}" for tone, colour in TONE_COLOURS.items()}

# The same tones on a terminal (keyword arguments of TerminalWriter.write); skip stays plain.
TONE_MARKUP: dict[str, dict[str, bool]] = {
    "pass": {"green": True},
    "bad": {"red": True, "bold": True},
    "warn": {"yellow": True},
    "info": {"blue": True},
    "skip": {},
}


def tone_css(
    selector: Callable[[str, Sequence[Verdict]], str], styles: Mapping[str, str] = TONE_STYLES
) -> str:
    """One CSS rule a tone; ``selector(tone, its verdicts)`` says which elements it styles,
    ``styles`` how (text by default)."""
    return "\n".join(
        f"{selector(tone, [v for v in VERDICTS if v.tone == tone])}{{{style}}}"
        for tone, style in styles.items()
    )
