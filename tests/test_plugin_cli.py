"""vfio-user-conformance (cli.py) and the embedded reference server's profile and hooks."""

from __future__ import annotations

import json
import struct
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from scriptservers import cli, run, script_server

from pytest_vfiouser.device import load_profile
from reference_server import registers as R

pytest_plugins = ["pytester"]

REFERENCE_PROFILE = (
    Path(__file__).resolve().parents[1] / "reference_server" / "profiles" / "default.toml"
)


def test_console_scripts_declared():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["vfio-user-conformance"] == "pytest_vfiouser.cli:main"
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins["vfiouser"] == "pytest_vfiouser.plugin"


def test_cli_against_the_reference_server(tmp_path: Path):
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --vfu-spec=bogus\n")  # must not apply
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
    assert "vfu_verdict" in (reports / "junit.xml").read_text()


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
