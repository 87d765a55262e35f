"""The CI templates work as written: the shell steps of the GitHub Action (action.yml) and
of the GitLab job (ci/gitlab-vfio-user-conformance.yml), run as their runner would run them
(bash, in a fresh virtual environment, in a folder of their own), against the reference
server. The steps that are other actions (setup-python, upload-artifact, the JUnit check
run) are the runner's; what they are given is checked. pip builds the suite as a user's
does (hatchling from the package registry)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from importlib.metadata import metadata
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parent.parent
ACTION = REPO / "action.yml"
GITLAB = REPO / "ci" / "gitlab-vfio-user-conformance.yml"
SERVER = "vfio-user-reference-server --socket-path={socket}"
SELECTION = "--vfu-section version"  # a few seconds of the suite


@dataclass
class Step:
    name: str = ""
    uses: str = ""
    run: str = ""
    env: dict[str, str] = field(default_factory=dict)  # variable -> input it takes
    given: dict[str, str] = field(default_factory=dict)  # with: of a `uses` step


def action_inputs() -> dict[str, str]:
    """The action's inputs and their defaults ("" for none)."""
    block = ACTION.read_text().split("\ninputs:\n", 1)[1].split("\nruns:\n", 1)[0]
    inputs: dict[str, str] = {}
    for line in block.splitlines():
        if m := re.match(r"^  ([\w-]+):$", line):
            name = m.group(1)
            inputs[name] = ""
        elif m := re.match(r'^    default: "?(.*?)"?$', line):
            inputs[name] = m.group(1)
    return inputs


def action_steps() -> list[Step]:
    block = ACTION.read_text().split("\n  steps:\n", 1)[1]
    steps: list[Step] = []
    section = ""
    for line in block.splitlines():
        if line.startswith("    - "):
            steps.append(Step())
            line = "      " + line[6:]
        if not steps or not line.strip():
            continue
        step = steps[-1]
        if m := re.match(r"^      (name|uses|run): (.*)$", line):
            setattr(step, m.group(1), m.group(2))
        elif m := re.match(r"^      (env|with):$", line):
            section = m.group(1)
        elif m := re.match(r"^        ([\w-]+): (.*)$", line):
            if section == "env":
                step.env[m.group(1)] = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", m[2])[1]
            else:
                step.given[m.group(1)] = m.group(2)
    return steps


def gitlab_job() -> tuple[dict[str, str], list[str], str]:
    """The job's variables (defaults), script lines and the rest of its text."""
    text = GITLAB.read_text()
    variables = {
        m.group(1): m.group(2).strip('"')
        for m in re.finditer(r'^    (VFU_\w+): ("[^"]*"|\S*)', text, re.M)
    }
    block = re.split(r"\n  \S", text.split("\n  script:\n", 1)[1], maxsplit=1)[0]
    script = re.findall(r"^    - (.*)$", block, re.M)
    assert len(script) == 4, script
    return variables, script, text


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment that also sees this one's packages (pytest, hypothesis...:
    the suite's dependencies, not the suite itself), so pip installs only the suite."""
    where = tmp_path_factory.mktemp("ci") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True)
    purelib = sysconfig.get_paths()["purelib"]
    (site,) = (where / "lib").glob("python3*/site-packages")
    (site / "this-environment.pth").write_text(purelib + "\n")
    return where


def _shell(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """As a runner runs a step: bash -e (GitHub's `shell: bash`, GitLab's script lines)."""
    return subprocess.run(
        ["bash", "-e", "-c", command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _environment(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VFU_", "PYTEST_", "PIP_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    env["VIRTUAL_ENV"] = str(venv)
    env.pop("PYTHONPATH", None)
    return env


def test_github_action_runs_as_written(venv: Path, tmp_path: Path):
    steps = action_steps()
    uses = {step.uses.split("@")[0]: step for step in steps if step.uses}
    assert uses["actions/upload-artifact"].given["path"] == "reports/"
    assert uses["EnricoMi/publish-unit-test-result-action/linux"].given["files"] == (
        "reports/junit.xml"
    )
    inputs = action_inputs()
    assert set(inputs) >= {"server", "profile", "revision", "strict"}
    inputs.update(server=SERVER, args=SELECTION, strict="true")
    runs = [step for step in steps if step.run]
    assert [step.name for step in runs] == ["Install pytest-vfiouser", "Run the conformance suite"]

    work = tmp_path / "workspace"
    work.mkdir()
    summary = tmp_path / "step-summary.md"
    env = _environment(venv) | {
        "GITHUB_ACTION_PATH": str(REPO),
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    for step in runs:
        result = _shell(step.run, work, env | {v: inputs[i] for v, i in step.env.items()})
        assert result.returncode == 0, (step.name, result.stdout[-3000:], result.stderr[-3000:])
    assert (work / "reports" / "junit.xml").is_file()
    assert (work / "reports" / "conformance.html").is_file()
    text = (work / "reports" / "summary.txt").read_text()
    assert "spec 0.9.1;" in text and "; strict" in text
    assert text.splitlines()[-1].startswith("result: passed")
    assert summary.read_text().startswith("### vfio-user conformance\n```\nsection")


def test_github_action_fails_the_job_on_a_failure(venv: Path, tmp_path: Path):
    """The run step's exit status is the suite's: a MUST failure fails the job."""
    (run_step,) = [step for step in action_steps() if step.name == "Run the conformance suite"]
    inputs = action_inputs() | {
        "server": "vfio-user-faulty-server --socket-path={socket} --fault msg-id-8bit",
        "args": "--vfu-section header -k echoes",
    }
    env = _environment(venv) | {"GITHUB_ACTION_PATH": str(REPO)}
    result = _shell(run_step.run, tmp_path, env | {v: inputs[i] for v, i in run_step.env.items()})
    assert result.returncode == 1, result.stdout[-3000:]
    assert (
        (tmp_path / "reports" / "summary.txt")
        .read_text()
        .splitlines()[-1]
        .startswith("result: FAILED (")
    )
    bad = _shell(run_step.run, tmp_path, env | {"VFU_SERVER": SERVER, "VFU_STRICT": "yes"})
    assert bad.returncode == 4 and "VFU_STRICT: true or false, not 'yes'" in bad.stderr


def test_gitlab_job_runs_as_written(venv: Path, tmp_path: Path):
    variables, script, text = gitlab_job()
    assert "junit: reports/junit.xml" in text and "- reports/" in text
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    variables.update(
        VFU_SUITE_REPO=str(REPO),
        VFU_SUITE_REF=commit,  # the suite as committed
        VFU_SERVER=SERVER,
        VFU_ARGS=SELECTION,
        VFU_REVISION="0.9.1",
    )
    project = tmp_path / "project"  # $CI_PROJECT_DIR: the job's working directory
    project.mkdir()
    env = _environment(venv) | variables
    for line in script:
        result = _shell(line, project, env)
        assert result.returncode == 0, (line, result.stdout[-3000:], result.stderr[-3000:])
    assert (project / "reports" / "junit.xml").is_file()
    summary = (project / "reports" / "summary.txt").read_text()
    assert summary.splitlines()[-1].startswith("result: passed")


def test_gitlab_job_says_what_is_missing(venv: Path, tmp_path: Path):
    variables, script, _ = gitlab_job()
    result = _shell(script[0], tmp_path, _environment(venv) | variables)  # no VFU_SUITE_REPO
    assert result.returncode != 0
    assert "set VFU_SUITE_REPO, the git URL of pytest-vfiouser" in result.stderr


def test_readme_uses_the_action_as_it_is():
    """The README's workflow gives the action inputs it has, and installs nothing from a
    package index the suite is not on."""
    readme = (REPO / "README.md").read_text()
    ci = readme.split("## Running in CI", 1)[1].split("\n## ", 1)[0]
    assert "pip install pytest-vfiouser" not in readme
    workflow = ci.split("```yaml", 1)[1].split("```", 1)[0]
    given = re.findall(r"^          ([\w-]+):", workflow.split("uses: OWNER/", 1)[1], re.M)
    assert given and set(given) <= set(action_inputs()), given


def test_license_is_the_apache_license_pyproject_names():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert pyproject["license"] == "Apache-2.0" and pyproject["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("Copyright 2026 The pytest-vfiouser Authors\n")
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert text.rstrip().endswith("limitations under the License.")
    assert "END OF TERMS AND CONDITIONS" in text


def test_the_installed_metadata_names_the_project_urls():
    """The URLs pyproject names reach the metadata pip installed (Project-URL)."""
    urls = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]
    assert urls["Specification"].startswith("https://")
    installed = metadata("pytest-vfiouser").get_all("Project-URL") or []
    assert sorted(installed) == sorted(f"{k}, {v}" for k, v in urls.items())
