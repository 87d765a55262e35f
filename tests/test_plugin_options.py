"""Options, ini keys, usage errors, markers and case()."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from scriptservers import INNER_ARGS, run, script_server

from pytest_vfiouser import MUST, SHOULD, case
from pytest_vfiouser.plugin import requirement_text

pytest_plugins = ["pytester"]

CASE_FILE = """
from pytest_vfiouser import case, MUST

@case("alpha/one", MUST)
def test_one(vfu_spec):
    print("SPEC", vfu_spec)
"""


@pytest.fixture
def server(pytester: pytest.Pytester) -> str:
    return script_server(pytester.path)


BAD_PROFILE = '[device]\nnum_regions = "nine"\n'


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--vfu-spec", "1.0"],
            "*--vfu-spec: unknown spec revision '1.0'; use one of 0.9.1, 0.9.2*",
        ),
        (["--vfu-timeout", "0"], "*--vfu-timeout: must be a positive number of seconds, got 0*"),
        (["--vfu-timeout", "-2"], "*--vfu-timeout: must be a positive number*"),
        (["--vfu-timeout", "soon"], "*--vfu-timeout: 'soon' is not a number of seconds*"),
        (
            ["--vfu-start-timeout", "never"],
            "*--vfu-start-timeout: 'never' is not a number of seconds*",
        ),
        (["--vfu-start-timeout", "inf"], "*--vfu-start-timeout: must be a positive number*"),
        (
            ["--vfu-restart", "sometimes"],
            "*--vfu-restart: unknown policy 'sometimes'; use one of per-test*",
        ),
        (["--vfu-server", "srv --listen x"], "*--vfu-server: *has neither {socket} nor {fd}*"),
        (["--vfu-server", "srv {socket}", "--vfu-socket", "/tmp"], "*give one or the other*"),
        (["--vfu-env", "NOEQUALS"], "*--vfu-env: 'NOEQUALS' is not KEY=VALUE*"),
        (
            ["--vfu-socket", "/nonexistent/vfu.sock"],
            "*/nonexistent/vfu.sock does not exist; is the server running?*",
        ),
        (
            ["--vfu-profile", "missing.toml"],
            "*--vfu-profile: invalid profile: *missing.toml: cannot read profile*",
        ),
        (
            ["--vfu-profile", "bad.toml"],
            "*bad.toml: device.num_regions: expected an integer, got string*",
        ),
        (["--vfu-profile", "v2.toml"], "*profile 'v2' is for spec 0.9.2, but --vfu-spec is 0.9.1*"),
        (["--vfu-profile", "mig2.toml"], "*enables migration_v2, which spec 0.9.1 does not have*"),
        (
            ["--vfu-section", "nope"],
            "*--vfu-section: unknown section 'nope'; known sections: alpha*",
        ),
        (
            ["--vfu-fuzz-db", "db"],
            "*--vfu-fuzz-db: the ci fuzz effort is derandomized *give --vfu-fuzz campaign*",
        ),
        (
            ["--vfu-fuzz", "campaign", "--vfu-fuzz-db", "bad.toml"],
            "*--vfu-fuzz-db: */bad.toml is not a directory*",
        ),
        (
            ["--vfu-fuzz", "campaign", "--vfu-fuzz-db", "bad.toml/db"],
            "*--vfu-fuzz-db: */bad.toml/db cannot be made there: */bad.toml is not a directory*",
        ),
        (
            ["--vfu-fuzz", "campaign", "--vfu-fuzz-db", " "],
            "*--vfu-fuzz-db: the database is empty*",
        ),
    ],
)
def test_usage_errors(pytester: pytest.Pytester, args, message):
    pytester.makepyfile(CASE_FILE)
    pytester.makefile(
        ".toml",
        bad=BAD_PROFILE,
        v2='[profile]\nspec = "0.9.2"\n',
        mig2="[features]\nmigration_v2 = true\n",
    )
    result = run(pytester, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    result.stdout.no_fnmatch_line("*SPEC*")


def test_a_profile_usage_error_lists_every_error(pytester: pytest.Pytester):
    pytester.makepyfile(CASE_FILE)
    pytester.makefile(".toml", bad=BAD_PROFILE + "num_irqs = -1\n[features]\nmmapp = true\n")
    result = run(pytester, "--vfu-profile", "bad.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "*--vfu-profile: invalid profile: *bad.toml: 3 errors",
            "*bad.toml: device.num_regions: expected an integer, got string",
            "*bad.toml: device.num_irqs: must not be negative, got -1",
            "*bad.toml: features.mmapp: unknown feature (did you mean 'mmap'?)*",
        ]
    )


def test_ini_options_and_command_line_precedence(pytester: pytest.Pytester, server):
    pytester.makepyfile(CASE_FILE)
    pytester.makeini(f"[pytest]\nvfu_spec = 0.9.2\nvfu_server = {server}\nvfu_timeout = 2\n")
    result = run(pytester, "-s")
    result.stdout.fnmatch_lines(["*SPEC 0.9.2*", "*spec 0.9.2;*timeout 2 s*"])
    result = run(pytester, "-s", "--vfu-spec", "0.9.1")
    result.stdout.fnmatch_lines(["*SPEC 0.9.1*"])
    assert result.ret == 0


def test_bad_ini_value_is_a_usage_error(pytester: pytest.Pytester):
    pytester.makepyfile(CASE_FILE)
    pytester.makeini("[pytest]\nvfu_timeout = 0\n")
    result = run(
        pytester,
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--vfu-timeout: must be a positive number*"])


def test_markers_registered_for_strict_markers(pytester: pytest.Pytester, server):
    pytester.makepyfile(
        CASE_FILE
        + """
import pytest

@pytest.mark.vfu_requirement("alpha/two")
@pytest.mark.vfu_should
@pytest.mark.vfu_revision("0.9.1")
@pytest.mark.vfu_requires("mmap")
def test_two():
    pass
"""
    )
    result = run(pytester, "--strict-markers", "--vfu-server", server)
    result.assert_outcomes(passed=2)
    result = run(pytester, "--markers")
    result.stdout.fnmatch_lines(
        ["@pytest.mark.vfu_requirement(id)*", "@pytest.mark.vfu_requires(*features)*"]
    )


def test_plugin_is_inert_for_plain_tests(pytester: pytest.Pytester):
    pytester.makepyfile("def test_plain():\n    pass\n")
    result = run(pytester, "--junitxml=out.xml")
    result.assert_outcomes(passed=1)
    result.stdout.no_fnmatch_line("*vfio-user*")
    assert "vfu_verdict" not in (pytester.path / "out.xml").read_text()


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("Header/x", MUST), {}, "must look like 'section/name'"),
        (("header", MUST), {}, "must look like 'section/name'"),
        (("header/x", "MUST"), {}, "level must be MUST, SHOULD or MAY"),
        (("header/x", MUST), {"requires": ("wings",)}, "unknown requirement 'wings'"),
        (("header/x", MUST), {"revisions": ("1.0",)}, "unknown revision '1.0'"),
    ],
)
def test_case_rejects_mistakes(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        case(*args, **kwargs)


def test_case_applies_marks():
    @case(
        "header/reply-echoes-msg-id",
        SHOULD,
        requires=("mmap", "vfu_trigger_irq"),
        revisions=("0.9.2",),
    )
    def f():
        """Replies echo the msg_id.

        More words.

        Spec (Header): "Message ID identifies the message, and is echoed in
        the command's reply message."
        """

    marks = {m.name: m.args for m in f.pytestmark}
    assert marks == {
        "vfu_requirement": ("header/reply-echoes-msg-id",),
        "vfu_section": ("header",),
        "vfu_should": (),
        "vfu_revision": ("0.9.2",),
        "vfu_requires": ("mmap", "vfu_trigger_irq"),
    }
    assert requirement_text(f) == (
        "Replies echo the msg_id.\n"
        "Spec (Header): \"Message ID identifies the message, and is echoed in the command's "
        'reply message."'
    )


HOOKS_MODULE = """
CALLS = []

def pytest_vfu_trigger_irq(client, device, index, subindex):
    print("HOOK trigger_irq", index, subindex)
    return True
"""

HOOK_CASE = """
from pytest_vfiouser import case, MUST

@case("alpha/irq", MUST, requires=("vfu_trigger_irq",))
def test_irq(vfu_client, vfu_hooks):
    assert vfu_hooks.trigger_irq(vfu_client, 2, 5) is True
"""


def test_profile_hooks_module_is_registered(pytester: pytest.Pytester, server):
    """[profile] hooks names a module whose pytest_vfu_* hooks the cases then call."""
    pytester.makepyfile(HOOK_CASE)
    pytester.makepyfile(my_device_hooks=HOOKS_MODULE)
    pytester.makefile(".toml", prof='[profile]\nhooks = "my_device_hooks"\n')
    pytester.syspathinsert()
    result = run(pytester, "--vfu-server", server, "--vfu-profile", "prof.toml", "-s")
    result.stdout.fnmatch_lines(["*HOOK trigger_irq 2 5*"])
    assert result.ret == 0


def test_profile_hooks_module_that_does_not_import(pytester: pytest.Pytester, server):
    pytester.makepyfile(HOOK_CASE)
    pytester.makefile(".toml", prof='[profile]\nhooks = "no_such_module_here"\n')
    result = run(pytester, "--vfu-server", server, "--vfu-profile", "prof.toml")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*profile.hooks: cannot import 'no_such_module_here'*"])


def test_embedded_server_serves_the_revision_asked_with_its_profile_of_it(
    pytester: pytest.Pytester,
):
    """At --vfu-spec 0.9.2 the embedded reference server serves 0.9.2, described by its
    0.9.2 profile (default-0.9.2.toml: 9 regions, migration through DEVICE_FEATURE)."""
    pytester.makepyfile(CASE_FILE)
    result = run(pytester, "--vfu-spec", "0.9.2")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-2000:]
    out = result.stdout.str()
    assert "--spec=0.9.2" in out and "default-0.9.2.toml" in out.replace("\n  ", "")


def test_the_conformance_cases_use_only_registered_marks():
    """A mark misspelt (or left without the vfu_ prefix) in a case would be ignored."""
    suite = Path(__file__).resolve().parents[1] / "conformance"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *INNER_ARGS, "--collect-only", "-q"]
        + ["--strict-markers", str(suite)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
