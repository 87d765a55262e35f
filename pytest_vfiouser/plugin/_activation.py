"""When the plugin acts: in a session that runs conformance cases, or is given a vfu option.

The plugin is loaded (``pytest11``) by every pytest run of an environment where the
suite is installed. A run of another project must not notice it: no verdict columns
or matrix in its HTML report, no hooks module imported, no stale logs removed. So what
only a conformance session needs is set up by ``activate``: at pytest_configure when
some vfu option is given (command line or ini: ``Settings.explicit``), else at
collection, when the items collected include a case (``collected``). An xdist
controller collects nothing: there, only a vfu option activates the plugin.

What activation sets up: the HTML report's verdict columns and matrix (when pytest-html
writes one) and the implementer's hooks (the module the profile names; the embedded
reference server's).
"""

from __future__ import annotations

import importlib

import pytest

from pytest_vfiouser import report

from ._judge import relevant

__all__ = ["activate", "collected"]

_HTML_PLUGIN = "vfiouser-html"
_REFERENCE_HOOKS_PLUGIN = "vfiouser-reference-hooks"
_REFERENCE_HOOKS = "reference_server.pytest_hooks"


def collected(config: pytest.Config, state, items: list[pytest.Item]) -> None:
    """At collection (before any deselection): activate if some item is a case."""
    if not state.active and any(relevant(item) for item in items):
        activate(config, state, late=True)


def activate(config: pytest.Config, state, late: bool = False) -> None:
    """Set up what a conformance session needs (once). ``late``: after pytest_sessionstart,
    when pytest-html has already asked for the report's title and columns."""
    if state.active:
        return
    state.active = True
    settings = state.settings
    if getattr(config.option, "htmlpath", None) and config.pluginmanager.has_plugin("html"):
        html = report.HtmlReport(config, state)
        config.pluginmanager.register(html, _HTML_PLUGIN)
        if late:
            _replay_html_start(config, html)
    if settings.profile.hooks:
        _register_once(config, _import_hooks(settings.profile), settings.profile.hooks)
    if settings.embedded:  # whatever the profile: the embedded device's hooks, by name
        try:
            hooks = importlib.import_module(_REFERENCE_HOOKS)
        except ImportError:
            pass
        else:
            _register_once(config, hooks, _REFERENCE_HOOKS_PLUGIN)


def _replay_html_start(config: pytest.Config, html) -> None:
    """Give the report's title and columns to pytest-html, whose session start asked
    for them before the collection told that this is a conformance session."""
    for plugin in config.pluginmanager.get_plugins():
        data = getattr(plugin, "_report", None)  # pytest-html 4's ReportData
        if type(plugin).__module__.startswith("pytest_html.") and data is not None:
            html.pytest_html_report_title(report=data)
            cells = list(data.table_header)
            html.pytest_html_results_table_header(cells=cells)
            data.table_header = cells


def _register_once(config: pytest.Config, module, name: str) -> None:
    """Register a hook module unless it already is (under any name: -p, a profile, embedded)."""
    if not config.pluginmanager.is_registered(module) and not config.pluginmanager.has_plugin(name):
        config.pluginmanager.register(module, name)


def _import_hooks(profile):
    """The module a profile names in ``[profile] hooks``; a usage error if it does not import."""
    try:
        return importlib.import_module(profile.hooks)
    except Exception as e:
        raise pytest.UsageError(
            f"{profile.path or profile.name}: profile.hooks: cannot import {profile.hooks!r}: "
            f"{type(e).__name__}: {e}"
        ) from None
