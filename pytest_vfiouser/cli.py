"""``vfio-user-conformance``: run the installed conformance suite against a server.

    vfio-user-conformance                                  # the embedded reference server
    vfio-user-conformance --vfu-server "my-server --socket {socket}" --vfu-profile dev.toml
    vfio-user-conformance --vfu-socket /run/my-server.sock --vfu-section device_info -x
    vfio-user-conformance compare a/conformance.json b/conformance.json --html compare.html
    vfio-user-conformance --help                           # its options, subcommands, exit statuses

A front to ``pytest <the installed conformance package>``: every other argument is
passed to pytest (-k, -m vfu_must, -x, -n 4, ...). The pytest configuration file
pytest would use in the current directory applies (its ``vfu_*`` keys, addopts...;
the session header names it), or the one ``-c FILE`` names. Reports go to
``reports/`` under the current directory unless --html, --junitxml or --vfu-json say
otherwise:

    reports/conformance.html   self-contained HTML (pytest-html)
    reports/conformance-logs/  wire logs, reproducers, stderr of the cases that did not pass
    reports/conformance.json   verdicts and run metadata
    reports/junit.xml          JUnit XML, verdicts as testcase properties

A run that judges no case (--collect-only, a -k or -m that selects nothing) writes no
report: the last run's stay. What is wrong with the command line (an option, a path
that cannot be written, a -k or -m that does not parse, an unknown --vfu-section) is
a usage error before the session starts. ``--collect-only -q`` lists the case ids.

The exit statuses: ``verdict.ExitStatus`` (``--help`` lists them).
"""

from __future__ import annotations

import itertools
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest

# pytest's own search for the configuration file of a directory, and its JUnit writer's
# key: private names, used because the rules and the writer are pytest's own.
from _pytest.config.findpaths import locate_config
from _pytest.junitxml import xml_key

import conformance
import conformance_client
from pytest_vfiouser import __version__
from pytest_vfiouser.plugin import case_name, get_state, option_help
from pytest_vfiouser.protocol import REVISIONS
from pytest_vfiouser.report import compare_main, unwritable
from pytest_vfiouser.verdict import ExitStatus

__all__ = ["DEFAULT_ARGS", "REPORT_ARGS", "help_text", "main"]

REPORT_ARGS = (
    "--html=reports/conformance.html",
    "--self-contained-html",
    "--junitxml=reports/junit.xml",
    "--vfu-json=reports/conformance.json",
)
# vfio-user-conformance client: the client cases, and reports of their own.
CLIENT_PACKAGE = "conformance_client"
CLIENT_REPORT_ARGS = (
    "--html=reports/client.html",
    "--self-contained-html",
    "--junitxml=reports/client-junit.xml",
    "--vfu-json=reports/client.json",
)
DEFAULT_ARGS = (
    "-o",
    "timeout=300",  # pytest-timeout: a backstop; replies are bounded by --vfu-timeout
    "-o",
    "junit_suite_name=vfio-user-conformance",
    "-o",
    "render_collapsed=passed,skipped",  # pytest-html: failures (and xfails) open
    # The suite's own file and function names, whatever the configuration file says.
    "-o",
    "python_files=test_*.py",
    "-o",
    "python_functions=test_*",
    # This module imported pytest_vfiouser before pytest could mark it for rewriting.
    "-W",
    "ignore:Module already imported so cannot be rewritten:pytest.PytestAssertRewriteWarning",
)
# The suite's marks before they had the prefix vfu_: in -m, a usage error naming the mark.
_UNPREFIXED = ("must", "should", "may", "section", "requirement", "revision", "requires")
_IDENT = re.compile(r"[\w:+.\-\[\]\\/]+")


def help_text() -> str:
    """What ``vfio-user-conformance --help`` prints."""

    def rows(pairs, width: int = 26) -> list[str]:
        indent = " " * (width + 4)
        out = []
        for left, right in pairs:
            text = _fill(right, indent)
            if len(left) <= width:
                out.append(f"  {left:<{width}}  {text[len(indent) :]}")
            else:
                out += [f"  {left}", text]
        return out

    return "\n".join(
        [
            "usage: vfio-user-conformance [--vfu-* options] [pytest options]",
            '       vfio-user-conformance client --vfu-client "CMD ... {socket}" [options]',
            "       vfio-user-conformance compare RUN.json RUN.json ... [options]",
            "",
            _fill(
                "Runs the installed vfio-user conformance suite (spec revisions "
                f"{', '.join(REVISIONS)}) against a server, by default the embedded reference "
                "server, and writes reports/conformance.html, reports/conformance.json and "
                "reports/junit.xml (-p no:html, -p no:junitxml: not those two)."
            ),
            "",
            "vfio-user options (each also an ini key: vfu_server = ... in pytest.ini):",
            *rows(option_help()),
            "",
            "subcommands:",
            *rows(
                [
                    (
                        "client",
                        "judge a vfio-user client instead: the reference server plays the "
                        "device (--vfu-device) for the --vfu-client command, and the client "
                        "cases read what it sent (reports/client.html, client.json, "
                        "client-junit.xml)",
                    ),
                    (
                        "compare RUN.json ...",
                        "several runs (their JSON reports) side by side: "
                        "vfio-user-conformance compare --help",
                    ),
                ]
            ),
            "",
            "exit statuses:",
            *rows(((str(int(s)), s.text) for s in ExitStatus), width=1),
            "",
            _fill(
                "The configuration file pytest would use in the current directory applies "
                "(pytest.ini, pyproject.toml, tox.ini, setup.cfg: the session header names it), "
                "or the one -c FILE names. Every other argument goes to pytest (-k EXPR, "
                "-m vfu_must, -x, -n 4, --collect-only -q to list the case ids...): see "
                "pytest --help."
            ),
            "",
            *rows([("-h, --help", "this text"), ("-V, --version", "the suite's version")]),
        ]
    )


def _fill(text: str, indent: str = "") -> str:
    return textwrap.fill(
        text,
        100,
        initial_indent=indent,
        subsequent_indent=indent,
        break_on_hyphens=False,
        break_long_words=False,
    )


def _suite_root() -> Path:
    return Path(conformance.__file__).resolve().parent.parent


def _user_config(args: list[str]) -> list[str]:
    """``-c FILE``: the configuration file pytest would use in the current directory (its
    own search, from the current directory up), unless the arguments name one; else no
    file at all, so that none is looked for from the installed suite's folder up."""
    for a in args:
        if a in ("-c", "--config-file") or a.startswith("--config-file="):
            return []
        if a.startswith("-c") and not a.startswith("--"):  # -cFILE
            return []
    cwd = Path.cwd()
    try:
        found = locate_config(cwd, [cwd])
    except TypeError:  # pytest < 8.1: locate_config(args)
        found = locate_config([cwd])
    inipath = found[1]
    return ["-c", str(inipath) if inipath is not None else os.devnull]


def _collecting(args: list[str]) -> bool:
    """Whether pytest only lists (cases, fixtures, marks): no case will be judged."""
    listings = ("--collect-only", "--co", "--fixtures", "--fixtures-per-test", "--markers")
    return any(a in listings for a in args)


def _disabled(args: list[str]) -> set[str]:
    """The plugins ``-p no:NAME`` turns off."""
    names = [b for a, b in itertools.pairwise(args) if a == "-p"]
    names += [a[2:] for a in args if a.startswith("-pno:")]
    return {n.removeprefix("no:") for n in names if n.startswith("no:")}


def _reports(reports: tuple[str, ...], args: list[str]) -> list[str]:
    """The default report arguments, but those of a report plugin that is turned off."""
    off = _disabled(args)
    html = {"html", "pytest_html"} & off
    return [
        a
        for a in reports
        if not (html and a.startswith(("--html", "--self-contained-html")))
        and not ("junitxml" in off and a.startswith("--junitxml"))
    ]


def _quiet(args: list[str]) -> bool:
    return any(a == "--quiet" or re.fullmatch(r"-q+", a) for a in args)


class _Front:
    """The command's pytest plugin: its checks before the session, the session header's
    configuration line, the listing of --collect-only -q, the reports of a run that
    judged no case, and the verdicts that make the exit status."""

    def __init__(self, listing: bool) -> None:
        self.listing = listing  # --collect-only -q: print the case ids (no terminal plugin)
        self.ran = False  # False for --collect-only, --fixtures ...
        self.cases = 0
        self.failing = 0
        self.withheld = False
        self.deselected = 0

    # -- before the session: usage errors, before its header
    @pytest.hookimpl(tryfirst=True)
    def pytest_cmdline_main(self, config: pytest.Config) -> None:
        """The report paths of other plugins, before they create their directories."""
        for option, value in (
            ("--html", getattr(config.option, "htmlpath", None)),
            ("--junitxml", getattr(config.option, "xmlpath", None)),
        ):
            if value:
                why = unwritable(os.path.expanduser(os.path.expandvars(value)))
                if why is not None:
                    raise pytest.UsageError(f"{option}: {why}")

    @pytest.hookimpl(trylast=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        """-k and -m (pytest's own check, run now rather than after collection), the marks
        as they were named before their prefix, --vfu-section (the installed suite's)."""
        if getattr(config.option, "help", False):
            return
        config.pluginmanager.get_plugin("mark").pytest_collection_modifyitems(
            items=[], config=config
        )
        _check_marks(config)
        for package in (conformance, conformance_client):  # the server's cases, the client's
            own = [str(Path(package.__file__).resolve().parent)]
            if [str(Path(a).resolve()) for a in config.args] != own:  # cases of the user's too
                continue
            sections = get_state(config).settings.sections
            unknown = [s for s in sections if s not in package.SECTIONS]
            if unknown:
                raise pytest.UsageError(
                    f"--vfu-section: unknown section {', '.join(map(repr, unknown))}; "
                    f"known sections: {', '.join(package.SECTIONS)}"
                )

    def pytest_report_header(self, config: pytest.Config) -> str:
        inipath = config.inipath
        if inipath is None or str(inipath) == os.devnull:
            return f"vfio-user-conformance: no configuration file (none from {Path.cwd()} up)"
        return f"vfio-user-conformance: configuration file {inipath}"

    # -- --collect-only -q
    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.deselected += len(items)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if self.listing:
            for item in session.items:
                print(case_name(item))
            deselected = f" ({self.deselected} deselected)" if self.deselected else ""
            print(f"{len(session.items)} cases{deselected}")

    def pytest_collectreport(self, report) -> None:
        if self.listing and report.failed:
            print(report.longreprtext, file=sys.stderr)

    # -- a run that judges no case leaves the last run's reports
    @pytest.hookimpl(wrapper=True)
    def pytest_collection_modifyitems(self, config: pytest.Config):
        try:
            return (yield)
        except pytest.UsageError:
            self._withhold(config)
            raise

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session):
        result = yield  # not on an interruption: that run's reports are written
        state = get_state(session.config)
        if not state.records.cases and state.interrupted is None:
            self._withhold(session.config)
        return result

    def _withhold(self, config: pytest.Config) -> None:
        """Write none of the reports: ours (JSON), pytest-html's, pytest's JUnit XML."""
        self.withheld = True
        get_state(config).json = None
        for plugin in config.pluginmanager.get_plugins():
            if type(plugin).__module__.startswith("pytest_html.") and hasattr(plugin, "_report"):
                config.pluginmanager.unregister(plugin)
        xml = config.stash.get(xml_key, None)
        if xml is not None:
            del config.stash[xml_key]
            config.pluginmanager.unregister(xml)

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.withheld:
            terminalreporter.write_line(
                "vfio-user-conformance: no case was judged: no report written (the last run's stay)"
            )

    # -- the verdicts, at the end of the run (on the xdist controller)
    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        config = session.config
        self.ran = not (
            config.option.collectonly
            or getattr(config.option, "showfixtures", False)
            or getattr(config.option, "show_fixtures_per_test", False)
        )
        try:
            records = get_state(config).records
        except RuntimeError:
            return
        self.cases = len(records.cases)
        self.failing = len(records.failing())


def _check_marks(config: pytest.Config) -> None:
    """-m with a mark named as before the prefix vfu_ (-m must): a usage error naming the
    mark meant, unless the configuration declares a mark of that name."""
    expression = config.option.markexpr or ""
    declared = {re.split(r"[(:]", line, maxsplit=1)[0].strip() for line in config.getini("markers")}
    old = [w for w in _IDENT.findall(expression) if w in _UNPREFIXED and w not in declared]
    if old:
        meant = _IDENT.sub(lambda m: f"vfu_{m[0]}" if m[0] in old else m[0], expression)
        raise pytest.UsageError(
            f"-m {expression!r}: the suite's marks carry the prefix vfu_: -m {meant!r}"
        )


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    package, reports = "conformance", REPORT_ARGS
    if args[:1] == ["client"]:  # vfio-user-conformance client --vfu-client CMD ...
        args, package, reports = args[1:], CLIENT_PACKAGE, CLIENT_REPORT_ARGS
    if args[:1] == ["compare"]:  # vfio-user-conformance compare A.json B.json ... (compare.py)
        return compare_main(args[1:])
    if "-h" in args or "--help" in args:
        print(help_text())
        return int(ExitStatus.OK)
    if "-V" in args or "--version" in args:
        print(f"vfio-user-conformance {__version__} (pytest {pytest.__version__})")
        return int(ExitStatus.OK)
    try:
        config_file = _user_config(args)
    except pytest.UsageError as e:  # as pytest says it: the file and what is wrong
        print(f"ERROR: {e}", file=sys.stderr)
        return int(ExitStatus.USAGE_ERROR)
    collecting = _collecting(args)
    listing = collecting and _quiet(args) and any(a in ("--collect-only", "--co") for a in args)
    base = [
        *config_file,
        f"--rootdir={_suite_root()}",
        "-p",
        "no:cacheprovider",  # never write into the installed package
        *(() if collecting else _reports(reports, args)),
        *DEFAULT_ARGS,
        # --collect-only -q: the case ids are the listing (_Front), pytest's terminal is off
        *(("-p", "no:terminal") if listing else ("-rfE",)),
        # The installed suite by its path, not ``--pyargs conformance``: pytest would
        # first take a ``conformance/`` folder of the current directory (a checkout of
        # this project) for it and load that one's conftest.py too.
        str(_suite_root() / package),
    ]
    if listing:  # the terminal's options
        args = [a for a in args if not (a == "--quiet" or re.fullmatch(r"-q+", a))]
    front = _Front(listing)
    status = pytest.main(base + args, plugins=[front])
    if status in (
        ExitStatus.USAGE_ERROR,
        ExitStatus.INTERRUPTED,
        ExitStatus.INTERNAL_ERROR,
        ExitStatus.TARGET_NOT_STARTED,
    ):
        return int(status)
    if not front.ran:
        return int(status)  # 0, or 5 when nothing was collected
    if not front.cases:
        return int(ExitStatus.NO_CASES)
    return int(ExitStatus.FAILED if front.failing else ExitStatus.OK)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
