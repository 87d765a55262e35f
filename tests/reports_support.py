"""What tests/test_reports_*.py share: runs of vfio-user-conformance (each made once per
test process, in a temporary directory) and a headless Chromium.

* ``reference_run()``  the embedded reference server, section device_info
* ``reference_b_run()`` the same with a copy of its profile named "reference-b" whose
  [baseline] lists device_info/reply-argsz (which passes: FIXED)
* ``failing_run()``    the script server of scriptservers.py, section device_info,
  aborting on DEVICE_RESET: a FAIL (1 region, not 9), a CRASH, UNIMPLEMENTEDs; its
  stderr has lines (PYTHONVERBOSE) so that stderr.txt is written
* ``profiled_failing_run()`` the same server with a profile ("script-device") that
  expects 9 regions and 2 IRQs: two of device_info/matches-profile's three
  parametrizations FAIL too (one requirement, several rows)

``browser`` is a module-scoped fixture (import it into the test module): a selenium
Chrome driver on /usr/bin/chromium and /usr/bin/chromedriver; the test is skipped
when they (or selenium) are not installed (.ci/run installs them).
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from scriptservers import script_server

REPO = Path(__file__).resolve().parents[1]
REFERENCE_PROFILE = REPO / "reference_server" / "profiles" / "default.toml"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
)

_ROOT = Path(tempfile.mkdtemp(prefix="vfu-reports-tests-"))
atexit.register(shutil.rmtree, _ROOT, True)


def cli(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """vfio-user-conformance (python -m pytest_vfiouser.cli) in ``cwd``."""
    inner = () if args[:1] == ("compare",) else ("-p", "no:hypothesispytest")
    return subprocess.run(
        [sys.executable, "-m", "pytest_vfiouser.cli", *inner, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class CliRun:
    dir: Path
    proc: subprocess.CompletedProcess

    @property
    def reports(self) -> Path:
        return self.dir / "reports"

    @property
    def json_path(self) -> Path:
        return self.reports / "conformance.json"

    @property
    def html_path(self) -> Path:
        return self.reports / "conformance.html"

    @property
    def junit_path(self) -> Path:
        return self.reports / "junit.xml"

    @functools.cached_property
    def data(self) -> dict:
        return json.loads(self.json_path.read_text())

    def case(self, case_id: str) -> dict:
        return next(c for c in self.data["cases"] if c["id"] == case_id)

    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr


def _run(name: str, *args: str, expect: int) -> CliRun:
    directory = _ROOT / name
    directory.mkdir()
    run = CliRun(directory, cli(directory, *args))
    assert run.proc.returncode == expect, run.output()
    return run


@functools.cache
def reference_run() -> CliRun:
    return _run("reference", "--vfu-section", "device_info", expect=0)


@functools.cache
def reference_b_run() -> CliRun:
    profile = _ROOT / "reference-b.toml"
    text = REFERENCE_PROFILE.read_text()
    assert '\nname = "reference"\n' in text
    text = text.replace('\nname = "reference"\n', '\nname = "reference-b"\n')
    profile.write_text(text + '\n[baseline]\n"device_info/reply-argsz" = "a test of the reports"\n')
    return _run(
        "reference-b", "--vfu-section", "device_info", "--vfu-profile", str(profile), expect=0
    )


@functools.cache
def failing_run() -> CliRun:
    directory = _ROOT / "script"
    directory.mkdir()
    server = script_server(directory, "--abort-on", "13")
    return _run(
        "failing",
        "--vfu-server",
        server,
        "--vfu-section",
        "device_info",
        "--vfu-env",
        "PYTHONVERBOSE=1",
        expect=1,
    )


@functools.cache
def profiled_failing_run() -> CliRun:
    directory = _ROOT / "script-profiled"
    directory.mkdir()
    server = script_server(directory, "--abort-on", "13")
    profile = directory / "script-device.toml"
    profile.write_text("[device]\nnum_regions = 9\nnum_irqs = 2\n")
    return _run(
        "profiled",
        "--vfu-server",
        server,
        "--vfu-profile",
        str(profile),
        "--vfu-section",
        "device_info",
        expect=1,
    )


def differing(*runs: CliRun) -> set[str]:
    """Case ids whose verdict is not the same in every run (missing counts as a verdict)."""
    verdicts = [{c["id"]: c["verdict"] for c in run.data["cases"]} for run in runs]
    ids = set().union(*verdicts)
    return {i for i in ids if len({v.get(i) for v in verdicts}) > 1}


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium (selenium); skips without chromium, chromedriver or selenium."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip(
            f"no {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install chromium chromium-driver)"
        )
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install '.[test]')"
    )
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415  (after the importorskip)

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="vfu-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except Exception as e:  # pragma: no cover - a broken installation
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"headless Chromium does not start: {type(e).__name__}: {e}")
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
