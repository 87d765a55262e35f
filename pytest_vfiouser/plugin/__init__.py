"""pytest-vfiouser's hooks.  The work is done in the modules named in each hook.

The package's rooms: ``_options`` (command-line and ini options, ``Settings``),
``_state`` (the run's shared state), ``_fixtures`` (what cases use),
``_markers`` (``case()`` and the markers), ``_activation`` (when the plugin
acts: a session with cases, or a vfu option), ``_selection`` (revision, section,
baseline), ``_device_params`` (parametrization over the device),
``_hookspecs`` (the implementer's hooks), ``_judge`` (outcomes to verdicts),
``_fds`` (fds the server sent where no message allows them), ``_client_session``
(client mode: the client's run and its sessions), ``_discovery``
(device discovery, and what its failure prevents),
``_artifacts`` (log files of cases that did not pass), ``_interruption`` (a run
stopped early: signals, Ctrl-C, an internal error), ``_terminal`` (progress, tracebacks
and the verdict summary on the terminal), ``_junit`` (JUnit XML for CI dashboards).

May import: every package of the suite but ``cli``; the reference server only
by name (its hook module, for the embedded target).

Loaded through the ``pytest11`` entry point, so it is loaded by every pytest
run of an environment where the package is installed; it stays inert (no
server is started, nothing is printed, no report changed, no Hypothesis imported)
unless a vfu option is given or a test is a conformance case or uses a ``vfu_*``
fixture (``_activation``): only then does it handle SIGINT, SIGTERM and SIGHUP
(so that an interrupted run still stops its servers and writes its reports).
"""

from __future__ import annotations

import dataclasses
import sys

import pytest

from pytest_vfiouser import fuzz, report
from pytest_vfiouser.target import COULD_NOT_START, TargetManager
from pytest_vfiouser.verdict import ExitStatus

from . import (
    _activation,
    _artifacts,
    _client_session,
    _device_params,
    _fixtures,
    _hookspecs,
    _judge,
    _junit,
    _markers,
    _options,
    _selection,
    _terminal,
)
from ._fixtures import observe, watch_client
from ._interruption import Interruption
from ._judge import case_name
from ._markers import MAY, MUST, SHOULD, Level, case, requirement_text
from ._options import DEFAULT_TIMEOUT, Settings, option_help
from ._selection import unselected_module
from ._state import RunState, get_state, set_state

__all__ = [
    "DEFAULT_TIMEOUT",
    "MAY",
    "MUST",
    "SHOULD",
    "Level",
    "RunState",
    "Settings",
    "case",
    "case_name",
    "get_state",
    "observe",
    "option_help",
    "requirement_text",
    "unselected_module",
    "watch_client",
]

_FIXTURES_PLUGIN = "vfiouser-fixtures"
_RECORDS_PLUGIN = "vfiouser-records"
_INTERRUPTION_PLUGIN = "vfiouser-interruption"
_JUNIT_PLUGIN = "vfiouser-junit"


def pytest_addoption(parser: pytest.Parser) -> None:
    """--vfu-* options and their ini keys (options.py)."""
    _options.register(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """pytest_vfu_trigger_irq, pytest_vfu_trigger_dma, pytest_vfu_device_state (hookspecs.py)."""
    pluginmanager.add_hookspecs(_hookspecs)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Register markers, validate the options (UsageError), set up the run state. First:
    the fuzz profiles are registered before Hypothesis's plugin loads the one that
    --hypothesis-profile names (only then: registering them imports Hypothesis)."""
    if fuzz.mode_of_profile(config.getoption("--hypothesis-profile", None)) is not None:
        fuzz.register_profiles()
    _markers.register(config)
    if getattr(config.option, "help", False):
        return
    settings = _hypothesis_profile(config, Settings.from_config(config))
    state = RunState(config, settings, TargetManager(settings))
    state.manager.probe = state.probe  # the target layer has no client of its own
    set_state(config, state)
    _artifacts.configure(config, settings.json_path)  # the logs directory of the reports
    # Its pytest_runtest_logreport collects the final verdicts (on the xdist
    # controller: from the workers' reports).
    config.pluginmanager.register(state.records, _RECORDS_PLUGIN)
    interruption = Interruption(state)
    config.pluginmanager.register(interruption, _INTERRUPTION_PLUGIN)
    _terminal.register(config, state)
    if not config.pluginmanager.has_plugin(_JUNIT_PLUGIN):
        config.pluginmanager.register(_junit, _JUNIT_PLUGIN)
    if settings.json_path is not None and not hasattr(config, "workerinput"):
        state.json = report.JsonWriter(settings.json_path, state, state.targets)

    def judged(record) -> None:  # a final verdict (here, or from an xdist worker)
        interruption.watch()
        if state.json is not None:
            state.json.changed()

    state.records.on_case = judged
    if not config.pluginmanager.has_plugin(_FIXTURES_PLUGIN):
        config.pluginmanager.register(_fixtures, _FIXTURES_PLUGIN)
        config.pluginmanager.register(_device_params, "vfiouser-device-params")
        config.pluginmanager.register(_client_session, "vfiouser-client-session")
    if settings.explicit:  # else at collection, if it collects a case (_activation)
        _activation.activate(config, state)


def pytest_report_header(config: pytest.Config) -> list[str] | None:
    """The target, spec and profile, when some --vfu option was given."""
    state = _state(config)
    if state is None or not state.settings.explicit:
        return None
    s = state.settings
    if s.client_mode:
        peer = f"client {s.client}" if s.client else f"transcript {s.transcript}"
        return [f"vfio-user client mode: {peer}; spec {s.spec}; the reference server as peer"]
    return [
        f"vfio-user: {state.manager.describe()}; spec {s.spec}; profile {s.profile.name}; "
        f"restart {s.restart}; timeout {s.timeout:g} s{'; strict' if s.strict else ''}"
    ]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Activate in a session with cases; deselect other revisions and sections; check
    --vfu-section and the baseline."""
    state = _state(config)
    if state is not None:
        _activation.collected(config, state, items)
    if state is not None and state.active:
        _selection.select(config, items, state)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtestloop(session: pytest.Session):
    """A session that runs conformance cases handles the signals that would end it (on the
    xdist controller: when a --vfu option was given; else at the first verdict)."""
    state = _state(session.config)
    # No .hypothesis/ where the suite runs. Hypothesis is imported by then if a collected
    # module uses it (the fuzz cases do); a run without such cases does without (0.3 s).
    if (
        state is not None
        and _terminal.conformance_session(session.items)
        and "hypothesis" in sys.modules
    ):
        session.config.add_cleanup(fuzz.private_storage())
    if state is not None and (
        any(_judge.relevant(item) for item in session.items)
        or (_controller(session.config) and state.settings.explicit)
    ):
        _interruption(session.config).watch()
    if (
        state is not None
        and state.active
        and session.items
        and not session.config.option.collectonly
    ):
        _artifacts.start(session.config)
    return (yield)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Each phase's outcome to a verdict (_judge); the log files of failures (_artifacts)."""
    outcome = yield
    state = _state(item.config)
    if state is None:
        return
    phase_report = outcome.get_result()
    _judge.judge(item, call, phase_report, state)
    _artifacts.after_phase(item, phase_report)


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the servers; hand the bookkeeping to the xdist controller, or write the JSON report."""
    state = _state(session.config)
    if state is None:
        return
    state.manager.stop_all()
    mine = state.own_targets()
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["vfu_targets"] = mine
        workeroutput["vfu_usage_error"] = state.usage_error
        workeroutput["vfu_fuzz"] = fuzz.worker_output(session.config)
        workeroutput["vfu_interrupted"] = state.interrupted
        return
    if state.usage_error is not None:
        session.config.get_terminal_writer().line(f"ERROR: {state.usage_error}", red=True)
        session.exitstatus = pytest.ExitCode.USAGE_ERROR
        return
    if state.manager.starts or mine["notes"] or mine["negotiated"] or not state.target_summaries:
        state.target_summaries.append(mine)
    targets = report.combine_targets(state.target_summaries)
    if state.json is not None:
        state.json.finish(targets, state.interrupted)
    # A run that could not judge the server at all has its own status (verdict.ExitStatus).
    stopped = any(note.startswith(COULD_NOT_START) for note in targets["notes"])
    if stopped and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        session.exitstatus = ExitStatus.TARGET_NOT_STARTED


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node, ids: list[str]) -> None:
    """xdist: a worker collected; before any case is scheduled, empty the last run's logs."""
    state = _state(node.config)
    if state is not None and state.active and ids:
        _artifacts.start(node.config)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """xdist: receive a worker's target bookkeeping (and a usage error it found)."""
    state = _state(node.config)
    output = getattr(node, "workeroutput", None) or {}
    if state is not None and output.get("vfu_targets"):
        state.target_summaries.append(output["vfu_targets"])
    if state is not None and output.get("vfu_usage_error"):
        state.usage_error = output["vfu_usage_error"]
    if state is not None:
        fuzz.merge_worker_output(node.config, output.get("vfu_fuzz"))
        worker = getattr(node, "gateway", None)
        _interruption(node.config).worker_interrupted(
            output.get("vfu_interrupted"), getattr(worker, "id", "a worker")
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    """Stop any server still running (idempotent)."""
    state = _state(config)
    if state is not None:
        state.manager.stop_all()


def _hypothesis_profile(config: pytest.Config, settings: Settings) -> Settings:
    """``--hypothesis-profile vfu-fuzz-campaign`` (or ``vfu-fuzz-ci``) chooses the fuzz
    cases' profile as ``--vfu-fuzz`` does; the two naming different ones is a usage error.
    An example database needs the campaign profile: ci is derandomized, and Hypothesis
    keeps no examples for a derandomized run."""
    profile = config.getoption("--hypothesis-profile", None)
    mode = fuzz.mode_of_profile(profile)
    if mode is not None and mode != settings.fuzz:
        if getattr(config.option, "vfu_fuzz", None) or config.getini("vfu_fuzz"):
            raise pytest.UsageError(
                f"--vfu-fuzz {settings.fuzz} and --hypothesis-profile {profile} choose "
                "different fuzz profiles: give one of them"
            )
        settings = dataclasses.replace(settings, fuzz=mode)
    if settings.fuzz_db is not None and settings.fuzz != "campaign":
        raise pytest.UsageError(
            f"--vfu-fuzz-db: the {settings.fuzz} fuzz effort is derandomized (the same "
            "examples every run), and Hypothesis keeps no database for it: give "
            "--vfu-fuzz campaign"
        )
    return settings


def _interruption(config: pytest.Config) -> Interruption:
    return config.pluginmanager.get_plugin(_INTERRUPTION_PLUGIN)


def _controller(config: pytest.Config) -> bool:
    """Whether this is the xdist controller (its workers run the cases)."""
    return config.pluginmanager.has_plugin("dsession") and not hasattr(config, "workerinput")


def _state(config: pytest.Config) -> RunState | None:
    try:
        return get_state(config)
    except RuntimeError:
        return None
