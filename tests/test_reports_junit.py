"""JUnit XML for CI dashboards: valid against the JUnit schema Jenkins and GitLab read
(tests/schemas/junit-10.xsd), the case id as the test name, the section as the class, the
verdict in the type and message of the failure, error or skipped element."""

from __future__ import annotations

import shlex
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from scriptservers import cli

xmlschema = pytest.importorskip("xmlschema", reason="the [test] extra brings xmlschema")

SCHEMA = Path(__file__).parent / "schemas" / "junit-10.xsd"
FAULTY = "vfio-user-faulty-server --socket-path={socket}"


@pytest.fixture(scope="module")
def schema():
    return xmlschema.XMLSchema(SCHEMA)


def _cases(path: Path) -> dict[str, ET.Element]:
    return {tc.get("name"): tc for tc in ET.parse(path).iter("testcase")}


def _assert_valid(schema, path: Path) -> None:
    errors = [str(e.reason) for e in schema.iter_errors(str(path))]
    assert not errors, errors[:3]


def test_faulty_server_junit_is_valid_and_names_verdicts(tmp_path, schema):
    """FAIL, CRASH and HANG cases (and passing, skipped and xfailed ones) from a server with
    three faults: a valid file whose testcases are the cases, their verdicts typed."""
    server = f"{FAULTY} --fault framing-unchecked --fault empty-payload-reads-next"
    server += " --fault msg-id-8bit"
    result = cli(
        tmp_path,
        "--vfu-server",
        server,
        "--vfu-section",
        "header",
        "--vfu-section",
        "argsz",
        "--vfu-timeout",
        "1",
    )
    assert result.returncode == 1, result.stdout[-3000:]
    junit = tmp_path / "reports" / "junit.xml"
    _assert_valid(schema, junit)
    text = junit.read_text()
    assert "<properties" not in text.split("<testcase", 1)[1]  # none in any testcase
    assert " object at 0x" not in text and "FixtureRequest" not in text
    cases = _cases(junit)

    fail = cases["header/reply-echoes-msg-id[32768]"]
    assert fail.get("classname") == "header"
    failure = fail.find("failure")
    assert failure.get("type") == "FAIL"
    assert failure.get("message").startswith("FAIL: the reply to msg_id 32768 carries msg_id 0")
    assert "level: MUST" in fail.find("system-out").text

    crashes = [tc for tc in cases.values() if tc.find("failure[@type='CRASH']") is not None]
    assert crashes and all(
        tc.find("failure").get("message").startswith("CRASH: server killed by SIG")
        for tc in crashes
    )
    hangs = [tc for tc in cases.values() if tc.find("failure[@type='HANG']") is not None]
    assert hangs and all(
        tc.find("failure").get("message").startswith("HANG: no reply in time") for tc in hangs
    )
    assert any(tc.find("skipped[@type='NON-STRICT']") is not None for tc in cases.values())
    assert any(tc.find("skipped[@type='UNIMPLEMENTED']") is not None for tc in cases.values())
    passing = cases["header/reply-echoes-msg-id[0]"]
    assert passing.find("failure") is None and passing.find("skipped") is None
    assert passing.find("system-out").text.startswith("verdict: PASS\n")

    suite = ET.parse(junit).getroot().find("testsuite")
    assert int(suite.get("tests")) == len(cases)
    assert int(suite.get("failures")) == sum(
        tc.find("failure") is not None for tc in cases.values()
    )
    assert int(suite.get("errors")) == 0


def test_start_failure_junit_is_valid(tmp_path, schema):
    """A server that cannot start: one ERROR, the rest NOT-RUN (skipped, typed so)."""
    server = shlex.join([sys.executable, "-c", "import sys; sys.exit(3)", "{socket}"])
    result = cli(tmp_path, "--vfu-server", server, "--vfu-section", "version")
    assert result.returncode == 6  # the target could not start (verdict.ExitStatus)
    junit = tmp_path / "reports" / "junit.xml"
    _assert_valid(schema, junit)
    cases = _cases(junit)
    errors = [tc for tc in cases.values() if tc.find("error") is not None]
    assert len(errors) == 1
    error = errors[0].find("error")
    assert error.get("type") == "ERROR"
    assert error.get("message") == "ERROR: the target could not start: exited with status 3"
    not_run = [tc for tc in cases.values() if tc.find("skipped[@type='NOT-RUN']") is not None]
    assert len(not_run) == len(cases) - 1 - sum(
        tc.find("skipped[@type='UNIMPLEMENTED']") is not None for tc in cases.values()
    )
    assert ET.parse(junit).getroot().find("testsuite").get("errors") == "1"


def test_pytest_junit_of_plain_tests_is_left_alone(pytester: pytest.Pytester):
    """Tests that are not cases keep pytest's testcase (and their own properties)."""
    pytester.makepyfile(
        "def test_plain(record_property):\n    record_property('mine', 1)\n    assert False\n"
    )
    pytester.runpytest(
        "-p", "no:hypothesispytest", "--junitxml=out.xml", "-o", "junit_family=xunit1"
    )
    case = ET.parse(pytester.path / "out.xml").find(".//testcase")
    assert case.get("name") == "test_plain"
    assert case.find("properties/property").get("name") == "mine"
    assert case.find("failure") is not None
