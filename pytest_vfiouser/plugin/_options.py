"""Command-line and ini options, and their validation into ``Settings``.

Every option is also an ini option (``vfu_server``, ``vfu_socket``, ...); the
command line wins.  Everything is checked in pytest_configure, before any
test runs: a wrong value is a ``pytest.UsageError`` whose message says what
is wrong and what would be right.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass, field
from importlib.resources import files
from importlib.util import find_spec
from pathlib import Path

import pytest

from pytest_vfiouser.client import DEFAULT_TIMEOUT
from pytest_vfiouser.device import Profile, ProfileError, load_profile
from pytest_vfiouser.fuzz import DEFAULT_FUZZ_MODE as DEFAULT_FUZZ
from pytest_vfiouser.fuzz import FUZZ_MODES, REDIS_SCHEMES
from pytest_vfiouser.protocol import DEFAULT_REVISION, REVISIONS
from pytest_vfiouser.report import unwritable
from pytest_vfiouser.target import DEFAULT_STARTUP_TIMEOUT

__all__ = ["DEFAULT_TIMEOUT", "RESTART_POLICIES", "Settings", "option_help", "register"]

# Revisions the embedded reference server serves (reference_server --spec).
REFERENCE_SPECS = ("0.9.1", "0.9.2")
RESTART_POLICIES = ("per-test", "per-module", "per-session")
DEFAULT_FUZZ_DIR = "reports/fuzz-repro"
DEFAULT_RESTART = "per-module"
DEFAULT_CLIENT_TIME = 10.0

# (option, ini name, ini type, help)
_OPTIONS = (
    (
        "--vfu-server",
        "vfu_server",
        "string",
        'command line of the vfio-user server under test; "{socket}" is replaced by a socket '
        'path for it to listen on, "{fd}" by the number of a listening socket it inherits '
        "(default: the embedded reference server)",
    ),
    (
        "--vfu-socket",
        "vfu_socket",
        "string",
        "socket of an already running server to test (no process management; "
        "excludes --vfu-server)",
    ),
    ("--vfu-profile", "vfu_profile", "string", "device profile (TOML) of the server under test"),
    (
        "--vfu-spec",
        "vfu_spec",
        "string",
        f"spec revision to test against: {' or '.join(REVISIONS)} (default {DEFAULT_REVISION})",
    ),
    (
        "--vfu-timeout",
        "vfu_timeout",
        "string",
        f"seconds to wait for each reply (default {DEFAULT_TIMEOUT:g})",
    ),
    (
        "--vfu-start-timeout",
        "vfu_start_timeout",
        "string",
        "seconds a server started by the suite gets to listen on its socket "
        f"(default {DEFAULT_STARTUP_TIMEOUT:g})",
    ),
    (
        "--vfu-restart",
        "vfu_restart",
        "string",
        f"when to start a fresh server: {', '.join(RESTART_POLICIES)} (default {DEFAULT_RESTART}); "
        "a server that crashed, hung or exited is always replaced",
    ),
    ("--vfu-json", "vfu_json", "string", "write a JSON report of the verdicts to this path"),
    (
        "--vfu-fuzz",
        "vfu_fuzz",
        "string",
        f"effort of the fuzz cases: {' or '.join(FUZZ_MODES)} (default {DEFAULT_FUZZ}: bounded "
        "and repeatable; campaign: many random examples)",
    ),
    (
        "--vfu-fuzz-dir",
        "vfu_fuzz_dir",
        "string",
        f"directory for reproducers of failing fuzz examples (default {DEFAULT_FUZZ_DIR})",
    ),
    (
        "--vfu-fuzz-db",
        "vfu_fuzz_db",
        "string",
        "Hypothesis's example database for --vfu-fuzz campaign: a directory, or "
        "redis://HOST:PORT/N (with the redis package); runs and xdist workers sharing it "
        "replay the failures found before, first (default: none)",
    ),
    (
        "--vfu-client",
        "vfu_client",
        "string",
        "client mode (vfio-user-conformance client): the command line of the vfio-user client "
        'under test; "{socket}" is replaced by the reference server\'s socket path',
    ),
    (
        "--vfu-client-time",
        "vfu_client_time",
        "string",
        f"client mode: seconds the client runs before it is stopped (default "
        f"{DEFAULT_CLIENT_TIME:g})",
    ),
    (
        "--vfu-device",
        "vfu_device",
        "string",
        "client mode: the device description (TOML, reference_server/device_config.py) the "
        "reference server plays for the client (default: its built-in device)",
    ),
    (
        "--vfu-transcript",
        "vfu_transcript",
        "string",
        "client mode: judge the session in this record (vfio-user-reference-server --record) "
        "instead of running a client",
    ),
)


def register(parser: pytest.Parser) -> None:
    """Add the options to the "vfio-user" group and as ini keys."""
    group = parser.getgroup("vfio-user", "vfio-user conformance")
    for opt, ini, initype, text in _OPTIONS:
        group.addoption(opt, dest=ini, default=None, metavar=opt[6:].upper(), help=text)
        parser.addini(ini, text, type=initype, default=None)
    group.addoption(
        "--vfu-strict",
        dest="vfu_strict",
        action="store_true",
        default=None,
        help="SHOULD requirements not met fail the run (default: reported as NON-STRICT)",
    )
    parser.addini(
        "vfu_strict", "SHOULD requirements not met fail the run", type="bool", default=False
    )
    group.addoption(
        "--vfu-section",
        dest="vfu_section",
        action="append",
        default=None,
        metavar="NAME",
        help="run only the cases of this spec section (repeatable)",
    )
    parser.addini("vfu_section", "run only these spec sections", type="args", default=[])
    group.addoption(
        "--vfu-env",
        dest="vfu_env",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="environment variable for the server (repeatable)",
    )
    parser.addini(
        "vfu_env", "KEY=VALUE environment of the server, one a line", type="linelist", default=[]
    )


def option_help() -> list[tuple[str, str]]:
    """The options as ``register`` adds them, for a help text: ("--vfu-server SERVER",
    its help), in order."""

    class Recorder:
        def __init__(self) -> None:
            self.rows: list[tuple[str, str]] = []

        def getgroup(self, *args, **kwargs):
            return self

        def addoption(self, name, **kwargs):
            metavar = "" if kwargs.get("action") == "store_true" else kwargs.get("metavar")
            self.rows.append((f"{name} {metavar}" if metavar else name, kwargs["help"]))

        def addini(self, *args, **kwargs):
            pass

    recorder = Recorder()
    register(recorder)
    return recorder.rows


@dataclass(frozen=True)
class Settings:
    """The validated options."""

    server: tuple[str, ...] | str | None  # the command template; None with --vfu-socket
    socket: str | None
    embedded: bool  # the target is the embedded reference server
    profile: Profile
    spec: str
    strict: bool
    timeout: float
    restart: str
    sections: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)
    json_path: Path | None = None
    explicit: bool = False  # some vfu option was given (command line or ini)
    fuzz: str = DEFAULT_FUZZ  # the fuzz cases' settings profile (fuzzing.py)
    fuzz_dir: Path | None = None  # reproducers of failing fuzz examples
    fuzz_db: str | None = None  # Hypothesis's example database: a directory or a redis:// URL
    start_timeout: float = DEFAULT_STARTUP_TIMEOUT  # for a started server to listen
    client: str | None = None  # client mode: the client's command line (template)
    client_time: float = DEFAULT_CLIENT_TIME
    device: Path | None = None  # client mode: the device the reference server plays
    transcript: Path | None = None  # client mode: a record to judge instead of a run

    @property
    def client_mode(self) -> bool:
        return self.client is not None or self.transcript is not None

    @property
    def command_text(self) -> str:
        if self.server is None:
            return ""
        return self.server if isinstance(self.server, str) else shlex.join(self.server)

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        """Read and check every option; raise pytest.UsageError on the first bad one."""
        get = _Getter(config)
        spec = get.value("vfu_spec") or DEFAULT_REVISION
        if spec not in REVISIONS:
            raise _usage(
                "--vfu-spec", f"unknown spec revision {spec!r}; use one of {', '.join(REVISIONS)}"
            )

        server = get.value("vfu_server")
        sock = get.value("vfu_socket")
        if server is not None and sock is not None:
            raise _usage(
                "--vfu-server/--vfu-socket",
                "give one or the other: --vfu-server starts the server, "
                "--vfu-socket connects to one that is already running",
            )
        if server is not None:
            server = server.strip()
            if not server:
                raise _usage("--vfu-server", "the command is empty")
            if "{socket}" not in server and "{fd}" not in server:
                raise _usage(
                    "--vfu-server",
                    f"the command {server!r} has neither {{socket}} nor {{fd}} in it; the suite "
                    "must tell the server where to listen, e.g. "
                    '--vfu-server "my-server --socket-path={socket}"',
                )
            try:
                shlex.split(server)
            except ValueError as e:
                raise _usage(
                    "--vfu-server", f"cannot split {server!r} into arguments: {e}"
                ) from None
        if sock is not None:
            sock = str(get.path("vfu_socket", sock))
            if not os.path.exists(sock):
                raise _usage("--vfu-socket", f"{sock} does not exist; is the server running?")
        embedded = server is None and sock is None
        if embedded and spec not in REFERENCE_SPECS:
            raise _usage(
                "--vfu-spec",
                f"the embedded reference server implements spec {', '.join(REFERENCE_SPECS)} "
                f"only; to test a {spec} server, name it with --vfu-server or --vfu-socket",
            )
        command: tuple[str, ...] | str | None = server
        if embedded:
            command = (
                sys.executable,
                "-m",
                "reference_server",
                "--socket-path={socket}",
                f"--spec={spec}",
            )

        timeout = _seconds(get, "vfu_timeout", DEFAULT_TIMEOUT)
        start_timeout = _seconds(get, "vfu_start_timeout", DEFAULT_STARTUP_TIMEOUT)

        restart = get.value("vfu_restart") or DEFAULT_RESTART
        if restart not in RESTART_POLICIES:
            raise _usage(
                "--vfu-restart",
                f"unknown policy {restart!r}; use one of {', '.join(RESTART_POLICIES)}",
            )

        env = {}
        for item in get.listing("vfu_env"):
            key, sep, value = item.partition("=")
            if not sep or not key or any(c.isspace() for c in key):
                raise _usage("--vfu-env", f"{item!r} is not KEY=VALUE")
            env[key] = value

        client, client_time, device, transcript = _client_mode(get)

        profile_text = get.value("vfu_profile")
        if profile_text is not None:
            try:
                profile = load_profile(get.path("vfu_profile", profile_text))
            except ProfileError as e:
                raise _usage("--vfu-profile", f"invalid profile: {e}") from None
        elif embedded and client is None and transcript is None:  # client mode: no profile
            profile = _reference_profile(spec)
        else:
            profile = Profile.empty()
        if profile.spec is not None and profile.spec != spec:
            raise _usage(
                "--vfu-profile",
                f"the profile {profile.name!r} is for spec {profile.spec}, "
                f"but --vfu-spec is {spec}",
            )
        conflicts = profile.spec_conflicts(spec)
        if conflicts:
            raise _usage(
                "--vfu-profile",
                f"the profile {profile.name!r} enables {', '.join(conflicts)}, which spec {spec} "
                "does not have",
            )

        fuzz = get.value("vfu_fuzz") or DEFAULT_FUZZ
        if fuzz not in FUZZ_MODES:
            raise _usage(
                "--vfu-fuzz", f"unknown fuzz effort {fuzz!r}; use one of {', '.join(FUZZ_MODES)}"
            )
        fuzz_dir_text = get.value("vfu_fuzz_dir")
        if fuzz_dir_text is not None and not fuzz_dir_text.strip():
            raise _usage("--vfu-fuzz-dir", "the directory is empty")

        fuzz_db = _fuzz_db(get)

        json_text = get.value("vfu_json")
        json_path = get.path("vfu_json", json_text) if json_text else None
        why = unwritable(json_path) if json_path is not None else None
        if why is not None:
            raise _usage("--vfu-json", why)
        return cls(
            server=command,
            socket=sock,
            embedded=embedded,
            profile=profile,
            spec=spec,
            strict=get.flag("vfu_strict"),
            timeout=timeout,
            restart=restart,
            sections=tuple(dict.fromkeys(get.listing("vfu_section"))),
            env=env,
            json_path=json_path,
            explicit=get.explicit,
            fuzz=fuzz,
            fuzz_dir=get.path("vfu_fuzz_dir", fuzz_dir_text or DEFAULT_FUZZ_DIR),
            fuzz_db=fuzz_db,
            start_timeout=start_timeout,
            client=client,
            client_time=client_time,
            device=device,
            transcript=transcript,
        )


def _client_mode(get: _Getter) -> tuple[str | None, float, Path | None, Path | None]:
    """--vfu-client (or --vfu-transcript), --vfu-client-time, --vfu-device, checked."""
    client = get.value("vfu_client")
    transcript_text = get.value("vfu_transcript")
    if client is not None and transcript_text is not None:
        raise _usage(
            "--vfu-client/--vfu-transcript",
            "give one: --vfu-client runs a client, --vfu-transcript judges a recorded session",
        )
    if client is not None:
        try:
            words = shlex.split(client)
        except ValueError as e:
            raise _usage("--vfu-client", f"cannot split {client!r} into arguments: {e}") from None
        if not words:
            raise _usage("--vfu-client", "the command is empty")
        if "{socket}" not in client:
            raise _usage(
                "--vfu-client",
                'the command must name the server\'s socket as "{socket}"',
            )
    transcript = None
    if transcript_text is not None:
        transcript = get.path("vfu_transcript", transcript_text)
        if not transcript.is_file():
            raise _usage("--vfu-transcript", f"{transcript} is not a file")
    device = None
    device_text = get.value("vfu_device")
    if device_text is not None:
        device = get.path("vfu_device", device_text)
        if not device.is_file():
            raise _usage("--vfu-device", f"{device} is not a file")
    return client, _seconds(get, "vfu_client_time", DEFAULT_CLIENT_TIME), device, transcript


def _seconds(get: _Getter, name: str, default: float) -> float:
    """A positive, finite number of seconds (the option ``name``), else ``default``."""
    text = get.value(name)
    if text is None:
        return default
    option = "--" + name.replace("_", "-")
    try:
        value = float(text)
    except ValueError:
        raise _usage(option, f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise _usage(option, f"must be a positive number of seconds, got {text}")
    return value


def _fuzz_db(get: _Getter) -> str | None:
    """--vfu-fuzz-db: a redis:// URL (the redis package installed), or a directory that
    exists or can be made (its path, absolute)."""
    text = get.value("vfu_fuzz_db")
    if text is None:
        return None
    if not text.strip():
        raise _usage("--vfu-fuzz-db", "the database is empty")
    if text.startswith(REDIS_SCHEMES):
        if find_spec("redis") is None:
            raise _usage(
                "--vfu-fuzz-db",
                f"{text} is a Redis server, and the redis package is not installed "
                "(pip install redis)",
            )
        return text
    path = get.path("vfu_fuzz_db", text)
    if path.exists() and not path.is_dir():
        raise _usage("--vfu-fuzz-db", f"{path} is not a directory")
    existing = next(p for p in (path, *path.parents) if p.exists())
    why = (
        "is not a directory"
        if not existing.is_dir()
        else None
        if os.access(existing, os.W_OK | os.X_OK)
        else "is not writable"
    )
    if why is not None:
        raise _usage("--vfu-fuzz-db", f"{path} cannot be made there: {existing} {why}")
    return str(path)


def _usage(option: str, text: str) -> pytest.UsageError:
    return pytest.UsageError(f"{option}: {text}")


def _reference_profile(spec: str = DEFAULT_REVISION) -> Profile:
    """The embedded reference server's own profile at ``spec`` (empty if it is not there
    yet): ``default-<spec>.toml`` where the device differs at that revision."""
    try:
        folder = files("reference_server").joinpath("profiles")
        resource = folder.joinpath(f"default-{spec}.toml")
        if not resource.is_file():
            resource = folder.joinpath("default.toml")
        if resource.is_file():
            return load_profile(Path(str(resource)))
    except (ImportError, ProfileError, OSError, TypeError):
        pass
    return Profile.empty()


class _Getter:
    """Command line first, then ini; relative paths from where each was given."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.explicit = False
        self._from_ini: set[str] = set()

    def value(self, name: str) -> str | None:
        value = getattr(self.config.option, name, None)
        if value is None:
            value = self.config.getini(name)
            if value in (None, ""):
                return None
            self._from_ini.add(name)
        self.explicit = True
        return str(value)

    def flag(self, name: str) -> bool:
        value = getattr(self.config.option, name, None)
        if value is None:
            value = bool(self.config.getini(name))
        self.explicit |= value
        return bool(value)

    def listing(self, name: str) -> list[str]:
        value = getattr(self.config.option, name, None)
        if value is None:
            value = self.config.getini(name) or []
        value = [v.strip() for v in value if v.strip()]
        self.explicit |= bool(value)
        return value

    def path(self, name: str, text: str) -> Path:
        path = Path(os.path.expanduser(text))
        if path.is_absolute():
            return path
        if name in self._from_ini and self.config.inipath is not None:
            return self.config.inipath.parent / path
        return self.config.invocation_params.dir / path
