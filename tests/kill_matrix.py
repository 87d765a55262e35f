"""The kill matrix: the conformance suite run against the reference server with each fault.

A *run* is one ``vfio-user-conformance`` session (a child of tests/fork_runs.py, which
has imported and collected the suite once; ``command`` in its record runs it alone)
against

    <python> -m reference_server_faults --socket-path={socket} --fault NAME

(the fault overlay, reference_server_faults) with the reference profile (so its
hooks are loaded), the suite's JSON report written where we say. The fault-free
run is the reference server itself, ``<python> -m reference_server``. From the
runs:

* a case (one nodeid) **kills** a fault when its verdict under the fault is
  worse than without it: failing (FAIL, CRASH, HANG, ERROR, NON-STRICT) where
  it was not, or INFORMATIONAL where it was PASS. A case id (parametrized
  cases count once) kills a fault when any of its nodeids does.
* a fault is **detected** when a case that kills it shows one of the verdicts
  the catalogue expects (``Fault.detect``) in the expected section.

Every case id must kill at least one fault, or be listed, with the reason, in
``tests/unkillable.toml`` (``"section/*"`` entries name whole sections
that the fault runs leave out). Kills of a fault caught by the suite's check of
every case (``Fault.by_judge``) are shown but do not count: they prove that
check, not the case. ``build()`` makes the matrix, ``write()``
writes ``kill-matrix.json`` and ``kill-matrix.md``; ``Runner`` runs the
faults concurrently and, through claim files in a shared directory, at most
once across pytest-xdist workers. Used by tests/test_faults.py and
benchmarks/kill_matrix.py.

A fault's run is at its revision (``Fault.spec``), and is judged against the
fault-free run of that revision: ``None`` (0.9.1, the whole suite) or
``fault-free-0.9.2`` (the sections only 0.9.2 has, conformance.ONLY_AT, and those the
0.9.2 faults' runs cover).

Runs use ``--vfu-restart per-session`` (a crashed or hung server is replaced
anyway), ``--vfu-timeout 2`` and Python's bytecode cache (even where
PYTHONDONTWRITEBYTECODE is set): a few seconds each on a small machine.
"""

from __future__ import annotations

import fcntl
import fnmatch
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from conformance import ONLY_AT
from pytest_vfiouser.protocol import DEFAULT_REVISION, REVISIONS
from pytest_vfiouser.verdict import Verdict
from reference_server_faults import CATALOGUE, Fault

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

# A case kills a fault with a verdict that fails the run, or a NON-STRICT (a SHOULD
# not met): both say the server broke a requirement.
FAILING = frozenset(v.value for v in Verdict if v.fails_run or v is Verdict.NON_STRICT)
MARKS = {
    "FAIL": "F",
    "CRASH": "C",
    "HANG": "H",
    "ERROR": "E",
    "NON-STRICT": "N",
    "INFORMATIONAL": "I",
}
TIMEOUT = 2.0  # --vfu-timeout of the runs
RUN_LIMIT = 600.0  # seconds a run may take before it is killed
# Beside each run's report under the runs' folder: who claimed it, and its result.
CLAIM, DONE = ".claim", ".done"
CLEAN = "(fault-free)"


# The fault-free run of each revision: None is the default revision's (the whole suite).
CLEAN_RUNS: dict[str, str | None] = {
    r: None if r == DEFAULT_REVISION else f"fault-free-{r}" for r in REVISIONS
}


def spec_of(name: str | None) -> str:
    """The revision of a run: a fault's own, or that of a fault-free run."""
    if name in CATALOGUE:
        return CATALOGUE[name].spec
    return next(r for r, clean in CLEAN_RUNS.items() if clean == name)


def clean_runs_for(names: Iterable[str | None]) -> list[str | None]:
    """The fault-free runs the faults ``names`` are judged against (the default one always)."""
    specs = {DEFAULT_REVISION} | {spec_of(n) for n in names if n is not None}
    return [CLEAN_RUNS[r] for r in REVISIONS if r in specs]


def profile_path(spec: str = DEFAULT_REVISION) -> Path:
    folder = Path(__file__).resolve().parents[1] / "reference_server" / "profiles"
    own = folder / f"default-{spec}.toml"
    return own if own.exists() else folder / "default.toml"


def unkillable_path() -> Path:
    return Path(__file__).resolve().parent / "unkillable.toml"


def load_unkillable(path: Path | None = None) -> dict[str, str]:
    """Case id (or ``section/*``) -> reason."""
    path = path or unkillable_path()
    with open(path, "rb") as f:
        data = tomllib.load(f)
    return {str(k): str(v) for k, v in data.items()}


def excluded_sections(unkillable: dict[str, str]) -> list[str]:
    """Sections the fault runs leave out (``"section/*"`` entries)."""
    return sorted(k[:-2] for k in unkillable if k.endswith("/*"))


def kills(clean: str | None, faulty: str | None) -> bool:
    """Whether a case's verdict under a fault is worse than without it."""
    if clean is None or faulty is None:
        return False
    if faulty in FAILING:
        return clean not in FAILING
    return faulty == "INFORMATIONAL" and clean == "PASS"


# ---------------------------------------------------------------- running


def conformance_command() -> list[str]:
    """vfio-user-conformance of this Python (the console script, else the module)."""
    script = Path(sys.executable).parent / "vfio-user-conformance"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "pytest_vfiouser.cli"]


def server_command(fault: str | None, spec: str = DEFAULT_REVISION) -> str:
    """The fault overlay with ``fault``; None: the reference server itself."""
    if fault is None:
        words = [sys.executable, "-m", "reference_server", "--socket-path={socket}"]
        return shlex.join([*words, f"--spec={spec}"])
    words = [sys.executable, "-m", "reference_server_faults", CATALOGUE[fault].option]
    return shlex.join([*words, f"--spec={spec}", "--fault", fault])


def run_args(name: str | None, out: Path, excluded: Iterable[str] = ()) -> list[str]:
    """The vfio-user-conformance arguments of one run (reports under ``out``)."""
    spec = spec_of(name)
    fault = name if name in CATALOGUE else None
    name = name or "fault-free"
    args = [
        "--vfu-server",
        server_command(fault, spec),
        "--vfu-spec",
        spec,
        "--vfu-profile",
        str(profile_path(spec)),
        "--vfu-json",
        str(out / f"{name}.json"),
        "--vfu-timeout",
        f"{TIMEOUT:g}",
        "--vfu-restart",
        "per-session",
        # The JSON report is the matrix's; the HTML and JUnit ones: a few seconds a run.
        "-p",
        "no:html",
        "-p",
        "no:junitxml",
        "-p",
        "no:randomly",
        "-q",
        "--no-header",
        "--tb=no",  # tracebacks: seconds a run
    ]
    if fault:
        sections: Iterable[str] = CATALOGUE[fault].runs
    elif spec != DEFAULT_REVISION:  # its own sections, and those its faults' runs cover
        own = {s for s, r in ONLY_AT.items() if r == spec}
        sections = sorted(own | {s for f in CATALOGUE.values() if f.spec == spec for s in f.runs})
    else:
        sections = ()
    for section in sections:
        args += ["--vfu-section", section]
    excluded = list(excluded)
    if excluded:  # a section's cases live in its own modules: conformance/test_<section>*.py
        args += ["-k", " and ".join(f"not test_{s}" for s in excluded)]
    return args


def run_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # a bytecode cache spares ~2 s a run
    return env


def run_one(
    fault: str | None,
    out: Path,
    excluded: Iterable[str] = (),
    stop: threading.Event | None = None,
    forks: ForkServer | None = None,
) -> dict:
    """Run the suite with ``fault`` (None: fault-free); writes ``<name>.json`` and
    ``<name>.done`` (exit status, seconds, output tail) under ``out``; returns the latter.
    With ``forks``, the run is a child of that fork server, else a new process."""
    name = fault or "fault-free"
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work" / name
    work.mkdir(parents=True, exist_ok=True)
    args = run_args(fault, out, excluded)
    command = conformance_command() + args
    env = run_env()
    start = time.monotonic()
    if forks is not None:
        n = forks.start(args, work, work / "output.txt", env)
        pid = forks.pid(n)

        def wait(timeout: float) -> int | None:
            return forks.wait(n, timeout)
    else:
        with open(work / "output.txt", "wb") as log:
            proc = subprocess.Popen(
                command,
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        pid = proc.pid

        def wait(timeout: float) -> int | None:
            try:
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return None

    status = None
    while status is None:
        status = wait(0.5)
        if status is None and (
            (stop is not None and stop.is_set()) or time.monotonic() - start > RUN_LIMIT
        ):
            _kill_group(pid)
            while status is None:
                status = wait(5.0)
    seconds = round(time.monotonic() - start, 2)
    tail = (work / "output.txt").read_bytes()[-4000:].decode("utf-8", "replace")
    done = {
        "fault": fault,
        "status": status,
        "seconds": seconds,
        "command": command,
        "output_tail": tail,
    }
    tmp = out / f"{name}{DONE}.tmp"
    tmp.write_text(json.dumps(done, indent=1))
    os.replace(tmp, out / f"{name}{DONE}")
    return done


def shared_runs(basetemp: Path) -> Path:
    """The runs' folder of a session (``basetemp``: this process's): one for all its
    pytest-xdist workers, in the controller's basetemp, which holds theirs."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return (basetemp.parent if worker else basetemp) / "fault-runs"


def progress(out: Path) -> str | None:
    """One line on the fault runs under ``out``: how many are done, which are under way
    (claimed: running, or waiting for a slot); None before the first is claimed."""
    claimed = {p.name.removesuffix(CLAIM) for p in Path(out).glob(f"*{CLAIM}")}
    if not claimed:
        return None
    done = {p.name.removesuffix(DONE) for p in Path(out).glob(f"*{DONE}")}
    running = sorted(claimed - done)
    line = f"kill matrix: {len(done)} fault runs done, {len(running)} under way"
    if running:
        more = f" and {len(running) - 3} more" if len(running) > 3 else ""
        line += f" ({', '.join(running[:3])}{more})"
    return line


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass


class ForkServer:
    """tests/fork_runs.py, one per process that runs faults: each run a forked child of
    a process that has imported and collected the suite once (about a second of CPU a
    run spared). Thread-safe: the Runner's threads start and wait for runs at once."""

    def __init__(self, env: dict[str, str], cwd: Path):
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("fork_runs.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
        )
        self._lock = threading.Lock()
        self._changed = threading.Condition()
        self._answers: dict[int, dict] = {}
        self._ids = itertools.count()
        if json.loads(self._proc.stdout.readline() or "{}").get("ready") is not True:
            raise RuntimeError("tests/fork_runs.py did not start")
        threading.Thread(target=self._read, name="fork-runs", daemon=True).start()

    def _read(self) -> None:
        for line in self._proc.stdout:
            message = json.loads(line)
            with self._changed:
                self._answers.setdefault(message["id"], {}).update(message)
                self._changed.notify_all()
        with self._changed:
            self._answers[-1] = {"ended": True}
            self._changed.notify_all()

    def start(self, argv: list[str], cwd: Path, output: Path, env: dict[str, str]) -> int:
        """A new run; its id (its pid is ``pid(id)``)."""
        n = next(self._ids)
        request = {"id": n, "argv": argv, "cwd": str(cwd), "output": str(output), "env": env}
        with self._lock:
            self._proc.stdin.write((json.dumps(request) + "\n").encode())
            self._proc.stdin.flush()
        return n

    def _answer(self, n: int, key: str, timeout: float):
        with self._changed:
            self._changed.wait_for(
                lambda: (
                    key in self._answers.get(n, {})
                    or "error" in self._answers.get(n, {})
                    or -1 in self._answers
                ),
                timeout,
            )
            got = self._answers.get(n, {})
        if "error" in got:
            raise RuntimeError(f"fork_runs.py could not start a run: {got['error']}")
        return got.get(key)

    def pid(self, n: int) -> int:
        pid = self._answer(n, "pid", 30.0)
        if pid is None:
            raise RuntimeError("fork_runs.py did not start a run in 30 s")
        return pid

    def wait(self, n: int, timeout: float) -> int | None:
        """The run's exit status, None if it has not ended within ``timeout`` seconds."""
        return self._answer(n, "status", timeout)

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        try:
            self._proc.wait(60)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


class Runner:
    """Runs faults (and the fault-free suite) into ``out``, each at most once across the
    processes that share ``out`` (claim files), at most ``workers`` at a time across all of
    them (slot files, locked while a run holds them): a pytest-xdist worker left alone
    with runs to do uses every slot the others have given up."""

    def __init__(
        self, out: Path, names: list[str | None], workers: int = 2, excluded: Iterable[str] = ()
    ):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.names = list(names)
        self.workers = max(1, workers)
        self.excluded = list(excluded)
        self.stop = threading.Event()  # kill the runs in progress
        self.draining = threading.Event()  # claim nothing more
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._forks: ForkServer | None = None  # started with the first run here

    @staticmethod
    def _file(name: str | None) -> str:
        return name or "fault-free"

    def _claim(self, name: str | None) -> bool:
        try:
            fd = os.open(
                self.out / f"{self._file(name)}{CLAIM}", os.O_CREAT | os.O_EXCL | os.O_WRONLY
            )
        except FileExistsError:
            return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True

    def _slot(self) -> int | None:
        """A free slot of the ``workers`` shared by every process on ``out``: the fd that
        holds its lock (closing it frees the slot), or None when all are taken."""
        for k in range(self.workers):
            fd = os.open(self.out / f"slot-{k}.lock", os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                os.close(fd)
        return None

    def _run(self, name: str | None) -> None:
        """Run ``name`` (claimed by this process) once a slot is free."""
        while (slot := self._slot()) is None:
            if self.stop.wait(0.1):
                return
        try:
            run_one(name, self.out, self.excluded, self.stop, self._fork_server())
        finally:
            os.close(slot)

    def _fork_server(self) -> ForkServer:
        with self._lock:
            if self._forks is None:
                work = self.out / "work"
                work.mkdir(parents=True, exist_ok=True)
                self._forks = ForkServer(run_env(), work)
            return self._forks

    def _loop(self) -> None:
        for name in self.names:
            if self.stop.is_set() or self.draining.is_set():
                return
            if self._claim(name):
                self._run(name)

    def start(self) -> Runner:
        """Work through ``names`` in the background."""
        with self._lock:
            if not self._threads:
                for i in range(self.workers):
                    t = threading.Thread(target=self._loop, name=f"fault-runs-{i}", daemon=True)
                    t.start()
                    self._threads.append(t)
        return self

    def result(self, name: str | None, timeout: float = 3600.0) -> dict:
        """The ``.done`` record of ``name``: run here if nobody claimed it, else waited for."""
        done = self.out / f"{self._file(name)}{DONE}"
        if not done.exists() and self._claim(name):
            self._run(name)
        deadline = time.monotonic() + timeout
        while not done.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"no result for {self._file(name)} after {timeout:g} s")
            time.sleep(0.2)
        return json.loads(done.read_text())

    def json_path(self, name: str | None) -> Path:
        return self.out / f"{self._file(name)}.json"

    def close(self, kill: bool = False) -> None:
        """Claim nothing more; let the runs in progress finish (another pytest-xdist worker
        may be waiting for them), or kill them."""
        self.draining.set()
        if kill:
            self.stop.set()
        for t in self._threads:
            t.join()
        if self._forks is not None:
            self._forks.close()


# ---------------------------------------------------------------- the matrix


@dataclass
class CaseRun:
    nodeid: str
    case_id: str
    section: str
    level: str | None
    verdict: str
    message: str = ""


@dataclass
class Run:
    fault: str | None
    cases: dict[str, CaseRun] = field(default_factory=dict)  # by nodeid
    seconds: float | None = None

    @classmethod
    def load(cls, path: Path, fault: str | None, seconds: float | None = None) -> Run:
        data = json.loads(Path(path).read_text())
        run = cls(fault, seconds=seconds)
        for c in data["cases"]:
            if c.get("case_id"):
                run.cases[c["nodeid"]] = CaseRun(
                    c["nodeid"],
                    c["case_id"],
                    c.get("section") or "",
                    c.get("level"),
                    c["verdict"],
                    c.get("message") or "",
                )
        return run


def killing(clean: Run, run: Run) -> list[CaseRun]:  # clean: of the fault's revision
    """The cases (nodeids) of ``run`` that kill its fault."""
    out = []
    for nodeid, c in run.cases.items():
        base = clean.cases.get(nodeid)
        if base is not None and kills(base.verdict, c.verdict):  # else: not in the fault-free run
            out.append(c)
    return out


def evidence(fault: Fault, killed: list[CaseRun]) -> list[CaseRun]:
    """The killing cases that show a verdict ``fault.detect`` expects, in its section."""
    expected = {(s, v) for s, vs in fault.detect for v in vs}
    return [c for c in killed if (c.section, c.verdict) in expected]


def build(
    cleans: dict[str, Run],
    runs: dict[str, Run],
    unkillable: dict[str, str],
    catalogue: dict[str, Fault] = CATALOGUE,
) -> dict:
    """The matrix, figures and findings as one JSON-able dict (``cleans``: the fault-free
    run of each revision)."""
    cases: dict[str, dict] = {}
    for clean in cleans.values():
        for c in clean.cases.values():
            cases.setdefault(
                c.case_id,
                {"section": c.section, "level": c.level, "clean": Counter(), "kills": {}},
            )["clean"][c.verdict] += 1
    excluded = excluded_sections(unkillable)
    faults = {}
    for name, fault in catalogue.items():
        run = runs.get(name)
        entry = {
            "description": fault.description,
            "spec": fault.spec,
            "detect": [[s, list(v)] for s, v in fault.detect],
            "scope": list(fault.runs),
            "by_judge": fault.by_judge,
            "ran": run is not None,
            "seconds": run.seconds if run else None,
            "detected": False,
            "evidence": [],
            "killed": 0,
            "verdicts": {},
        }
        faults[name] = entry
        if run is None:
            continue
        entry["verdicts"] = dict(sorted(Counter(c.verdict for c in run.cases.values()).items()))
        killed = killing(cleans[fault.spec], run)
        for c in killed:
            kill = cases[c.case_id]["kills"]
            # The worst verdict. Verdict.rank orders the killing verdicts as the
            # harness's former table did (tests/test_server_faults.py checks it), so
            # the matrix is unchanged.
            if Verdict(c.verdict).rank > Verdict(kill.get(name, "PASS")).rank:
                kill[name] = c.verdict
        shown = evidence(fault, killed)
        entry["evidence"] = [f"{c.nodeid}: {c.verdict}" for c in shown[:5]]
        entry["detected"] = bool(shown)
        entry["killed"] = sum(1 for info in cases.values() if name in info["kills"])
    by_judge = {name for name, fault in catalogue.items() if fault.by_judge}

    def own(info: dict) -> dict[str, str]:  # the kills that are the case's own
        return {f: v for f, v in info["kills"].items() if f not in by_judge}

    unkilled, listed, stale = [], {}, []
    for case_id, info in cases.items():
        reason = _reason(case_id, unkillable)
        if own(info):
            if reason is not None and not any(case_id.startswith(s + "/") for s in excluded):
                stale.append(case_id)
        elif reason is not None:
            listed[case_id] = reason
        else:
            unkilled.append(case_id)
    n_killing = sum(1 for info in cases.values() if own(info))
    killing_own = sum(1 for info in cases.values() if any(v != "ERROR" for v in own(info).values()))
    detected = sum(1 for f in faults.values() if f["detected"])
    for info in cases.values():
        info["clean"] = dict(info["clean"])
    return {
        "format": "pytest-vfiouser-kill-matrix/1",
        "kills": "a case kills a fault when its verdict under the fault is failing (FAIL, "
        "CRASH, HANG, ERROR, NON-STRICT) where it was not, or INFORMATIONAL where "
        "it was PASS; a parametrized case kills it when any parametrization does; kills of "
        "a fault the suite's check of every case catches (by_judge) do not count toward a "
        "case killing some fault",
        "figures": {
            "faults": len(faults),
            "faults_detected": detected,
            "cases": len(cases),
            "cases_killing": n_killing,
            "cases_killing_not_only_by_error": killing_own,
            "cases_listed_unkillable": len(listed),
            "cases_unkilled": len(unkilled),
        },
        "excluded_sections": {s: unkillable[s + "/*"] for s in excluded},
        "clean_seconds": {r: c.seconds for r, c in cleans.items()},
        "faults": faults,
        "cases": cases,
        "unkillable": listed,
        "unkilled": sorted(unkilled),
        "stale_unkillable": sorted(stale),
        "undetected": sorted(n for n, f in faults.items() if f["ran"] and not f["detected"]),
    }


def _reason(case_id: str, unkillable: dict[str, str]) -> str | None:
    if case_id in unkillable:
        return unkillable[case_id]
    for pattern, reason in unkillable.items():
        if any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(case_id, pattern):
            return reason
    return None


def figures_line(matrix: dict) -> str:
    f = matrix["figures"]
    return (
        f"faults_detected={f['faults_detected']}/{f['faults']} "
        f"cases_killing={f['cases_killing']}/{f['cases']}"
    )


def write(matrix: dict, directory: Path) -> tuple[Path, Path]:
    """``kill-matrix.json`` and ``kill-matrix.md`` under ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    jpath, mpath = directory / "kill-matrix.json", directory / "kill-matrix.md"
    for path, text in ((jpath, json.dumps(matrix, indent=1) + "\n"), (mpath, markdown(matrix))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return jpath, mpath


def markdown(matrix: dict) -> str:
    f = matrix["figures"]
    faults = list(matrix["faults"])
    abbrev = {name: f"f{i + 1}" for i, name in enumerate(faults)}
    out = [
        "# Kill matrix: conformance cases by reference-server fault",
        "",
        f"Faults detected: **{f['faults_detected']}/{f['faults']}**; cases that kill at "
        f"least one fault: **{f['cases_killing']}/{f['cases']}** "
        f"({f['cases_killing_not_only_by_error']} by their own verdict, not only by a "
        f"setup ERROR); listed as unkillable: {f['cases_listed_unkillable']}; unkilled "
        f"and unlisted: {f['cases_unkilled']}.",
        "",
        f"A case *kills* a fault: {matrix['kills']}. Marks: F FAIL, C CRASH, H HANG, "
        "E ERROR, N NON-STRICT, I INFORMATIONAL; - not run (the fault's run is limited "
        "to other sections).",
        "",
    ]
    if matrix["excluded_sections"]:
        out += [
            "Sections the fault runs leave out: "
            + "; ".join(f"`{s}` ({r})" for s, r in matrix["excluded_sections"].items()),
            "",
        ]
    out += [
        "## Faults",
        "",
        "| # | fault | detected | cases killed | s | description |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, info in matrix["faults"].items():
        det = "yes" if info["detected"] else ("not run" if not info["ran"] else "**NO**")
        scope = f" (runs at {info['spec']}: {', '.join(info['scope'])})"
        if info["by_judge"]:
            scope += " (the suite's check of every case: its kills do not count)"
        out.append(
            f"| {abbrev[name]} | `{name}` | {det} | {info['killed']} | "
            f"{info['seconds'] if info['seconds'] is not None else ''} | "
            f"{info['description']}{scope} |"
        )
    head = "| case | level | " + " | ".join(abbrev[n] for n in faults) + " | killed by |"
    out += ["", "## Cases by fault", "", head, "|" + " --- |" * (len(faults) + 3)]
    by_section: dict[str, list[str]] = {}
    for case_id, info in matrix["cases"].items():
        by_section.setdefault(info["section"], []).append(case_id)
    for section in sorted(by_section):
        out.append(f"| **{section}** |" + " |" * (len(faults) + 2))
        for case_id in sorted(by_section[section]):
            info = matrix["cases"][case_id]
            cells = []
            for name in faults:
                fault = matrix["faults"][name]
                if name in info["kills"]:
                    cells.append(MARKS.get(info["kills"][name], "?"))
                elif not fault["ran"] or (fault["scope"] and section not in fault["scope"]):
                    cells.append("-")
                else:
                    cells.append("")
            n = len(info["kills"])
            note = (
                str(n)
                if n
                else (
                    "unkillable: " + matrix["unkillable"][case_id]
                    if case_id in matrix["unkillable"]
                    else "**nothing**"
                )
            )
            out.append(
                f"| `{case_id}` | {info['level'] or ''} | " + " | ".join(cells) + f" | {note} |"
            )
    if matrix["unkilled"]:
        out += ["", "## Cases that kill no fault (and are not listed)", ""]
        out += [f"- `{c}`" for c in matrix["unkilled"]]
    if matrix["undetected"]:
        out += ["", "## Faults no case detects as expected", ""]
        out += [f"- `{n}`" for n in matrix["undetected"]]
    return "\n".join(out) + "\n"


def collect(runner: Runner, names: list[str]) -> tuple[dict[str, Run], dict[str, Run]]:
    """Wait for (or run) the fault-free runs and every fault's; load them."""
    cleans = {}
    for clean in clean_runs_for(names):
        done = runner.result(clean)
        cleans[spec_of(clean)] = Run.load(runner.json_path(clean), clean, done["seconds"])
    runs = {}
    for name in names:
        done = runner.result(name)
        path = runner.json_path(name)
        if path.exists():
            runs[name] = Run.load(path, name, done["seconds"])
    return cleans, runs
