"""What a run leaves behind: case records, the terminal summary, JSON, HTML, compare.

* ``_records``: ``CaseRecord`` (one judged case, as every report reads it:
  ``CaseRecord.of(report)``) and ``Records`` (the run's, collected from the
  teardown reports).
* ``_tones``: the colour of each verdict's tone, for the HTML pages and the terminal.
* ``_messages``: a verdict's message as the reports show it (``clip_message`` keeps
  its start and its end; ``plain_message`` drops pytest's assertion clutter).
* ``_artifacts``: the stable case key, HTML anchors, where reports and the
  per-case log files go.
* ``_summary``: the terminal summary (verdicts by section, what was tested).
* ``_json``: the JSON report (written while the run goes on, ``JsonWriter``) and its
  schema (``schema/conformance.schema.json``).
* ``_junit``: pytest's JUnit XML made valid for CI dashboards (``conform_junit``).
* ``_html``: pytest-html hooks (columns, the verdict matrix, log links), with
  ``_html_chart`` (verdicts by section, an SVG chart), ``_html_requirements`` (the
  cases grouped by requirement) and ``_html_page`` (the page's style and script).
* ``_compare``: ``vfio-user-conformance compare``, several runs side by side.

May import: ``verdict``, ``protocol`` and ``fuzz`` (the run state is passed in,
never imported from the plugin).
"""

from ._artifacts import (
    MARKER,
    STDERR_LINES,
    WIRE_MESSAGES,
    anchor,
    case_key,
    html_path,
    junit_path,
    logs_dir,
    relative,
    safe_relpath,
    unwritable,
)
from ._compare import (
    Comparison,
    ReportError,
    Run,
    compare,
    load,
    name_runs,
    render_html,
    render_text,
)
from ._compare import main as compare_main
from ._html import HtmlReport
from ._json import FORMAT, READABLE_VERSIONS, SCHEMA_VERSION, JsonWriter, schema
from ._json import build as build_json
from ._json import write as write_json
from ._junit import conform_junit
from ._messages import clip_message, plain_message
from ._records import CaseRecord, Records
from ._summary import WIDTH as SUMMARY_WIDTH
from ._summary import combine_targets, fit, headline, result_text, sigterm_text
from ._summary import lines as summary_lines
from ._summary import styled as summary_styled
from ._tones import TONE_MARKUP

__all__ = [
    "FORMAT",
    "MARKER",
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "STDERR_LINES",
    "SUMMARY_WIDTH",
    "TONE_MARKUP",
    "WIRE_MESSAGES",
    "CaseRecord",
    "Comparison",
    "HtmlReport",
    "JsonWriter",
    "Records",
    "ReportError",
    "Run",
    "anchor",
    "build_json",
    "case_key",
    "clip_message",
    "combine_targets",
    "compare",
    "compare_main",
    "conform_junit",
    "fit",
    "headline",
    "html_path",
    "junit_path",
    "load",
    "logs_dir",
    "name_runs",
    "plain_message",
    "relative",
    "render_html",
    "render_text",
    "result_text",
    "safe_relpath",
    "schema",
    "sigterm_text",
    "summary_lines",
    "summary_styled",
    "unwritable",
    "write_json",
]
