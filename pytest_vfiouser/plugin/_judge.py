"""Verdicts: the one place that turns pytest outcomes into conformance verdicts.

``judge()`` is called from pytest_runtest_makereport for every phase of a
test that is a case (or uses a ``vfu_*`` fixture).  How verdicts map onto
pytest outcomes:

=============  =======================================  ==================
verdict        when                                     pytest outcome
=============  =======================================  ==================
PASS           the case passed                          passed
FAIL           a MUST (or unlevelled test) not met;     failed
               a SHOULD not met under --vfu-strict
NON-STRICT     a SHOULD not met                         xfailed "NON-STRICT: ..."
INFORMATIONAL  a MAY not met; or a passing case that     xfailed "INFORMATIONAL: ..."
               recorded observations (vfu_observe)      (passed, for observations)
UNIMPLEMENTED  the device lacks a required feature or   skipped (reason)
               hook, or the case skipped itself
CRASH          the server was killed by a signal        failed (error if at teardown)
HANG           a reply did not come in time             failed
BASELINE       a failure the profile's [baseline]       xfailed "baseline: reason"
               expects (its id, or its family's)
FIXED          a case its own baseline entry names      passed
               passed (of a family: PASS; the summary
               says when every member passed)
ERROR          setup/teardown trouble: the server did   error
               not start, a fixture raised; a harness
               error: an implementer's hook raised,
               Hypothesis failed (not the test's own
               failure)
NOT-RUN        the target is gone for the run (it      skipped (reason)
               could not start, or stopped answering),
               or what the case needs of it (VERSION
               or device discovery failed); the reason
               names the case judged for it
=============  =======================================  ==================

A case whose clients received fds where no message allows them fails after
its call phase, unless it failed already by itself (``_fds``).

What the server does wrong in a case's setup is the server's: a VERSION or a
device discovery that fails is judged once (``ServerFault``: FAIL, HANG or
CRASH, with the sentence it breaks) and the cases it prevents are NOT-RUN
(``_discovery``); any other client error in setup is a FAIL.

FAIL, CRASH, HANG and ERROR fail the run; nothing else does (``verdict.py``
states each verdict's rank, outcome and whether it fails the run).  The final
verdict of a test (the worst of its phases) goes into
``report.user_properties`` of its teardown report (so JUnit XML carries it);
every phase report carries its ``CaseRecord`` (``report.CaseRecord.of``).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from pytest_vfiouser.client import ClientError, ConnectionClosed, Timeout
from pytest_vfiouser.report import CaseRecord, case_key, clip_message
from pytest_vfiouser.target import DEATH_WAIT, TargetCrashed, TargetNotRun, TargetUnavailable
from pytest_vfiouser.verdict import Unmet, Verdict

from ._fds import stray_failure
from ._markers import MAY, MUST, REQUIREMENT, SHOULD, CaseInfo, Level, case_info, case_marks

__all__ = [
    "HANDLE_KEY",
    "OBSERVATIONS_KEY",
    "ServerFault",
    "case_name",
    "hook_raised",
    "judge",
    "relevant",
]

_MESSAGE_LIMIT = 2000

HANDLE_KEY = pytest.StashKey["object"]()  # the item's TargetHandle (set by vfu_target)
OBSERVATIONS_KEY = pytest.StashKey[list]()  # texts recorded by vfu_observe
_JUDGEMENT_KEY = pytest.StashKey["_Judgement"]()


_HOOK_ATTR = "_vfu_raised_by_hook"


class ServerFault(Exception):
    """The server's fault found outside the case's own requests (its VERSION or device
    discovery failed), raised in the setup of the case judged for it: ``verdict`` (FAIL,
    HANG, CRASH) and the message, which quotes the spec."""

    def __init__(self, verdict: Verdict, message: str):
        super().__init__(message)
        self.verdict = verdict


def hook_raised(exc: BaseException, name: str) -> None:
    """Mark ``exc`` as raised by the implementer's hook ``name``: if the case lets it
    through, it is a harness error (ERROR), not a verdict on the server."""
    setattr(exc, _HOOK_ATTR, name)
    exc.add_note(f"(raised by the hook {name}: the implementer's code, not the server)")


@dataclass
class _Judgement:
    info: CaseInfo
    verdict: Verdict | None = None
    message: str = ""

    def add(self, verdict: Verdict, message: str) -> None:
        if self.verdict is None or verdict.rank > self.verdict.rank:
            self.verdict, self.message = verdict, message


def case_name(item: pytest.Item) -> str:
    """The case's id in the reports: ``section/name[params]`` (else its node id)."""
    return case_key(case_marks(item)[0], item.nodeid)


def relevant(item: pytest.Item) -> bool:
    """Whether the item gets a verdict: a case, or a test using a vfu_* fixture."""
    if item.get_closest_marker(REQUIREMENT) is not None:
        return True
    return any(name.startswith("vfu_") for name in getattr(item, "fixturenames", ()))


def judge(item: pytest.Item, call: pytest.CallInfo, report: pytest.TestReport, state) -> None:
    """Set the verdict of one phase report (and the final one at teardown)."""
    j = item.stash.get(_JUDGEMENT_KEY, None)
    if j is None:
        if not relevant(item):
            return
        j = item.stash[_JUDGEMENT_KEY] = _Judgement(case_info(item))
    settings = state.settings
    entry = settings.profile.baseline_entry(case_name(item)) if j.info.case_id else None
    baseline = entry[1] if entry is not None else None
    handle = item.stash.get(HANDLE_KEY, None)
    observations = item.stash.get(OBSERVATIONS_KEY, [])

    verdict = None
    # Fds the server sent where no message allows them fail a case that would pass,
    # skip or fail a SHOULD; one that failed already keeps its own verdict.
    stray = stray_failure(item) if report.when == "call" else None
    if stray is not None and not report.failed:
        report.outcome, report.longrepr = "failed", stray
        if hasattr(report, "wasxfail"):
            del report.wasxfail
        verdict, message = Verdict.FAIL, stray
    if report.failed and report.when in ("setup", "call"):
        if verdict is None:
            verdict, message = _failure(call.excinfo, handle, j.info, settings.strict, report)
            if stray is not None and not verdict.fails_run:
                message = f"{stray}\n(the case found too, a {verdict}: {_first_line(message)})"
                verdict, report.longrepr = Verdict.FAIL, message
        if baseline is not None and verdict != Verdict.ERROR:
            verdict, message = (
                Verdict.BASELINE,
                f"baseline: {baseline} (was {verdict}: {_first_line(message)})",
            )
        if verdict.outcome == "xfailed":  # pytest's xfailed: skipped, with a reason
            report.outcome = "skipped"
            report.wasxfail = (
                message if verdict == Verdict.BASELINE else f"{verdict}: {_first_line(message)}"
            )
    elif report.failed:  # teardown
        exc = call.excinfo.value if call.excinfo else None
        if isinstance(exc, TargetCrashed):
            verdict, message = Verdict.CRASH, str(exc)
            report.longrepr = f"{item.nodeid}: {message}"
        else:
            verdict, message = Verdict.ERROR, _exc_message(call.excinfo)
    elif report.skipped and report.when != "teardown":
        if call.excinfo is not None and isinstance(call.excinfo.value, TargetNotRun):
            verdict, message = Verdict.NOT_RUN, str(call.excinfo.value)
        elif hasattr(report, "wasxfail"):
            verdict, message = Verdict.BASELINE, report.wasxfail or "xfail"
        else:
            verdict, message = Verdict.UNIMPLEMENTED, _skip_reason(report)
    elif report.when == "call":  # passed
        if hasattr(report, "wasxfail"):
            verdict, message = Verdict.FIXED, f"unexpectedly passed (xfail: {report.wasxfail})"
        elif entry is not None and _names_alone(entry[0], item):
            verdict, message = Verdict.FIXED, f"passes, but is baselined: {baseline}"
        elif observations:
            verdict, message = Verdict.INFORMATIONAL, "; ".join(observations)
        else:
            verdict, message = Verdict.PASS, ""
    if verdict is not None:
        j.add(verdict, clip_message(message, _MESSAGE_LIMIT))

    if report.when == "teardown":
        _finish(item, j, report, handle, observations)
    else:
        _record(item, j, verdict, message if verdict else "", observations, {}).attach(report)


def _names_alone(entry: str, item: pytest.Item) -> bool:
    """Whether the baseline entry names this case only: its parametrization, or a case that
    has none. A passing member of a family is no FIXED: the others may still fail (the
    summary says when every one passed)."""
    return entry == case_name(item)


def _failure(excinfo, handle, info: CaseInfo, strict: bool, report) -> tuple[Verdict, str]:
    """Classify a failed setup or call."""
    exc = excinfo.value if excinfo is not None else None
    if isinstance(exc, ServerFault):
        report.longrepr = str(exc)  # the message says it all; the traceback is ours
        return exc.verdict, str(exc)
    if isinstance(exc, TargetUnavailable):
        report.longrepr = str(exc)
        return Verdict.ERROR, str(exc)
    if _is_hang(exc):
        if handle is not None:
            handle.hung = True
        message = _exc_message(excinfo)
        tail = handle.stderr_tail(10) if handle is not None else ""
        if tail:
            report.sections.append(("vfio-user server stderr (last lines)", tail))
        return Verdict.HANG, f"no reply in time: {message}"
    crash = None
    if handle is not None and not handle.crash_reported:
        crash = handle.crash(wait=DEATH_WAIT if _is_disconnect(exc) else 0.0)
    if crash is not None:
        handle.crash_reported = True
        report.sections.append(("vfio-user server crash", crash.message()))
        return Verdict.CRASH, crash.message()
    message = _exc_message(excinfo)
    hook = getattr(exc, _HOOK_ATTR, None)
    if hook is not None:
        return Verdict.ERROR, f"the hook {hook} raised {message}"
    if report.when == "setup" and isinstance(exc, ClientError):
        return Verdict.FAIL, message  # what the server did to a fixture's requests
    if report.when == "setup" or _is_harness_error(exc):
        return Verdict.ERROR, message
    level = _rests_on(exc, info.level)
    if level is None or level is Level.MUST:
        return Verdict.FAIL, message
    if level is SHOULD:
        return (Verdict.FAIL if strict else Verdict.NON_STRICT), message
    return Verdict.INFORMATIONAL, message


_STRENGTH = {MUST: 3, SHOULD: 2, MAY: 1}


def _rests_on(exc, level: Level | None) -> Level | None:
    """The level a failure rests on: the case's, or the weaker one the ``Unmet`` raised names
    (only the one raised: a failure found while handling another does not weaken it)."""
    if not (isinstance(exc, Unmet) and exc.level):
        return level
    weaker = Level(exc.level)
    if level is None or _STRENGTH[weaker] < _STRENGTH[level]:
        return weaker
    return level


def _finish(item, j: _Judgement, report, handle, observations: list[str]) -> None:
    resources = handle.resources() if handle is not None else {}
    j.verdict = j.verdict or Verdict.PASS
    record = _record(item, j, j.verdict, j.message, observations, resources)
    props = _properties(record)
    item.user_properties.extend(props)
    report.user_properties.extend(props)
    record.attach(report)


def _properties(record: CaseRecord) -> list[tuple[str, str]]:
    """The final record as JUnit properties."""
    props = [("vfu_verdict", str(record.verdict))]
    if record.case_id:
        props += [
            ("vfu_case", record.case_id),
            ("vfu_section", record.section or ""),
            ("vfu_level", record.level or ""),
        ]
        if record.revisions:
            props.append(("vfu_revision", " ".join(record.revisions)))
    if record.requirement:
        props.append(("vfu_requirement", record.requirement))
    if record.message:
        props.append(("vfu_message", record.message))
    props += [("vfu_observation", text) for text in record.observations]
    return props + sorted(record.resources.items())


def _record(item, j: _Judgement, verdict, message, observations, resources) -> CaseRecord:
    info = j.info
    return CaseRecord(
        nodeid=item.nodeid,
        verdict=verdict,
        case_id=info.case_id,
        section=info.section,
        level=str(info.level) if info.level else None,
        revisions=list(info.revisions),
        requirement=info.requirement,
        message=message,
        observations=list(observations),
        resources=resources,
    )


def _chain(exc):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _is_hang(exc) -> bool:
    for e in _chain(exc):
        if isinstance(e, Timeout):
            return True
        if isinstance(e, pytest.fail.Exception) and "pytest-timeout" in str(e):
            return True
    return False


def _is_harness_error(exc) -> bool:
    """Hypothesis itself failed (a strategy, a health check, an invalid argument), not
    the test: its FlakyFailure holds the test's own.

    Only the exception raised counts, not what it was raised from: a failure the test
    found (the fuzzer's FuzzFailure) may say that Hypothesis failed while replaying it."""
    mro = [f"{c.__module__}.{c.__qualname__}" for c in type(exc).__mro__]
    return "hypothesis.errors.HypothesisException" in mro and (
        "hypothesis.errors.FlakyFailure" not in mro
    )


def _is_disconnect(exc) -> bool:
    return any(isinstance(e, (ConnectionClosed, ConnectionError)) for e in _chain(exc))


def _exc_message(excinfo) -> str:
    if excinfo is None:
        return ""
    try:
        return excinfo.exconly().strip()
    except Exception:  # pragma: no cover - a broken __str__
        return excinfo.typename


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= 300 else line[:297] + "..."


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
        return reason[len("Skipped: ") :] if reason.startswith("Skipped: ") else reason
    return str(longrepr or "skipped")
