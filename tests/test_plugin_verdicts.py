"""Verdicts: MUST/SHOULD/MAY, strict, observations, baselines, requires, revisions, sections,
reports."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from scriptservers import load_json, run, script_server

pytest_plugins = ["pytester"]

LEVEL_CASES = '''
from pytest_vfiouser import case, observe, MUST, SHOULD, MAY

@case("levels/must-pass", MUST)
def test_must_pass(vfu_client):
    """DEVICE_GET_INFO answers.

    Spec (DEVICE_GET_INFO): "the server answers"
    """
    assert vfu_client.device_get_info().ok

@case("levels/must-fail", MUST)
def test_must_fail(vfu_client):
    assert vfu_client.reset().ok, "reset refused"

@case("levels/should-fail", SHOULD)
def test_should_fail(vfu_client):
    assert vfu_client.reset().ok, "reset refused"

@case("levels/may-fail", MAY)
def test_may_fail(vfu_client):
    assert vfu_client.reset().ok, "reset refused"

@case("levels/observed", MUST)
def test_observed(vfu_client, vfu_observe):
    vfu_observe("answered with ENOTSUP")
    observe("and said so quickly")

@case("other/revision-2", MUST, revisions=("0.9.2",))
def test_revision_2(vfu_client):
    pass
'''


@pytest.fixture
def server(pytester: pytest.Pytester) -> str:
    return script_server(pytester.path)


def test_verdict_mapping(pytester: pytest.Pytester, server):
    pytester.makepyfile(LEVEL_CASES)
    result = run(
        pytester, "--vfu-server", server, "--vfu-json=vfu.json", "--junitxml=junit.xml", "-rxX"
    )
    result.assert_outcomes(passed=2, failed=1, xfailed=2, deselected=1)
    result.stdout.fnmatch_lines(
        [
            "XFAIL *test_should_fail - NON-STRICT: AssertionError: reset refused",
            "XFAIL *test_may_fail - INFORMATIONAL: AssertionError: reset refused",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "section *PASS*FAIL*NON-STRICT*INFORMATIONAL",
            "levels *1 *1 *1 *2",
            "1 case(s) deselected: not in spec 0.9.1",
            "result: FAILED (1 FAIL)",
        ]
    )
    data = load_json(pytester)
    verdicts = {name: c["verdict"] for name, c in data["by_name"].items()}
    assert verdicts == {
        "test_must_pass": "PASS",
        "test_must_fail": "FAIL",
        "test_should_fail": "NON-STRICT",
        "test_may_fail": "INFORMATIONAL",
        "test_observed": "INFORMATIONAL",
    }
    observed = data["by_name"]["test_observed"]
    assert observed["observations"] == ["answered with ENOTSUP", "and said so quickly"]
    must = data["by_name"]["test_must_pass"]
    assert must["case_id"] == "levels/must-pass" and must["section"] == "levels"
    assert must["level"] == "MUST" and must["duration"] > 0
    assert (
        must["requirement"]
        == 'DEVICE_GET_INFO answers.\nSpec (DEVICE_GET_INFO): "the server answers"'
    )
    assert data["run"]["failed"] is True
    assert data["run"]["negotiated"]["capabilities"] == {"max_msg_fds": 8}

    # JUnit XML: the case id as the name, the section as the class, the verdict typed.
    tree = ET.parse(pytester.path / "junit.xml")
    cases = {tc.get("name"): tc for tc in tree.iter("testcase")}
    must_fail = cases["levels/must-fail"]
    assert must_fail.get("classname") == "levels"
    assert must_fail.find("failure").get("type") == "FAIL"
    assert must_fail.find("failure").get("message") == "FAIL: reset refused"
    assert "level: MUST" in must_fail.find("system-out").text
    assert cases["levels/should-fail"].find("skipped").get("type") == "NON-STRICT"
    assert "server: fds_after=" in cases["levels/must-pass"].find("system-out").text


WEAKER_CASES = """
from pytest_vfiouser import case, MUST, SHOULD, MAY, Unmet

@case("weaker/must-finds-should", MUST)
def test_must_finds_should(vfu_client):
    raise Unmet("only a SHOULD is broken", SHOULD)

@case("weaker/must-finds-may", MUST)
def test_must_finds_may(vfu_client):
    raise Unmet("only a MAY is not met", "may")

@case("weaker/may-never-stronger", MAY)
def test_may_never_stronger(vfu_client):
    raise Unmet("a SHOULD found by a MAY case", SHOULD)

@case("weaker/must-plain", MUST)
def test_must_plain(vfu_client):
    raise Unmet("at the case's own level")

@case("weaker/must-found-while-handling-should", MUST)
def test_must_while_should(vfu_client):
    try:
        raise Unmet("a SHOULD broken first", SHOULD)
    except Unmet:
        raise AssertionError("then a MUST")
"""


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_a_failure_rests_on_the_level_of_its_sentence(pytester: pytest.Pytester, server, strict):
    """An Unmet naming a weaker level than its case's gets that level's verdict (a MUST case
    that finds only a SHOULD broken is NON-STRICT); it never makes a case stronger."""
    pytester.makepyfile(WEAKER_CASES)
    run(pytester, "--vfu-server", server, "--vfu-json=vfu.json", *(["--vfu-strict"] * strict))
    verdicts = {name: c["verdict"] for name, c in load_json(pytester)["by_name"].items()}
    assert verdicts == {
        "test_must_finds_should": "FAIL" if strict else "NON-STRICT",
        "test_must_finds_may": "INFORMATIONAL",
        "test_may_never_stronger": "INFORMATIONAL",
        "test_must_plain": "FAIL",
        "test_must_while_should": "FAIL",
    }


def test_strict_fails_shoulds(pytester: pytest.Pytester, server):
    pytester.makepyfile(LEVEL_CASES)
    result = run(pytester, "--vfu-server", server, "--vfu-strict", "--vfu-json=vfu.json")
    result.assert_outcomes(passed=2, failed=2, xfailed=1, deselected=1)
    assert load_json(pytester)["by_name"]["test_should_fail"]["verdict"] == "FAIL"


def test_baseline_xfails_failures_and_lists_fixed(pytester: pytest.Pytester, server):
    pytester.makepyfile(LEVEL_CASES)
    pytester.makefile(
        ".toml",
        profile="""
[baseline]
"levels/must-fail" = "known bug #12"
"levels/must-pass" = "was broken in 1.0"
"levels/gone" = "case removed long ago"
""",
    )
    result = run(
        pytester,
        "--vfu-server",
        server,
        "--vfu-profile",
        "profile.toml",
        "--vfu-json=vfu.json",
        "-rxX",
    )
    result.assert_outcomes(passed=2, xfailed=3, deselected=1, warnings=1)
    result.stdout.fnmatch_lines(
        [
            "*VfuWarning: profile 'profile': [[]baseline] entries that match no collected case: "
            "levels/gone",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "FIXED (every case these [[]baseline] entries name passed: remove them):",
            "  levels/must-pass (1 case): was broken in 1.0",
            "[[]baseline] entries matching no collected case: levels/gone",
            "result: passed*",
        ]
    )
    result.stdout.fnmatch_lines(
        ["XFAIL *test_must_fail - baseline: known bug #12 (was FAIL: *reset refused)"]
    )
    cases = load_json(pytester)["by_name"]
    assert cases["test_must_fail"]["verdict"] == "BASELINE"
    assert cases["test_must_pass"]["verdict"] == "FIXED"


FAMILIES = """
import pytest
from pytest_vfiouser import case, MUST

@case("fam/mixed", MUST)
@pytest.mark.parametrize("p", ["a", "b"])
def test_mixed(p):
    assert p == "a"

@case("fam/all", MUST)
@pytest.mark.parametrize("p", ["a", "b"])
def test_all(p):
    pass

@case("fam/one", MUST)
@pytest.mark.parametrize("p", ["a", "b"])
def test_one(p):
    assert p == "a"

@case("fam/exact", MUST)
@pytest.mark.parametrize("p", ["a", "b"])
def test_exact(p):
    assert p == "a"
"""


def test_baseline_names_a_family_or_one_parametrization(pytester: pytest.Pytester):
    """A bare case id names every parametrization (its family): a member that passes while
    another still fails is no FIXED, and the entry is listed as fixed once every member
    passed; ``case[params]`` names that one; an entry of a parametrization that does not
    exist is reported."""
    pytester.makepyfile(FAMILIES)
    pytester.makefile(
        ".toml",
        profile="""
[baseline]
"fam/mixed" = "bug #1"
"fam/all" = "bug #2"
"fam/one[b]" = "bug #3"
"fam/exact[a]" = "bug #4"
"fam/exact[b]" = "bug #5"
"fam/one[zzz]" = "bug #6"
""",
    )
    result = run(pytester, "--vfu-profile", "profile.toml", "--vfu-json=vfu.json")
    assert result.ret == 0, result.stdout.str()
    verdicts = {name: c["verdict"] for name, c in load_json(pytester)["by_name"].items()}
    assert verdicts == {
        "test_mixed[a]": "PASS",
        "test_mixed[b]": "BASELINE",
        "test_all[a]": "PASS",
        "test_all[b]": "PASS",
        "test_one[a]": "PASS",
        "test_one[b]": "BASELINE",
        "test_exact[a]": "FIXED",
        "test_exact[b]": "BASELINE",
    }
    lines = result.stdout.lines
    start = lines.index("FIXED (every case these [baseline] entries name passed: remove them):")
    assert lines[start + 1 : start + 4] == [
        "  fam/all (2 cases): bug #2",
        "  fam/exact[a] (1 case): bug #4",
        "[baseline] entries matching no collected case: fam/one[zzz]",
    ]


REQUIRES_CASES = """
from pytest_vfiouser import case, MUST

@case("req/io-fds", MUST, requires=("io_fds",))
def test_io_fds(vfu_client):
    pass

@case("req/mmap", MUST, requires=("mmap",))
def test_mmap(vfu_client):
    pass

@case("req/irq", MUST, requires=("irq_trigger",))
def test_irq(vfu_client, vfu_device, vfu_hooks):
    assert vfu_hooks.trigger_irq(vfu_client, 2, 3) == ("irq", 2, 3, vfu_device.num_regions)

@case("req/state", MUST, requires=("vfu_device_state",))
def test_state(vfu_client):
    pass

@case("req/dma-in-body", MUST)
def test_dma_in_body(vfu_client, vfu_hooks):
    vfu_hooks.trigger_dma(vfu_client, "read", 0x1000, 16)
"""

IRQ_HOOK = """
def pytest_vfu_trigger_irq(client, device, index, subindex):
    return ("irq", index, subindex, device.num_regions)
"""


def test_requires_unimplemented(pytester: pytest.Pytester):
    pytester.makepyfile(REQUIRES_CASES)
    result = run(
        pytester,
        "--vfu-server",
        script_server(pytester.path, "--no-mmap"),
        "--vfu-json=vfu.json",
        "-rs",
    )
    result.assert_outcomes(skipped=5)
    cases = load_json(pytester)["by_name"]
    assert {c["verdict"] for c in cases.values()} == {"UNIMPLEMENTED"}
    messages = {name: c["message"] for name, c in cases.items()}
    assert messages == {
        "test_io_fds": "device has no io_fds",
        "test_mmap": "device has no mmap",
        "test_irq": "needs profile hook vfu_trigger_irq "
        "(a plugin implementing pytest_vfu_trigger_irq)",
        "test_state": "needs profile hook vfu_device_state "
        "(a plugin implementing pytest_vfu_device_state)",
        "test_dma_in_body": "needs profile hook vfu_trigger_dma "
        "(a plugin implementing pytest_vfu_trigger_dma)",
    }


def test_requires_from_profile_and_hooks(pytester: pytest.Pytester, server):
    pytester.makepyfile(REQUIRES_CASES)
    pytester.makeconftest(IRQ_HOOK)
    pytester.makefile(".toml", profile="[features]\nio_fds = false\nmmap = true\n")
    result = run(
        pytester, "--vfu-server", server, "--vfu-profile=profile.toml", "--vfu-json=vfu.json"
    )
    result.assert_outcomes(passed=2, skipped=3)
    cases = load_json(pytester)["by_name"]
    assert cases["test_io_fds"]["message"] == "device has no io_fds"
    assert cases["test_mmap"]["verdict"] == cases["test_irq"]["verdict"] == "PASS"


CLAIMED_CASES = """
import pytest
from pytest_vfiouser import case, MUST

@case("claims/migration", MUST, requires=("migration_v1",))
@pytest.mark.parametrize("step", ["a", "b", "c"])
def test_migration(vfu_client, step):
    pass

@case("claims/migration-too", MUST, requires=("migration_v1",))
def test_migration_too(vfu_client):
    pass

@case("claims/mmap", MUST, requires=("mmap",))
def test_mmap(vfu_client):
    pass

@case("claims/reset", MUST, requires=("reset",))
def test_reset(vfu_client):
    pass
"""


def test_a_declared_feature_the_device_lacks_fails_once(pytester: pytest.Pytester):
    """The profile declares migration_v1, reset and mmap; the device has only mmap: each
    claim it lacks is one FAIL (the profile's key, what discovery found), the other cases
    needing it are NOT-RUN pointing at it, not UNIMPLEMENTED; a claim the device honours
    (mmap) runs."""
    pytester.makepyfile(CLAIMED_CASES)
    pytester.makefile(
        ".toml", profile="[features]\nmigration_v1 = true\nmmap = true\nreset = true\n"
    )
    server = script_server(pytester.path)  # DEVICE_GET_INFO flags: PCI only, no reset
    result = run(
        pytester, "--vfu-server", server, "--vfu-profile=profile.toml", "--vfu-json=vfu.json"
    )
    result.assert_outcomes(errors=2, skipped=3, passed=1)  # a FAIL in setup is an error
    cases = load_json(pytester)["by_name"]
    verdicts = {name: c["verdict"] for name, c in cases.items()}
    assert verdicts == {
        "test_migration[a]": "FAIL",
        "test_migration[b]": "NOT-RUN",
        "test_migration[c]": "NOT-RUN",
        "test_migration_too": "NOT-RUN",
        "test_mmap": "PASS",
        "test_reset": "FAIL",
    }
    failed = cases["test_migration[a]"]["message"]
    assert "profile.toml declares features.migration_v1 = true, but the device lacks it" in failed
    assert "VFIO_REGION_TYPE_MIGRATION (3)" in failed
    assert "VFIO_DEVICE_FLAGS_RESET" in cases["test_reset"]["message"]
    for name in ("test_migration[b]", "test_migration[c]", "test_migration_too"):
        assert cases[name]["message"].endswith(
            "declares features.migration_v1 = true, but the device lacks it "
            "(see claims/migration[a])"
        ), cases[name]["message"]
    notes = load_json(pytester)["run"]["target"]["notes"]
    assert sum("features.migration_v1" in n for n in notes) == 1


def test_sections_and_revision(pytester: pytest.Pytester, server):
    pytester.makepyfile(LEVEL_CASES)
    result = run(pytester, "--vfu-server", server, "--vfu-section", "other", "--vfu-spec", "0.9.2")
    result.assert_outcomes(passed=1, deselected=5)
    result = run(pytester, "--vfu-server", server, "--vfu-section", "other")
    result.assert_outcomes(deselected=6)
