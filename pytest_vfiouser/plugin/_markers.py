"""The suite's markers, and ``case()``: the decorator every conformance case wears.

    from pytest_vfiouser import case, MUST

    @case("header/reply-echoes-msg-id", MUST, requires=("mmap",), revisions=("0.9.1",))
    def test_reply_echoes_msg_id(vfu_client):
        '''Replies echo the msg_id of their command.

        Spec (Header): "Message ID identifies the message, and is echoed in the
        command's reply message."
        '''

``case`` applies plain pytest marks, so a case can also be written (or
selected with ``-m``) with the marks themselves. Their names carry the prefix
``vfu_``, so that they collide with no other project's marks (the plugin is
loaded in every pytest run of the environment):

* ``vfu_requirement(id)``   the case id, ``section/name``; baselines name it
* ``vfu_section(name)``     the part of the id before the first ``/``
* ``vfu_must`` / ``vfu_should`` / ``vfu_may``   the requirement level (RFC 2119)
* ``vfu_revision(*revs)``   the spec revisions the case applies to (default: all)
* ``vfu_requires(*names)``  device features (``protocol.FEATURES``) or hook names
  (``hookspecs.HOOK_NAMES``) the case needs; without them it is UNIMPLEMENTED
"""

from __future__ import annotations

import enum
import inspect
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pytest

from pytest_vfiouser.protocol import FEATURES, REVISIONS

from ._hookspecs import HOOK_NAMES

__all__ = [
    "MAY",
    "MUST",
    "PREFIX",
    "REQUIREMENT",
    "REQUIRES",
    "REVISION",
    "SECTION",
    "SHOULD",
    "CaseInfo",
    "Level",
    "case",
    "case_info",
    "case_marks",
    "register",
]


class Level(str, enum.Enum):
    """Requirement levels; ``marker`` is the name of the level's mark."""

    MUST = "must"
    SHOULD = "should"
    MAY = "may"

    def __str__(self) -> str:
        return self.name

    @property
    def marker(self) -> str:
        return PREFIX + self.value


MUST, SHOULD, MAY = Level.MUST, Level.SHOULD, Level.MAY

PREFIX = "vfu_"  # of every mark of the suite
REQUIREMENT = PREFIX + "requirement"
SECTION = PREFIX + "section"
REVISION = PREFIX + "revision"
REQUIRES = PREFIX + "requires"

MARKERS = (
    f"{REQUIREMENT}(id): vfio-user conformance case id, 'section/name' (set by "
    "pytest_vfiouser.case)",
    f"{SECTION}(name): vfio-user spec section of the case (select with --vfu-section)",
    f"{MUST.marker}: the case checks a MUST of the vfio-user spec (failure: FAIL)",
    f"{SHOULD.marker}: the case checks a SHOULD (failure: NON-STRICT, a FAIL with --vfu-strict)",
    f"{MAY.marker}: the case checks a MAY (failure: INFORMATIONAL)",
    f"{REVISION}(*revs): vfio-user spec revisions the case applies to, e.g. {REVISION}('0.9.2')",
    f"{REQUIRES}(*features): device features or profile hooks the vfio-user case needs "
    "(else UNIMPLEMENTED)",
)

# section/name, lower case; the name may itself contain "/" (sub-groups).
_CASE_ID = re.compile(r"[a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)+")


def register(config: pytest.Config) -> None:
    """Declare the markers (so --strict-markers accepts them)."""
    for line in MARKERS:
        config.addinivalue_line("markers", line)


def case(
    case_id: str,
    level: Level,
    *,
    requires: Iterable[str] = (),
    revisions: Iterable[str] | None = None,
) -> Callable:
    """Mark a test function as the conformance case ``case_id`` of the given level.

    Mistakes (a malformed id, an unknown level, feature, hook or revision)
    raise ValueError at import, so they show as collection errors rather than
    as silently mis-filed cases.
    """
    if not isinstance(case_id, str) or not _CASE_ID.fullmatch(case_id):
        raise ValueError(
            f"case id {case_id!r} must look like 'section/name' "
            "(lower case letters, digits, '_', '-', '.')"
        )
    if not isinstance(level, Level):
        raise ValueError(f"case {case_id}: level must be MUST, SHOULD or MAY, got {level!r}")
    if isinstance(requires, str):
        requires = (requires,)
    requires = tuple(requires)
    known = FEATURES | HOOK_NAMES
    for name in requires:
        if name not in known:
            raise ValueError(
                f"case {case_id}: unknown requirement {name!r}; known features: "
                f"{', '.join(sorted(FEATURES))}; hooks: {', '.join(sorted(HOOK_NAMES))}"
            )
    if isinstance(revisions, str):
        revisions = (revisions,)
    revisions = tuple(revisions) if revisions is not None else ()
    for rev in revisions:
        if rev not in REVISIONS:
            raise ValueError(
                f"case {case_id}: unknown revision {rev!r}; known: {', '.join(REVISIONS)}"
            )

    marks = [
        getattr(pytest.mark, REQUIREMENT)(case_id),
        # Its section: what comes before the name (client/<section>/<name>: client/<section>)
        getattr(pytest.mark, SECTION)(case_id.rsplit("/", 1)[0]),
        getattr(pytest.mark, level.marker),
    ]
    if revisions:
        marks.append(getattr(pytest.mark, REVISION)(*revisions))
    if requires:
        marks.append(getattr(pytest.mark, REQUIRES)(*requires))

    def decorate(fn: Callable) -> Callable:
        for mark in marks:
            fn = mark(fn)
        return fn

    return decorate


@dataclass(frozen=True)
class CaseInfo:
    """What the marks of one test item say; all None/empty for a plain test."""

    case_id: str | None
    section: str | None
    level: Level | None
    revisions: tuple[str, ...]
    requires: tuple[str, ...]
    requirement: str  # first docstring paragraph + the quoted spec sentence

    @property
    def is_case(self) -> bool:
        return self.case_id is not None


def case_marks(item: pytest.Item) -> tuple[str | None, str | None, tuple[str, ...]]:
    """An item's case id, section and revisions: what selection needs, cheaply."""
    mark = item.get_closest_marker(REQUIREMENT)
    case_id = str(mark.args[0]) if mark and mark.args else None
    mark = item.get_closest_marker(SECTION)
    section = str(mark.args[0]) if mark and mark.args else None
    if section is None and case_id is not None:
        section = case_id.split("/", 1)[0]
    revisions = tuple(r for m in item.iter_markers(REVISION) for r in m.args)
    return case_id, section, revisions


def case_info(item: pytest.Item) -> CaseInfo:
    """Read the case marks of an item (works for plain pytest marks too)."""
    case_id, section, revisions = case_marks(item)
    level = next((lv for lv in Level if item.get_closest_marker(lv.marker)), None)
    requires = tuple(r for m in item.iter_markers(REQUIRES) for r in m.args)
    return CaseInfo(
        case_id,
        section,
        level,
        revisions,
        requires,
        requirement_text(getattr(item, "obj", None)),
    )


def requirement_text(fn: object) -> str:
    """The first paragraph of the docstring and the paragraph starting "Spec"."""
    doc = inspect.getdoc(fn) if fn is not None else None
    if not doc:
        return ""
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc) if p.strip()]
    parts = paragraphs[:1]
    spec = next((p for p in paragraphs[1:] if p.startswith("Spec")), None)
    if spec:
        parts.append(spec)
    return "\n".join(parts)
