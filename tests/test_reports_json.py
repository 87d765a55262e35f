"""The JSON report against its shipped JSON Schema; the log files it links; JUnit properties."""

from __future__ import annotations

import datetime as dt
import json
import py_compile
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from reports_support import REPO, failing_run, reference_run
from scriptservers import run, script_server

import pytest_vfiouser
from pytest_vfiouser.report import SCHEMA_VERSION, schema

jsonschema = pytest.importorskip("jsonschema", reason="pip install '.[test]'")

pytest_plugins = ["pytester"]


def validate(data: dict) -> None:
    validator = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def test_schema_is_valid_and_in_the_package():
    jsonschema.Draft202012Validator.check_schema(schema())
    path = Path(pytest_vfiouser.__file__).parent / "report" / "schema" / "conformance.schema.json"
    assert path.is_file()
    # hatch puts every file under a listed package directory into the wheel.
    assert '"pytest_vfiouser"' in (REPO / "pyproject.toml").read_text()
    assert schema()["properties"]["schema_version"]["const"] == SCHEMA_VERSION


@pytest.mark.parametrize("get_run", [reference_run, failing_run], ids=["reference", "failing"])
def test_report_matches_schema_and_its_own_summary(get_run):
    data = get_run().data
    validate(data)
    assert data["schema_version"] == SCHEMA_VERSION
    info = data["run"]
    assert info["suite_version"] == pytest_vfiouser.__version__
    assert dt.datetime.fromisoformat(info["started"]).tzinfo is not None
    assert info["negotiated"]["major"] == 0 and "max_msg_fds" in info["negotiated"]["capabilities"]
    assert info["reports"]["html"] == "conformance.html" and info["reports"]["junit"] == "junit.xml"
    cases = data["cases"]
    ids = [c["id"] for c in cases]
    assert len(ids) == len(set(ids)) and cases
    assert {c["section"] for c in cases} == {"device_info"}
    assert all(c["revision"] == info["spec"] for c in cases)
    assert all(c["anchor"] == c["id"] and c["id"].startswith(c["case_id"]) for c in cases)
    by_section: dict[str, Counter] = {}
    for c in cases:
        by_section.setdefault(c["section"], Counter())[c["verdict"]] += 1
    assert data["summary"]["sections"] == {s: dict(v) for s, v in by_section.items()}
    assert (
        data["summary"]["verdicts"] == dict(Counter(c["verdict"] for c in cases)) == info["counts"]
    )
    assert data["summary"]["cases"] == len(cases)
    assert all(not c["artifacts"] for c in cases if c["verdict"] in ("PASS", "UNIMPLEMENTED"))


def test_failing_cases_link_their_logs():
    run_ = failing_run()
    data = run_.data
    assert data["run"]["failed"] and data["run"]["reports"]["logs"] == "conformance-logs"
    verdicts = {c["id"]: c["verdict"] for c in data["cases"]}
    assert verdicts["device_info/pci-num-regions"] == "FAIL"  # 1 region, not 9
    assert verdicts["device_info/no-reset-flag-reset-refused"] == "CRASH"  # --abort-on 13
    for case_id, command in (
        ("device_info/pci-num-regions", "DEVICE_GET_INFO"),
        ("device_info/no-reset-flag-reset-refused", "DEVICE_RESET"),
    ):
        artifacts = run_.case(case_id)["artifacts"]
        assert set(artifacts) == {"wire_log", "reproducer", "stderr", "log"}, artifacts
        files = {name: run_.reports / rel for name, rel in artifacts.items()}
        assert files["wire_log"].parent == run_.reports / "conformance-logs" / case_id
        wire = files["wire_log"].read_text()
        assert "== connection 0" in wire and f">> {command} command" in wire
        assert "<< VERSION reply" in wire and "\n    0000  " in wire  # decoded, then hex
        py_compile.compile(str(files["reproducer"]), doraise=True)
        assert case_id in files["reproducer"].read_text().splitlines()[1]
        assert "import" in files["stderr"].read_text()  # PYTHONVERBOSE's lines
        log = files["log"].read_text()
        assert log.startswith("==== conformance/test_device_info.py::") and "Error" in log
    crash_log = (
        run_.reports / run_.case("device_info/no-reset-flag-reset-refused")["artifacts"]["log"]
    )
    assert "SIGABRT" in crash_log.read_text()


def test_junit_testcase_of_every_case():
    """Each case's testcase: its id as the name, its section as the class, its verdict, level
    and requirement in system-out (with the wire log's path, for a case that did not pass)."""
    for run_ in (reference_run(), failing_run()):
        cases = {c["id"]: c for c in run_.data["cases"]}
        testcases = list(ET.parse(run_.junit_path).iter("testcase"))
        assert len(testcases) == len(cases)
        outcomes = Counter()
        for tc in testcases:
            case = cases[tc.get("name")]
            assert tc.get("classname") == case["section"] == "device_info"
            facts = tc.find("system-out").text
            assert facts.startswith(f"verdict: {case['verdict']}\nlevel: {case['level']}\n")
            assert f"requirement: {case['requirement']}" in facts
            outcomes[
                next(
                    (child.tag for child in tc if child.tag in ("skipped", "failure", "error")),
                    "passed",
                )
            ] += 1
            wire_log = re.search(r"^wire log: (.*)$", facts, re.M)
            if "wire_log" in case["artifacts"]:
                assert (run_.junit_path.parent / wire_log.group(1)).is_file()
            else:
                assert wire_log is None
        assert outcomes["skipped"]  # UNIMPLEMENTED cases carry them too


FAILING_CASES = """
from pytest_vfiouser import case, MUST, SHOULD

@case("dev/nine-regions", MUST)
def test_nine_regions(vfu_client):
    assert vfu_client.device_get_info().check().body.num_regions == 9

@case("dev/ten-regions", SHOULD)
def test_ten_regions(vfu_client):
    assert vfu_client.device_get_info().check().body.num_regions == 10

@case("dev/info", MUST)
def test_info(vfu_client):
    assert vfu_client.device_get_info().ok
"""


def test_plain_pytest_json_and_its_logs(pytester: pytest.Pytester):
    """--vfu-json without --html: the logs go beside the JSON; stale logs of an earlier run go."""
    pytester.makepyfile(FAILING_CASES)
    server = script_server(pytester.path)
    result = run(pytester, "--vfu-server", server, "--vfu-json=out/vfu.json")
    result.assert_outcomes(failed=1, passed=1, xfailed=1)
    data = json.loads((pytester.path / "out" / "vfu.json").read_text())
    validate(data)
    assert data["run"]["reports"] == {"html": None, "junit": None, "logs": "vfu-logs"}
    cases = {c["id"]: c for c in data["cases"]}
    assert cases["dev/nine-regions"]["verdict"] == "FAIL"
    assert cases["dev/ten-regions"]["verdict"] == "NON-STRICT"  # logs for SHOULDs not met too
    wire = pytester.path / "out" / cases["dev/nine-regions"]["artifacts"]["wire_log"]
    assert wire == pytester.path / "out" / "vfu-logs" / "dev" / "nine-regions" / "wire.txt"
    assert ">> DEVICE_GET_INFO command" in wire.read_text()
    assert (pytester.path / "out" / cases["dev/ten-regions"]["artifacts"]["wire_log"]).is_file()
    assert cases["dev/info"]["artifacts"] == {}
    # The next run empties the logs directory first: nothing stale is left.
    pytester.makepyfile(FAILING_CASES.replace("== 9", "== 1"))
    run(pytester, "--vfu-server", server, "--vfu-json=out/vfu.json").assert_outcomes(
        passed=2, xfailed=1
    )
    assert not wire.exists()
    assert (pytester.path / "out" / "vfu-logs" / "dev" / "ten-regions" / "wire.txt").is_file()


INCREMENTAL = """
import json, time
from pathlib import Path
from pytest_vfiouser import case, MUST

@case("dev/first", MUST)
def test_first(vfu_client):
    assert vfu_client.device_get_info().ok

@case("dev/second", MUST)
def test_second(vfu_client):
    deadline = time.monotonic() + 10  # the report of the run so far, once it has the first
    data = None
    while not (data and data["cases"]) and time.monotonic() < deadline:
        if Path("vfu.json").exists():
            data = json.loads(Path("vfu.json").read_text())
        time.sleep(0.02)
    Path("seen.json").write_text(json.dumps(data))
"""

# The final file is what json.dumps(build_json(...), indent=2) makes of the run.
SAME_AS_BUILD = """
import json
from pathlib import Path
import pytest
from pytest_vfiouser.plugin import get_state
from pytest_vfiouser.report import build_json, combine_targets

@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    state = get_state(session.config)
    path = Path("vfu.json")
    text = path.read_text()
    data = build_json(state, combine_targets(state.target_summaries), path.resolve().parent)
    data["run"]["duration"] = json.loads(text)["run"]["duration"]
    Path("same.txt").write_text(str(json.dumps(data, indent=2) + "\\n" == text))
"""


def test_the_report_is_written_while_the_run_goes_on(pytester: pytest.Pytester):
    pytester.makeconftest(SAME_AS_BUILD)
    pytester.makepyfile(INCREMENTAL)
    result = run(pytester, "--vfu-server", script_server(pytester.path), "--vfu-json=vfu.json")
    result.assert_outcomes(passed=2)
    seen = json.loads((pytester.path / "seen.json").read_text())
    validate(seen)
    assert [c["case_id"] for c in seen["cases"]] == ["dev/first"]
    assert seen["run"]["finished"] is False and seen["run"]["failed"] is True
    assert seen["run"]["interrupted"] is None and seen["summary"]["cases"] == 1
    final = json.loads((pytester.path / "vfu.json").read_text())
    validate(final)
    assert final["run"]["finished"] is True and final["run"]["failed"] is False
    assert [c["case_id"] for c in final["cases"]] == ["dev/first", "dev/second"]
    assert (pytester.path / "same.txt").read_text() == "True"


def test_an_interrupted_run_says_so(pytester: pytest.Pytester):
    pytester.makepyfile("""
        from pytest_vfiouser import case, MUST

        @case("dev/first", MUST)
        def test_first(vfu_client):
            assert vfu_client.device_get_info().ok

        @case("dev/stop", MUST)
        def test_stop(vfu_client):
            raise KeyboardInterrupt

        @case("dev/never", MUST)
        def test_never(vfu_client):
            pass
    """)
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path),
        "--vfu-json=vfu.json",
        "--junitxml=junit.xml",
        subprocess=True,  # an inline run raises the KeyboardInterrupt again, here
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        ["result: INTERRUPTED (interrupted: KeyboardInterrupt) after 1 cases (so far: no FAIL*"]
    )
    data = json.loads((pytester.path / "vfu.json").read_text())
    validate(data)
    assert data["run"]["interrupted"] == {
        "reason": "interrupted: KeyboardInterrupt",
        "signal": None,
    }
    assert data["run"]["failed"] is True and data["run"]["finished"] is True
    assert [c["case_id"] for c in data["cases"]] == ["dev/first"]
    props = {
        p.get("name"): p.get("value")
        for p in ET.parse(pytester.path / "junit.xml").getroot().iter("property")
    }
    assert props["vfu_interrupted"] == "interrupted: KeyboardInterrupt"
