"""The interop tier (interop/): the expectation check, --update, the README matrix, the
skip without sources and the run timeout, on real files and synthetic JSON reports
shaped like the suite's (schema_version 1)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # interop/ is not installed: it runs from the checkout
    sys.path.insert(0, str(REPO))

from interop import _expectations, _matrix, _run, _tier  # noqa: E402
from interop import _implementations as implementations  # noqa: E402
from interop.__main__ import main  # noqa: E402

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REQUIREMENT = (
    "An overlapping DMA_MAP is refused with EEXIST.\n"
    'Spec (VFIO_USER_DMA_MAP): "a command to map over an existing region must be failed by '
    'the server with EEXIST set in error field" (and more words)'
)


def case(case_id: str, verdict: str, message: str = "", requirement: str = REQUIREMENT) -> dict:
    """One case of a JSON report, with the fields a real report has."""
    section, _, rest = case_id.split("[")[0].rpartition("/")  # as the suite's mark
    return {
        "id": case_id,
        "case_id": case_id.split("[")[0],
        "nodeid": f"conformance/test_{section}.py::test_{rest}",
        "anchor": case_id,
        "section": section,
        "level": "MUST",
        "revision": "0.9.1",
        "revisions": [],
        "verdict": verdict,
        "duration": 0.004,
        "message": message,
        "requirement": requirement,
        "observations": [],
        "resources": {},
        "artifacts": {},
    }


def write_report(path: Path, spec: str, cases: list[dict], html: str | None = None) -> Path:
    """A JSON report as --vfu-json writes it."""
    counts: dict[str, int] = {}
    sections: dict[str, dict[str, int]] = {}
    for c in cases:
        c["revision"] = spec
        counts[c["verdict"]] = counts.get(c["verdict"], 0) + 1
        by = sections.setdefault(c["section"], {})
        by[c["verdict"]] = by.get(c["verdict"], 0) + 1
    data = {
        "schema_version": 1,
        "format": "pytest-vfiouser/1",
        "run": {
            "suite_version": "0.1.0",
            "started": "2026-12-02T18:04:45+00:00",
            "duration": 1.0,
            "spec": spec,
            "strict": False,
            "restart": "per-module",
            "timeout": 5.0,
            "sections": [],
            "profile": {"name": "none", "path": None},
            "target": {
                "description": "/build/samples/null {socket}",
                "command": "/build/samples/null /tmp/vfu.sock",
                "command_template": "/build/samples/null {socket}",
                "socket": None,
                "starts": 1,
                "sigterm": {"honoured": 1, "killed": 0},
                "persistence_note": None,
                "notes": [],
            },
            "negotiated": {"major": 0, "minor": 0, "capabilities": {"max_msg_fds": 8}},
            "counts": counts,
            "failed": any(v in ("FAIL", "CRASH", "HANG", "ERROR") for v in counts),
            "reports": {"html": html or path.with_suffix(".html").name, "junit": None},
        },
        "summary": {"cases": len(cases), "verdicts": counts, "sections": sections},
        "cases": cases,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2), encoding="utf-8")
    return path


ENTRY = """
[[finding]]
case = "{case}"
revisions = {revisions}
verdict = "{verdict}"
spec = "{spec}"
did = "{did}"
"""


def expectations(path: Path, *entries: dict) -> Path:
    defaults = {"revisions": '["0.9.1"]', "verdict": "FAIL", "spec": "the sentence", "did": "it"}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(ENTRY.format(**{**defaults, **e}) for e in entries))
    return path


def cases_of(*cases: dict) -> dict[str, dict]:
    return {c["id"]: c for c in cases}


def kinds(differences) -> dict[str, str]:
    return {d.case: d.kind for d in differences}


# -- the check


def test_a_run_that_matches_has_no_difference(tmp_path):
    exp = _expectations.load(
        expectations(tmp_path / "x.toml", {"case": "dma/overlap"}), ("0.9.1", "0.9.2")
    )
    run = cases_of(case("dma/overlap", "FAIL"), case("dma/map", "PASS"))
    assert not exp.errors
    assert _expectations.check("x", "0.9.1", run, exp) == []
    assert _expectations.check("x", "0.9.2", run, exp)[0].kind == "new finding"  # not at 0.9.2


def test_the_check_finds_new_and_lost_findings_changed_verdicts_and_errors(tmp_path):
    exp = _expectations.load(
        expectations(
            tmp_path / "x.toml",
            {"case": "dma/lost"},
            {"case": "dma/absent", "verdict": "HANG"},
            {"case": "dma/changed", "verdict": "FAIL"},
            {"case": "dma/same", "verdict": "NON-STRICT"},
        ),
        ("0.9.1",),
    )
    run = cases_of(
        case("dma/new", "CRASH", "the server was killed by signal 11\nmore"),
        case("dma/lost", "PASS"),
        case("dma/changed", "NON-STRICT", "a SHOULD"),
        case("dma/same", "NON-STRICT"),
        case("dma/broken", "ERROR", "TypeError: the suite's own"),
        case("dma/fine", "INFORMATIONAL"),
    )
    found = _expectations.check("x", "0.9.1", run, exp)
    assert kinds(found) == {
        "dma/new": "new finding",
        "dma/lost": "finding gone",
        "dma/absent": "finding gone",
        "dma/changed": "verdict changed",
        "dma/broken": "ERROR (a defect of the suite)",
    }
    text = "\n".join(line for d in found for line in d.lines())
    assert "the server was killed by signal 11" in text  # the case's message is shown
    assert "expected FAIL, now NON-STRICT" in text
    assert "expected FAIL, now PASS" in text


def test_an_unstable_finding_may_show_any_verdict_or_none_and_update_keeps_it(tmp_path):
    """A server's own race (the shadow sample spins after some disconnects, not others):
    the entry says why, the check accepts the case found or not, and --update keeps it."""
    path = expectations(tmp_path / "x.toml", {"case": "fuzz/garbage", "verdict": "HANG"})
    path.write_text(path.read_text() + 'unstable = "it spins after some disconnects"\n')
    exp = _expectations.load(path, ("0.9.1",))
    assert not exp.errors and exp.entries[0].unstable == "it spins after some disconnects"
    for verdict in ("HANG", "FAIL", "PASS"):
        run = cases_of(case("fuzz/garbage", verdict))
        assert _expectations.check("x", "0.9.1", run, exp) == [], verdict
    assert kinds(_expectations.check("x", "0.9.1", cases_of(case("fuzz/garbage", "ERROR")), exp))
    kept = _expectations.update(exp, {"0.9.1": cases_of(case("fuzz/garbage", "PASS"))}, ("0.9.1",))
    assert [(e.case, e.verdict, e.unstable) for e in kept] == [
        ("fuzz/garbage", "HANG", "it spins after some disconnects")
    ]
    assert "unstable = " in _expectations.render(kept, [])


@pytest.mark.parametrize(
    ("entry", "complaint"),
    [
        ({"spec": ""}, "no spec"),
        ({"did": "  "}, "no did"),
        ({"verdict": "ERROR"}, "ERROR is never expected"),
        ({"verdict": "PASS"}, "not a finding"),
        ({"revisions": '["0.9.9"]'}, "unknown revision"),
    ],
)
def test_an_expectation_must_quote_its_spec_and_say_what_the_server_did(tmp_path, entry, complaint):
    exp = _expectations.load(
        expectations(tmp_path / "x.toml", {"case": "dma/a", **entry}), ("0.9.1",)
    )
    assert len(exp.errors) == 1 and complaint in exp.errors[0], exp.errors
    assert exp.errors[0].startswith(f"{tmp_path / 'x.toml'}:2:")  # the line of its table


def test_a_quote_must_be_words_of_the_spec_at_each_revision_it_names(tmp_path):
    texts = {
        "0.9.1": "* *argsz* is the maximum size of the reply\n  payload.\n\n"
        "| max_msg_fds | number | Maximum number of file |\n|  |  | descriptors. |",
        "0.9.2": "* *flags* is unused in this version.",
    }
    exp = _expectations.load(
        expectations(
            tmp_path / "x.toml",
            {"case": "dma/a", "spec": "argsz is the maximum size of the reply payload."},
            {"case": "dma/b", "spec": "Maximum number of file descriptors"},
            {"case": "dma/c", "spec": "argsz is the ... size of the reply payload"},
            {"case": "dma/d", "spec": "argsz is the minimum size of the reply payload"},
            {"case": "dma/e", "spec": "flags is unused", "revisions": '["0.9.1", "0.9.2"]'},
        ),
        ("0.9.1", "0.9.2"),
    )
    found = _expectations.misquotes(exp, texts)
    assert [line.split(": ")[1] for line in found] == ["dma/d", "dma/e"], found
    assert "not a quote of the 0.9.1 text" in found[1]  # 0.9.2 has it; 0.9.1 does not


def test_a_misquote_fails_the_tier(tier):
    expectations(tier.exp / "null.toml", {"case": "dma/a", "spec": "words the spec never says"})
    status, out = tier(only=["null"], revisions=["0.9.1"])
    assert status == 1 and "its spec is not a quote of the 0.9.1 text" in out, out


@pytest.mark.skipif(not _tier.Options().spec.is_dir(), reason="no ../shared/spec")
def test_every_committed_expectation_quotes_the_spec():
    """What the interop tier checks on each run, for the committed files: each finding
    rests on words the spec says at each revision it is expected at."""
    options = _tier.Options()
    catalogue = implementations.load()
    texts = _tier._spec_texts(dataclasses.replace(options, out=io.StringIO()), catalogue.revisions)
    assert set(texts) == set(catalogue.revisions)
    found = []
    for path in sorted(options.expectations.glob("*.toml")):
        exp = _expectations.load(path, catalogue.revisions)
        assert not exp.errors, exp.errors
        found += _expectations.misquotes(exp, texts)
    assert found == []


def test_a_case_expected_twice_at_a_revision_is_an_error(tmp_path):
    exp = _expectations.load(
        expectations(tmp_path / "x.toml", {"case": "dma/a"}, {"case": "dma/a"}), ("0.9.1",)
    )
    assert any("expected twice" in e for e in exp.errors)


# -- --update


def test_spec_quote_and_did_are_read_from_the_report():
    assert _expectations.spec_quote(REQUIREMENT).startswith("a command to map over")
    assert _expectations.spec_quote("No spec here.") == ""
    assert _expectations.spec_quote("x\nSpec: silent on this; robustness.") == (
        "silent on this; robustness."
    )
    message = "AssertionError: refused with errno 22 (EINVAL):\n  more"
    assert _expectations.did_of(message) == "refused with errno 22 (EINVAL)"


def test_update_keeps_reviewed_text_prefills_new_entries_and_drops_lost_ones(tmp_path):
    path = expectations(
        tmp_path / "x.toml",
        {"case": "dma/kept", "revisions": '["0.9.1", "0.9.2"]', "spec": "quoted", "did": "did"},
        {"case": "dma/lost", "spec": "gone", "did": "gone"},
        {"case": "dma/other-revision", "revisions": '["0.9.2"]'},
    )
    old = _expectations.load(path, ("0.9.1", "0.9.2"))
    reports = {
        "0.9.1": cases_of(
            case("dma/kept", "FAIL"),
            case("dma/lost", "PASS"),
            case("dma/new", "NON-STRICT", "AssertionError: accepted it\nthe wire"),
        )
    }  # no report at 0.9.2: its entries stay
    entries = _expectations.update(old, reports, ("0.9.1", "0.9.2"))
    text = _expectations.render(entries, ["a header"])
    path.write_text(text)
    data = tomllib.loads(text)["finding"]
    assert [f["case"] for f in data] == ["dma/kept", "dma/new", "dma/other-revision"]
    kept, new, other = data
    assert kept == {
        "case": "dma/kept",
        "revisions": ["0.9.1", "0.9.2"],
        "verdict": "FAIL",
        "spec": "quoted",
        "did": "did",
    }
    assert new["spec"].startswith("a command to map over an existing region")
    assert new["did"] == "accepted it" and new["verdict"] == "NON-STRICT"
    assert other["revisions"] == ["0.9.2"]
    lines = text.splitlines()
    assert lines[0] == "# a header"
    assert sum(_expectations.TODO in line for line in lines) == 2  # the new entry's spec, did
    again = _expectations.load(path, ("0.9.1", "0.9.2"))
    assert not again.errors and [e.case for e in again.todo] == ["dma/new"]
    # Stable: a second update from the same reports writes the same text.
    assert (
        _expectations.render(_expectations.update(again, reports, ("0.9.1", "0.9.2")), ["a header"])
        == text
    )


def test_strings_are_written_as_toml_reads_them():
    odd = 'quote " backslash \\ tab \t newline \n del \x7f bell \x07 ü'
    entry = _expectations.Entry("a/b[x]", ("0.9.1",), "FAIL", odd, odd)
    data = tomllib.loads(_expectations.render([entry], []))
    assert data["finding"][0]["spec"] == odd


# -- the tier end to end (--check-only) on a small catalogue


@pytest.fixture
def tier(tmp_path):
    """A catalogue (the reference server and one sample), its expectations, reports and
    README in tmp_path; ``run(*args)`` is python -m interop --check-only with them."""
    catalogue = tmp_path / "implementations.toml"
    catalogue.write_text(
        textwrap.dedent(
            """\
            revisions = ["0.9.1", "0.9.2"]
            [[implementation]]
            name = "reference"
            [[implementation]]
            name = "null"
            snapshot = "efd091b"
            binary = "null"
            command = "{binary} {socket}"
            """
        )
    )
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{_matrix.BEGIN}\n{_matrix.END}\n\nafter\n")
    exp = tmp_path / "expectations"
    reports = tmp_path / "reports"
    for rev in ("0.9.1", "0.9.2"):
        write_report(
            reports / f"reference-{rev}.json",
            rev,
            [
                case("dma/a", "PASS"),
                case("dma/b", "INFORMATIONAL"),
                case("reset/x", "UNIMPLEMENTED"),
            ],
        )
        write_report(
            reports / f"null-{rev}.json",
            rev,
            [case("dma/a", "FAIL", "refused with EINVAL"), case("dma/b", "PASS")]
            + [case("reset/x", "UNIMPLEMENTED")],
        )
    expectations(exp / "null.toml", {"case": "dma/a", "revisions": '["0.9.1", "0.9.2"]'})
    (exp / "reference.toml").write_text("# the clean run\n")
    spec = tmp_path / "spec"
    spec.mkdir()
    for rev in ("0.9.1", "0.9.2"):  # the quotes of the entries above are words of these
        (spec / f"vfio-user-{rev}.rst").write_text("It says *the*\nsentence. And more.\n")
    options = _tier.Options(
        check_only=True,
        implementations=catalogue,
        expectations=exp,
        reports=reports,
        readme=readme,
        spec=spec,
    )

    def run(**changes) -> tuple[int, str]:
        out = io.StringIO()
        status = _tier.main(dataclasses.replace(options, out=out, **changes))
        return status, out.getvalue()

    run.readme, run.exp, run.reports, run.options = readme, exp, reports, options
    return run


def test_check_only_writes_the_readme_matrix_and_then_passes(tier):
    status, out = tier()
    assert status == 1 and "the interop matrix is stale" in out, out  # the README is empty
    assert "reference at" not in out and "null at" not in out  # the runs match
    # A run (not --check-only) rewrites the README; here without running: the same code path.
    problems = _tier._readme(
        dataclasses.replace(tier.options, check_only=False, out=io.StringIO()),
        implementations.load(tier.options.implementations),
    )
    assert problems == []
    text = tier.readme.read_text()
    assert text.startswith("# x\n\n<!-- interop-matrix:begin -->") and text.endswith("after\n")
    assert "| [null](expectations/null.toml) | 1 FAIL | – |" in text
    assert "| [reference](expectations/reference.toml) | ✓ | – |" in text
    status, out = tier()
    assert status == 0 and "every run matches" in out, out
    assert (tier.reports / "matrix.html").exists()
    assert "null (0.9.1)" in (tier.reports / "matrix.txt").read_text()


def test_check_only_with_update_rewrites_the_readme_matrix(tier):
    """--check-only --update rewrites what the reports say: the expectations, and the
    README's matrix, which counts them."""
    status, out = tier(update=True)
    assert "the interop matrix is stale" not in out, out
    assert "| [null](expectations/null.toml) | 1 FAIL | – |" in tier.readme.read_text()
    status, out = tier()
    assert status == 0 and "every run matches" in out, out


def test_a_stale_readme_and_a_changed_run_fail_the_check(tier):
    test_check_only_writes_the_readme_matrix_and_then_passes(tier)
    write_report(
        tier.reports / "null-0.9.2.json",
        "0.9.2",
        [case("dma/a", "PASS"), case("dma/b", "HANG", "no reply in 5 s"), case("reset/x", "ERROR")],
    )
    status, out = tier()
    assert status == 1
    assert "the interop matrix is stale" in out
    assert "null at 0.9.2: 3 difference(s)" in out
    assert "finding gone: dma/a (expected FAIL, now PASS)" in out
    assert "new finding: dma/b (HANG)" in out and "no reply in 5 s" in out
    assert "ERROR (a defect of the suite): reset/x" in out


def test_the_reference_server_has_no_finding(tier):
    expectations(tier.exp / "reference.toml", {"case": "dma/a"})
    status, out = tier(only=["reference"])
    assert status == 1 and "the reference server is the clean run" in out


def test_a_missing_report_is_a_difference(tier):
    (tier.reports / "null-0.9.1.json").unlink()
    status, out = tier(only=["null"], revisions=["0.9.1"])
    assert status == 1 and "null at 0.9.1: 1 difference(s)" in out and "no such file" in out


def test_update_from_check_only_writes_the_expectation_files(tier):
    (tier.exp / "null.toml").unlink()
    status, out = tier(update=True)
    assert "wrote" in out
    data = tomllib.loads((tier.exp / "null.toml").read_text())
    assert [(f["case"], f["revisions"], f["did"]) for f in data["finding"]] == [
        ("dma/a", ["0.9.1", "0.9.2"], "refused with EINVAL")
    ]
    assert "finding" not in tomllib.loads((tier.exp / "reference.toml").read_text())
    assert "2 expected findings still marked" not in out and "1 expected findings" in out


def test_render_cells():
    from collections import Counter  # noqa: PLC0415 (one test's helper)

    assert _matrix.cell(Counter({"PASS": 3, "INFORMATIONAL": 1, "UNIMPLEMENTED": 2})) == "✓"
    assert _matrix.cell(Counter({"UNIMPLEMENTED": 2})) == "–"
    assert _matrix.cell(Counter({"PASS": 1, "NON-STRICT": 1, "FAIL": 3})) == "3 FAIL, 1 NON-STRICT"
    assert _matrix.cell(Counter()) == ""
    assert _matrix.cell(Counter({"PASS": 1}), varying=2) == "✓ (2 varying)"
    with pytest.raises(_matrix.ReadmeError):
        _matrix.replace_block("no markers", "x")


def test_cases_that_vary_are_said_not_counted_so_the_matrix_is_the_same_every_run():
    """An unstable finding (a race of the server's own) shows in some runs only: the README
    matrix counts the stable verdicts and says how many cases vary, whatever this run's."""
    found = {"header/a": case("header/a", "NON-STRICT"), "header/b": case("header/b", "FAIL")}
    quiet = {"header/a": case("header/a", "PASS"), "header/b": case("header/b", "FAIL")}
    blocks = [
        _matrix.render_block(
            [_matrix.Row("[x](x.toml)", "0.9.1", cases, frozenset({"header/a"}))], ["0.9.1"], "n"
        )
        for cases in (found, quiet)
    ]
    assert blocks[0] == blocks[1]
    assert "| [x](x.toml) | 1 FAIL (1 varying) |" in blocks[0]


# -- no sources


@pytest.mark.parametrize(("extra", "status"), [([], 0), (["--require"], 2)])
def test_without_the_sources_the_tier_is_skipped(tmp_path, capsys, extra, status):
    missing = tmp_path / "no-libvfio-user"
    assert main(["--source", str(missing), *extra]) == status
    out = capsys.readouterr().out
    assert out.strip() == (
        f"interop: skipped: no libvfio-user source at {missing}; "
        "give --source or VFU_LIBVFIO_USER_SRC"
    )


def test_the_source_comes_from_the_option_the_environment_or_beside_the_repository(tmp_path):
    repo = tmp_path / "repo"
    env = {"VFU_LIBVFIO_USER_SRC": "/from/env"}
    assert _tier._build.find_source("/given", repo, env) == Path("/given")
    assert _tier._build.find_source(None, repo, env) == Path("/from/env")
    assert _tier._build.find_source(None, repo, {}) == tmp_path / "shared/third_party/libvfio-user"


def test_the_build_is_reused_when_the_binaries_exist(tmp_path):
    samples = _tier._build.samples_dir(tmp_path, "efd091b")
    samples.mkdir(parents=True)
    (samples / "null").write_text("#!/bin/sh\n")
    (samples / "null").chmod(0o755)
    # No build.sh in the source: a build would fail.
    assert _tier._build.build(tmp_path / "nosource", tmp_path, "efd091b", ["null"]) == samples
    with pytest.raises(_tier._build.BuildError):
        _tier._build.build(tmp_path / "nosource", tmp_path, "efd091b", ["null", "server"])


def test_a_sample_with_configure_options_gets_a_build_of_its_own(tmp_path):
    """The shadow ioeventfd sample needs -Dshadow-ioeventfd=true (built plain, it exits
    after VERSION); a build folder named for the options is reused once it holds it."""
    shadow = implementations.load().named("shadow_ioeventfd_server")
    assert shadow.meson_options == ("-Dshadow-ioeventfd=true",)
    plain = _tier._build.samples_dir(tmp_path, "efd091b")
    own = plain.parent.parent / "build-Dshadow-ioeventfd-true" / "samples"
    for folder in (plain, own):
        folder.mkdir(parents=True)
        (folder / shadow.binary).write_text("#!/bin/sh\n")
        (folder / shadow.binary).chmod(0o755)
    got = _tier._build.build_with(
        tmp_path / "nosource", tmp_path, "efd091b", shadow.binary, shadow.meson_options
    )
    assert got == own


def test_the_implementations_declare_the_samples():
    catalogue = implementations.load()
    assert catalogue.revisions == ("0.9.1", "0.9.2")
    names = [i.name for i in catalogue.implementations if not i.client]
    assert names == ["reference", "gpio-pci-idio-16", "server", "null", "shadow_ioeventfd_server"]
    assert catalogue.named("reference").is_reference
    assert catalogue.revisions_of(catalogue.named("reference")) == ("0.9.1", "0.9.2")
    assert catalogue.revisions_of(catalogue.named("null")) == ("0.9.1", "0.9.2")
    assert catalogue.named("server").snapshot == "7e7a0a6"
    command = catalogue.named("null").server_command(Path("/b d/samples"))
    assert command == "'/b d/samples/null' {socket}"
    plan = _run.plan("null", "0.9.2", command, (), Path("/r"))
    assert plan.argv[1:] == (
        "-m",
        "pytest_vfiouser.cli",
        "-p",
        "no:randomly",
        "-q",
        "--vfu-server",
        command,
        "--vfu-spec",
        "0.9.2",
        "--vfu-json",
        "/r/null-0.9.2.json",
        "--html",
        "/r/null-0.9.2.html",
        "--junitxml",
        "/r/null-0.9.2.xml",
    )


# -- the run timeout


def test_a_run_that_does_not_finish_is_killed(tmp_path):
    """A run past its timeout is interrupted; one that ignores the interrupt is killed,
    and with it what it left in its process group."""
    pidfile = tmp_path / "grandchild.pid"
    script = textwrap.dedent(
        f"""\
        import json, signal, subprocess, sys, time
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pidfile)!r}, "w").write(str(child.pid))
        open({str(tmp_path / "stuck-0.9.1.json")!r}, "w").write("{{}}")  # a partial report
        print("started", flush=True)
        time.sleep(60)
        """
    )
    run = _run.Run("stuck", "0.9.1", (sys.executable, "-c", script), tmp_path)
    started = time.monotonic()
    seen = []
    # 3 s: time for the script to start and print even on a loaded machine.
    outcomes = _run.run_all([run], 1, 3.0, done=lambda r, o: seen.append(o), grace=0.5)
    assert time.monotonic() - started < 10
    outcome = outcomes[run]
    assert outcome.finished is False and outcome.status is None and seen == [outcome]
    assert "started" in run.log.read_text()
    assert not run.json.exists() and run.unfinished.exists()  # the partial report moved
    grandchild = int(pidfile.read_text())
    for _ in range(50):
        if not _alive(grandchild):
            break
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    """Running (a zombie, killed and not yet reaped by its new parent, is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_a_run_that_finishes_has_its_status(tmp_path):
    outcome = _run.run_one(
        [sys.executable, "-c", "print('hi'); raise SystemExit(3)"], tmp_path / "x.log", 10
    )
    assert outcome == _run.Outcome(3, outcome.duration, True)
    assert (tmp_path / "x.log").read_text() == "hi\n"


def test_an_interrupted_run_ends_at_once(tmp_path):
    outcome = _run.run_one(
        [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "x.log", 0.5, grace=30
    )
    assert not outcome.finished and outcome.duration < 5  # SIGINT ended it; no need to kill


def test_python_m_interop_help_runs_from_the_repository():
    done = subprocess.run(
        [sys.executable, "-m", "interop", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=30,
    )
    assert done.returncode == 0 and "--check-only" in done.stdout


def test_the_catalogue_declares_the_clients():
    """[[client]]: QEMU's (a program set up outside the tier) and libvfio-user's sample
    client (a snapshot's binary), run by the client mode."""
    catalogue = implementations.load()
    clients = [i for i in catalogue.implementations if i.client]
    assert [i.name for i in clients] == ["qemu-client", "libvfio-user-client"]
    qemu, lvu = clients
    assert not qemu.is_reference and qemu.peer == "client"
    assert qemu.program_path == _tier.REPO / ".interop-build/qemu/qemu-system-x86_64"
    command = qemu.server_command(None)
    assert command.startswith("bash ") and command.endswith(f"{qemu.program_path} {{socket}} 8")
    assert "/shared/third_party/qemu/run-client.sh" in command
    assert catalogue.revisions_of(lvu) == ("0.9.2",)
    assert lvu.server_command(Path("/s")) == "/s/client {socket}"
    plan = _run.plan(lvu.name, "0.9.2", "/s/client {socket}", lvu.options, Path("/r"), client=True)
    assert plan.argv[1:9] == (
        "-m",
        "pytest_vfiouser.cli",
        "client",
        "-p",
        "no:randomly",
        "-q",
        "--vfu-client",
        "/s/client {socket}",
    )
    assert "--vfu-device" in plan.argv


@pytest.mark.parametrize(
    "entry, message",
    [
        (
            'name = "c"\ncommand = "x {socket}"',
            "a client needs a command, and a snapshot or a program",
        ),
        ('name = "c"\nprogram = "p"', "a client needs a command"),
        ('name = "c"\nprogram = "p"\ncommand = "x"', "the command has no {socket}"),
        ('name = "c"\nprogram = "p"\ncommand = "x {socket}"\nmeson_options = []', "unknown keys"),
    ],
)
def test_a_client_entry_that_cannot_run_is_refused(tmp_path, entry, message):
    path = tmp_path / "implementations.toml"
    path.write_text(f'revisions = ["0.9.1"]\n[[client]]\n{entry}\n')
    with pytest.raises(implementations.CatalogueError, match=re.escape(message)):
        implementations.load(path)


def test_the_clients_matrix_has_markers_of_its_own(tier):
    """A [[client]]'s runs make the README's second matrix; its findings are checked
    against its expectation file as a server's are."""
    catalogue = tier.options.implementations
    catalogue.write_text(
        catalogue.read_text()
        + '[[client]]\nname = "vmm"\nprogram = "vmm"\ncommand = "{program} {socket}"\n'
    )
    begin, end = _matrix.CLIENT_MARKERS
    tier.readme.write_text(tier.readme.read_text() + f"\n{begin}\n{end}\n")
    for rev in ("0.9.1", "0.9.2"):
        write_report(
            tier.reports / f"vmm-{rev}.json",
            rev,
            [case("client/header/x", "PASS"), case("client/dma_rw/y", "FAIL", "no reply")],
        )
    status, out = tier(update=True)
    assert "vmm at" not in out, out
    text = tier.readme.read_text()
    client_block = text[text.index(begin) :]
    assert "| [vmm](expectations/vmm.toml) | 1 FAIL | ✓ |" in client_block
    assert "vmm" not in text[: text.index(begin)]  # not among the servers
    assert "the sentence the client breaks" in (tier.exp / "vmm.toml").read_text()
