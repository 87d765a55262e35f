"""The terminal of a conformance session: progress in place of pytest's dots, no
tracebacks of the suite's internals, and the verdict summary as the last thing printed.

A *conformance session* runs cases only (every item collected is judged; on the xdist
controller, which collects nothing itself: some --vfu option was given). Any other session
keeps pytest's own output, and so does ``-v`` (one line a test, as pytest prints it).

* Progress: on a terminal, one line rewritten in place: cases judged / total, the section
  and its own count, the verdicts that fail the run so far, the elapsed time, the case
  running. Elsewhere (a CI log) no carriage return: a line each time a section is done
  (with its verdicts), or, when the sections' sizes are unknown (xdist), every tenth of
  the run.
* Tracebacks: with pytest's default ``--tb=auto`` the FAILURES and ERRORS sections are
  left out: the summary has one line per failing requirement, and the reports (HTML,
  JUnit, the log files) keep the whole text. ``--tb=long`` (short, native...) shows them.
* The summary (``report.summary_styled``) comes after pytest's own (the ``-r`` lines,
  the counts), coloured by the verdicts' tones, at most 80 columns wide.
"""

from __future__ import annotations

import textwrap
import time
from collections import Counter

import pytest

from pytest_vfiouser import report as reports
from pytest_vfiouser.verdict import VERDICTS

from ._judge import case_name, relevant
from ._markers import case_info

__all__ = ["Summary", "Terminal", "conformance_session", "register"]

PLUGIN_NAME = "vfiouser-terminal"
SUMMARY_PLUGIN_NAME = "vfiouser-summary"
NO_SECTION = "(no section)"  # as report.Records.by_section names it
_PLAIN_LINES = 10  # without sections' sizes, a plain line every tenth of the run


def conformance_session(items: list[pytest.Item]) -> bool:
    """Whether a session runs conformance cases only (every item gets a verdict)."""
    return bool(items) and all(relevant(item) for item in items)


def register(config: pytest.Config, state) -> None:
    """The terminal's plugins for this pytest process (none without pytest's terminal:
    ``-p no:terminal``, as ``vfio-user-conformance --collect-only -q`` runs)."""
    if not config.pluginmanager.has_plugin("terminal"):
        return
    config.pluginmanager.register(Terminal(config, state), PLUGIN_NAME)
    config.pluginmanager.register(Summary(config, state), SUMMARY_PLUGIN_NAME)


class Terminal:
    """A plugin: progress in place of the dots, and tracebacks left out."""

    def __init__(self, config: pytest.Config, state) -> None:
        self.config = config
        self.state = state
        self.active = False  # the progress replaces the dots
        self.total = 0
        self.done = 0
        self.sizes: dict[str, int] = {}  # cases per section (unknown under xdist)
        self.judged: dict[str, Counter] = {}  # verdicts per section so far
        self.names: dict[str, tuple[str, str]] = {}  # node id -> (case name, section)
        self.section = ""
        self.current = ""
        self.started = time.monotonic()
        self.section_started: dict[str, float] = {}
        self.next_plain = 0
        self.quiet = False  # leave out the FAILURES and ERRORS sections

    @property
    def reporter(self):
        """pytest's TerminalReporter (None with -p no:terminal); registered after this plugin."""
        return self.config.pluginmanager.get_plugin("terminalreporter")

    # -- when: a conformance session
    @pytest.hookimpl(trylast=True)
    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if hasattr(self.config, "workerinput") or not conformance_session(session.items):
            return
        self.names = {}
        for item in session.items:
            info = case_info(item)
            self.names[item.nodeid] = (case_name(item), info.section or NO_SECTION)
        self._begin(len(session.items), Counter(s for _, s in self.names.values()))

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node, ids: list[str]) -> None:
        """The xdist controller: the workers' collection gives the total (not the sections)."""
        if not self.active and self.state.settings.explicit:
            self._begin(len(ids), {})

    def _begin(self, total: int, sizes: dict[str, int]) -> None:
        self._quiet_tracebacks()
        if self.reporter is None or self.config.get_verbosity() > 0:
            return
        self.active = True
        self.total, self.sizes = total, dict(sizes)
        self.started = time.monotonic()
        self.next_plain = self._plain_step()
        # pytest's own progress: no module paths, no dots, no percentages
        self.reporter.showfspath = False
        self.reporter._show_progress_info = False

    def _quiet_tracebacks(self) -> None:
        """pytest's default --tb=auto: no FAILURES and ERRORS sections (the summary's lines
        and the reports say it all); any --tb the user chose stays."""
        self.quiet = self.config.option.tbstyle == "auto"

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        """Only now, once every report has its text (the log files and the HTML report keep
        the traceback, which pytest renders as --tb says), and before pytest's summary."""
        if self.quiet:
            self.config.option.tbstyle = "no"

    # -- the dots
    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report, config):
        result = yield
        if not self.active or not result:
            return result
        category, _letter, word = result
        return category, "", word

    def pytest_runtest_logstart(self, nodeid: str, location) -> None:
        if not self.active:
            return
        self.current, section = self.names.get(nodeid, (nodeid.rpartition("::")[2], ""))
        if section:
            self.section = section
            self.section_started.setdefault(section, time.monotonic())
        self._draw()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not self.active or report.when != "teardown":
            return
        self.done += 1
        record = reports.CaseRecord.of(report)
        section = record.section if record is not None and record.section else NO_SECTION
        if report.nodeid in self.names:
            section = self.names[report.nodeid][1]
        counts = self.judged.setdefault(section, Counter())
        if record is not None:
            counts[record.verdict] += 1
        if not self._tty():
            self._plain(section)
        else:
            self._draw()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtestloop(self, session: pytest.Session):
        try:
            return (yield)
        finally:
            if self.active:
                self._finish()

    # -- drawing

    def _tty(self) -> bool:
        return bool(getattr(self.reporter, "isatty", False))

    def _elapsed(self) -> str:
        seconds = int(time.monotonic() - self.started)
        hours, rest = divmod(seconds, 3600)
        return (
            f"{hours}:{rest // 60:02}:{rest % 60:02}" if hours else f"{rest // 60}:{rest % 60:02}"
        )

    def _failing(self, counts: Counter) -> str:
        return ", ".join(f"{counts[v]} {v}" for v in VERDICTS if v.fails_run and counts[v])

    def _all_judged(self) -> Counter:
        total: Counter = Counter()
        for counts in self.judged.values():
            total.update(counts)
        return total

    def _draw(self) -> None:
        """The line in place (a terminal only)."""
        if not self._tty():
            return
        parts = [f"{self.done}/{self.total}"]
        if self.section:
            size = self.sizes.get(self.section)
            done = sum(self.judged.get(self.section, Counter()).values())
            parts.append(f"{self.section} {done}/{size}" if size else self.section)
        failing = self._failing(self._all_judged())
        if failing:
            parts.append(failing)
        parts += [self._elapsed(), self.current]
        width = self.reporter._tw.fullwidth - 1
        self.reporter.rewrite(reports.fit("  ".join(parts), width), erase=True)
        self.reporter.flush()

    def _plain(self, section: str) -> None:
        """A line of its own (no carriage return): a section done, or a tenth of the run."""
        if self.sizes:
            if sum(self.judged[section].values()) != self.sizes.get(section):
                return
            started = self.section_started.get(section, self.started)
            what = f"{section}: {self.sizes[section]} cases in {time.monotonic() - started:.1f} s"
            counts = self.judged[section]
        else:
            if self.done < self.next_plain and self.done != self.total:
                return
            self.next_plain += self._plain_step()
            what, counts = "judged", self._all_judged()
        verdicts = ", ".join(f"{counts[v]} {v}" for v in VERDICTS if counts[v])
        head = f"[{self.done:>{len(str(self.total))}}/{self.total} {self._elapsed()}] "
        text = head + what + (f": {verdicts}" if verdicts else "")
        width = max(self.reporter._tw.fullwidth, 40)
        for line in textwrap.wrap(
            text, width, subsequent_indent=" " * len(head), break_long_words=False
        ):
            self.reporter.write_line(line)

    def _plain_step(self) -> int:
        return max(1, -(-self.total // _PLAIN_LINES))

    def _finish(self) -> None:
        failing = self._failing(self._all_judged())
        line = f"{self.done}/{self.total} cases judged in {self._elapsed()}" + (
            f" ({failing})" if failing else ""
        )
        if self._tty():
            self.reporter.rewrite(line, erase=True)
            self.reporter.write("\n")
        else:
            self.reporter.write_line(line)
        self.active = False


class Summary:
    """A plugin: the verdict summary, after everything pytest prints at the end."""

    def __init__(self, config: pytest.Config, state) -> None:
        self.config = config
        self.state = state

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session):
        try:
            return (yield)
        finally:
            self._write()

    def _write(self) -> None:
        state = self.state
        if (
            self.config.pluginmanager.get_plugin("terminalreporter") is None
            or hasattr(self.config, "workerinput")
            or not state.records.cases
            or getattr(self.config.option, "no_summary", False)
        ):
            return
        tw = self.config.get_terminal_writer()
        width = min(tw.fullwidth, reports.SUMMARY_WIDTH)
        tw.sep("=", "vfio-user conformance", fullwidth=width)
        for line in reports.summary_styled(state, reports.combine_targets(state.target_summaries)):
            for text, tone in line:
                tw.write(text, **reports.TONE_MARKUP.get(tone or "", {}))
            tw.line()
