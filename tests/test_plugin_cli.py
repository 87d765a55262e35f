"""vfio-user-conformance (cli.py) and the embedded reference server's profile and hooks."""

from __future__ import annotations

import ast
import json
import re
import signal
import struct
import subprocess
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from scriptservers import cli, run, script_server

import conformance
import conformance_client
from pytest_vfiouser import __version__
from pytest_vfiouser.device import load_profile
from pytest_vfiouser.verdict import ExitStatus
from reference_server import registers as R

pytest_plugins = ["pytester"]

CLI = [sys.executable, "-P", "-m", "pytest_vfiouser.cli", "-p", "no:hypothesispytest"]
REFERENCE_PROFILE = (
    Path(__file__).resolve().parents[1] / "reference_server" / "profiles" / "default.toml"
)


def test_console_scripts_declared():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["vfio-user-conformance"] == "pytest_vfiouser.cli:main"
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins["vfiouser"] == "pytest_vfiouser.plugin"


def test_cli_against_the_reference_server(tmp_path: Path):
    proc = cli(tmp_path, "--vfu-section", "device_info")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reports = tmp_path / "reports"
    assert {p.name for p in reports.iterdir()} >= {
        "conformance.html",
        "conformance.json",
        "junit.xml",
    }
    data = json.loads((reports / "conformance.json").read_text())
    assert data["run"]["profile"]["name"] == "reference"
    assert data["run"]["target"]["command"].split()[1:3] == ["-m", "reference_server"]
    verdicts = {c["verdict"] for c in data["cases"]}
    # device_info/no-reset-flag-reset-refused does not apply: the device has reset.
    assert "PASS" in verdicts and verdicts <= {"PASS", "UNIMPLEMENTED"}, verdicts
    assert all(c["nodeid"].startswith("conformance/test_device_info.py::") for c in data["cases"])
    assert 'classname="device_info"' in (reports / "junit.xml").read_text()


def test_cli_exit_status_failure_and_usage_error(tmp_path: Path):
    proc = cli(
        tmp_path,
        "--vfu-server",
        script_server(tmp_path),
        "--vfu-section",
        "device_info",
        "--vfu-json",
        "out.json",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    verdicts = {
        c["case_id"]: c["verdict"] for c in json.loads((tmp_path / "out.json").read_text())["cases"]
    }
    assert verdicts["device_info/pci-num-regions"] == "FAIL"  # the script server has 1 region
    proc = cli(tmp_path, "--vfu-timeout", "-1")
    assert proc.returncode == 4
    assert "--vfu-timeout: must be a positive number of seconds, got -1" in proc.stderr


def test_reference_profile_agrees_with_registers():
    profile = load_profile(REFERENCE_PROFILE)
    assert profile.device.num_regions == R.NUM_REGIONS and profile.device.num_irqs == R.NUM_IRQS
    sizes = {
        R.REGISTERS_REGION: R.REGISTERS_SIZE,
        R.RAM_REGION: R.RAM_SIZE,
        R.DMA_RAM_REGION: R.DMA_RAM_SIZE,
        R.READONLY_REGION: R.READONLY_SIZE,
        R.WRITEONLY_REGION: R.WRITEONLY_SIZE,
        R.CONFIG_REGION: R.CONFIG_SIZE,
    }
    for index, size in sizes.items():
        assert profile.regions[index].size == size
    assert profile.scratch_ranges(R.REGISTERS_REGION) == ((R.scratch(0), 4 * R.SCRATCH_COUNT),)
    assert dict(profile.regions[R.READONLY_REGION].reset_values)[0] == R.pattern_bytes(0, 4)
    assert dict(profile.regions[R.REGISTERS_REGION].reset_values)[R.REG_ID][:4] == struct.pack(
        "<I", R.ID_VALUE
    )
    for index, (count, _) in R.DEFAULT_IRQS.items():
        assert profile.irqs[index].count == count


def test_reference_hooks_trigger_irq_and_dma(pytester: pytest.Pytester):
    pytester.makepyfile("""
        import os
        from pytest_vfiouser import case, MUST
        from pytest_vfiouser.protocol import IrqSetFlags

        @case("hooks/irq", MUST, requires=("irq_trigger",))
        def test_irq(vfu_client, vfu_hooks):
            efd = os.eventfd(0, os.EFD_NONBLOCK)
            try:
                flags = IrqSetFlags.DATA_EVENTFD | IrqSetFlags.ACTION_TRIGGER
                vfu_client.set_irqs(2, flags, 3, 1, fds=[efd]).check()
                assert vfu_hooks.trigger_irq(vfu_client, 2, 3) is True
                assert os.eventfd_read(efd) == 1
            finally:
                os.close(efd)

        @case("hooks/dma", MUST, requires=("dma_engine", "vfu_device_state"))
        def test_dma(vfu_client, vfu_hooks):
            vfu_client.dma_map(0x10000, 0x1000).check()
            vfu_client.memory.write(0x10000, b"hello dma")
            assert vfu_hooks.trigger_dma(vfu_client, "read", 0x10000, 9, 0x100).ok
            assert vfu_client.region_read(2, 0x100, 9).check().body.data == b"hello dma"
            state = vfu_hooks.device_state(vfu_client)
            assert b"hello dma" in state and state == vfu_hooks.device_state(vfu_client)
    """)
    result = run(pytester)
    result.assert_outcomes(passed=2)


def test_reference_hooks_are_only_automatic_for_the_embedded_server(pytester: pytest.Pytester):
    """... in a conformance session (a test using a vfu_* fixture): another project's
    session imports no hooks module."""
    test = """
        def test_hooks(request{}):
            hook = request.config.pluginmanager.hook
            print("IMPLS", len(hook.pytest_vfu_trigger_irq.get_hookimpls()))
    """
    pytester.makepyfile(test.format(", vfu_spec"))
    run(pytester, "-s").stdout.fnmatch_lines(["*IMPLS 1*"])
    run(pytester, "-s", "--vfu-server", script_server(pytester.path)).stdout.fnmatch_lines(
        ["*IMPLS 0*"]
    )
    pytester.makepyfile(test.format(""))
    run(pytester, "-s").stdout.fnmatch_lines(["*IMPLS 0*"])


@pytest.mark.parametrize(
    "timeout, verdict", [("30", "PASS"), ("1", "HANG")], ids=["timeout-above-delay", "below"]
)
def test_every_wait_is_the_vfu_timeout(tmp_path: Path, timeout, verdict):
    """A server that takes 2.5 s to refuse something (slow, not wrong) passes when
    --vfu-timeout allows for it (no case waits less than the timeout it was given), and
    hangs when the timeout is shorter than the delay."""
    proc = cli(
        tmp_path,
        "--vfu-server",
        script_server(tmp_path, "--delay-errors", "2.5"),
        "--vfu-timeout",
        timeout,
        "--vfu-section",
        "region_info",
        "-k",
        "test_index_out_of_range and u32",
        "--vfu-json",
        "out.json",
    )
    cases = json.loads((tmp_path / "out.json").read_text())["cases"]
    assert [(c["case_id"], c["verdict"]) for c in cases] == [
        ("region_info/index-out-of-range", verdict)
    ], proc.stdout + proc.stderr


def test_cli_in_a_checkout_runs_the_installed_suite(tmp_path: Path):
    """From a directory with a ``conformance/`` folder of its own (a checkout of this
    project, with the package installed from it), the installed suite runs, alone."""
    (tmp_path / "conformance").mkdir()
    (tmp_path / "conformance" / "__init__.py").write_text("")
    (tmp_path / "conformance" / "conftest.py").write_text("raise RuntimeError('not me')\n")
    proc = cli(tmp_path, "--vfu-section", "device_info", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "not me" not in proc.stdout + proc.stderr


def test_cli_help_version_and_no_reports_directory(tmp_path: Path):
    """Its own --help: the vfio-user options first, then the subcommands, the exit
    statuses, a pointer to pytest --help; --version is the suite's; neither creates
    reports/."""
    proc = cli(tmp_path, "--help")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    places = [
        text.index(word)
        for word in (
            "--vfu-server SERVER",
            "\nsubcommands:",
            "\n  compare RUN.json",
            "\nexit statuses:",
        )
    ]
    assert places == sorted(places), text
    for status in ExitStatus:
        assert f"\n  {int(status)}  {status.text.split()[0]}" in text
    assert "see pytest --help" in text and "--vfu-section NAME" in text
    proc = cli(tmp_path, "--version")
    assert proc.stdout.startswith(f"vfio-user-conformance {__version__} (pytest "), proc.stdout
    assert not (tmp_path / "reports").exists()


def test_cli_honours_the_configuration_file_of_the_current_directory(tmp_path: Path):
    """vfu_* keys of the pytest.ini pytest would use (here the parent directory's) apply,
    and the header names it; -c names another; the exit status of a target that could
    not start is its own."""
    (tmp_path / "pytest.ini").write_text(
        f"[pytest]\nvfu_server = {script_server(tmp_path, '--fail-start')}\n"
    )
    (tmp_path / "other.ini").write_text("[pytest]\nvfu_spec = 0.9.9\n")
    below = tmp_path / "below"
    below.mkdir()
    proc = cli(below, "--vfu-section", "device_info", "--vfu-json", "out.json")
    assert proc.returncode == ExitStatus.TARGET_NOT_STARTED, proc.stdout + proc.stderr
    assert f"vfio-user-conformance: configuration file {tmp_path / 'pytest.ini'}" in proc.stdout
    data = json.loads((below / "out.json").read_text())
    assert "scriptserver.py" in data["run"]["target"]["command_template"]
    proc = cli(below, "-c", str(tmp_path / "other.ini"))
    assert proc.returncode == ExitStatus.USAGE_ERROR
    assert "--vfu-spec: unknown spec revision '0.9.9'" in proc.stderr
    (below / "pytest.ini").write_text("[pytest\n")
    proc = cli(below)
    assert proc.returncode == ExitStatus.USAGE_ERROR
    assert proc.stderr.startswith(f"ERROR: {below / 'pytest.ini'}:1: "), proc.stderr


def test_cli_exit_statuses_nothing_selected_and_interrupted(tmp_path: Path):
    proc = cli(tmp_path, "--vfu-section", "device_info", "-k", "no_such_case")
    assert proc.returncode == ExitStatus.NO_CASES, proc.stdout + proc.stderr
    # Once a case is judged, every new server sleeps before it listens: SIGTERM then.
    server = script_server(tmp_path, "--slow-start-if", str(tmp_path / "slow"))
    command = [*CLI, "--vfu-server", server, "--vfu-section", "device_info"]
    command += ["--vfu-restart", "per-test"]
    with subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True) as child:
        deadline = time.monotonic() + 60
        while not (tmp_path / "reports" / "conformance.json").exists():
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.02)
        (tmp_path / "slow").touch()
        while not (tmp_path / "slow.started").exists():
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=60)
    assert child.returncode == ExitStatus.INTERRUPTED, out
    assert "result: INTERRUPTED by SIGTERM" in out


def test_cli_runs_that_judge_no_case_leave_the_last_reports(tmp_path: Path):
    """--collect-only, --fixtures, a -k selecting nothing, an unknown --vfu-section, an
    unprefixed or malformed -m: no report is written (nor the logs emptied); the usage errors come
    before the session header."""
    proc = cli(tmp_path, "--vfu-server", script_server(tmp_path), "--vfu-section", "device_info")
    assert proc.returncode == ExitStatus.FAILED, proc.stdout + proc.stderr
    reports = tmp_path / "reports"
    before = {p: p.read_bytes() for p in reports.rglob("*") if p.is_file()}
    assert any(p.name == "wire.txt" for p in before), "the FAIL left its logs"
    runs = [
        (("--collect-only",), ExitStatus.OK, None),
        (("--fixtures",), ExitStatus.OK, None),
        (("-k", "no_such_case"), ExitStatus.NO_CASES, None),
        (("--vfu-section", "device_inf"), ExitStatus.USAGE_ERROR, "unknown section 'device_inf'"),
        (("-m", "must and not may"), ExitStatus.USAGE_ERROR, "-m 'vfu_must and not vfu_may'"),
        (("-m", "vfu_must and"), ExitStatus.USAGE_ERROR, "Wrong expression passed to '-m'"),
        (("-k", "or"), ExitStatus.USAGE_ERROR, "Wrong expression passed to '-k'"),
    ]
    for args, status, error in runs:
        proc = cli(tmp_path, "--vfu-section", "device_info", *args)
        assert proc.returncode == status, (args, proc.stdout + proc.stderr)
        if error is not None:
            assert error in proc.stderr, (args, proc.stderr)
            assert "test session starts" not in proc.stdout, args
        after = {p: p.read_bytes() for p in reports.rglob("*") if p.is_file()}
        assert after == before, args


@pytest.mark.parametrize("option", ["--vfu-json", "--html", "--junitxml"])
def test_cli_report_paths_are_checked_before_the_run(tmp_path: Path, option):
    proc = cli(tmp_path, option, "/proc/nope/x.out")
    assert proc.returncode == ExitStatus.USAGE_ERROR, proc.stdout + proc.stderr
    assert proc.stderr.startswith(
        f"ERROR: {option}: cannot create /proc/nope/x.out: no file can be created in /proc"
    ), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and "INTERNALERROR" not in proc.stdout
    assert not (tmp_path / "reports").exists()


def test_cli_collect_only_quiet_lists_the_case_ids(tmp_path: Path):
    """One case id a line (section/name[params]); their sections are the suite's SECTIONS,
    which --vfu-section is checked against."""
    proc = cli(tmp_path, "--collect-only", "-q")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    *ids, count = proc.stdout.splitlines()
    # The cases of the other revision (0.9.2 only, at the default 0.9.1) are deselected.
    assert re.fullmatch(rf"{len(ids)} cases( \(\d+ deselected\))?", count), count
    assert all(re.fullmatch(r"[a-z0-9_]+/[a-z0-9_./-]+(\[\S+\])?", i) for i in ids), ids
    assert "device_info/reply-argsz" in ids and len(set(ids)) == len(ids)
    at_0_9_2 = cli(tmp_path, "--collect-only", "-q", "--vfu-spec", "0.9.2").stdout.splitlines()
    by_revision = {"0.9.1": ids, "0.9.2": at_0_9_2[:-1]}
    for revision, listed in by_revision.items():  # each revision's, ONLY_AT's sections aside
        shown = {i.split("/", 1)[0] for i in listed}
        others = {s for s, r in conformance.ONLY_AT.items() if r != revision}
        assert shown == set(conformance.SECTIONS) - others, (revision, shown)
    # Issue 15's measure, and the README's: cases (not parametrizations) only 0.9.2 has.
    only_0_9_2 = {i.split("[")[0] for i in at_0_9_2[:-1]} - {i.split("[")[0] for i in ids}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert len(only_0_9_2) >= 80 and f"a run covers {len(only_0_9_2)} cases" in readme
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("package", [conformance, conformance_client], ids=lambda p: p.__name__)
def test_each_case_lives_in_a_module_named_after_its_section(package):
    """What lets --vfu-section leave the other modules uncollected (unselected_module):
    a case of section ``dma`` is in test_dma.py or test_dma_*.py, one of ``client/fds`` in
    test_fds.py."""
    folder = Path(package.__file__).parent
    found = {}
    for module in sorted(folder.glob("test_*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "case":
                first = node.args[0]
                assert isinstance(first, ast.Constant), f"{module.name}:{node.lineno}"
                section = first.value.rsplit("/", 1)[0]
                found.setdefault(section, set()).add(module.stem)
    assert set(found) == set(package.SECTIONS)
    for section, stems in found.items():
        name = "test_" + section.rsplit("/", 1)[-1]
        assert all(s == name or s.startswith(name + "_") for s in stems), (section, stems)


def test_a_section_run_collects_only_its_modules(tmp_path: Path):
    """--vfu-section fuzz --vfu-section dma: the cases of test_fuzz_*.py and test_dma*.py,
    nothing else collected (a case deselected there is of the other revision)."""
    proc = cli(tmp_path, "--collect-only", "-q", "--vfu-section", "fuzz", "--vfu-section", "dma")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    *ids, count = proc.stdout.splitlines()
    assert {i.split("/", 1)[0] for i in ids} == {"fuzz", "dma"}
    deselected = int(re.fullmatch(r"\d+ cases \((\d+) deselected\)", count)[1])
    # test_dma_rw.py's and test_dma_logging.py's (0.9.2) are collected, then deselected;
    # the 0.9.2 cases of the whole suite are many more.
    assert 0 < deselected < 60, count


def test_no_html_and_no_junit_when_their_plugins_are_off(tmp_path: Path):
    proc = cli(tmp_path, "--vfu-section", "reset", "-p", "no:html", "-pno:junitxml")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {p.name for p in (tmp_path / "reports").iterdir()} == {"conformance.json"}


def test_the_readme_lists_the_exit_statuses_of_help():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d) \| (.+) \|$", readme, re.M))
    assert rows == {str(int(s)): s.text for s in ExitStatus}
