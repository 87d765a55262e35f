"""The layers of the code: every import of every module goes down, never up or sideways.

From the bottom: the codec (``protocol``) and the verdict vocabulary; the
socket helpers (``_unix``) and the strategies; the raw client; the target
process and the device; fuzzing; the reports; the pytest plugin; the
command line. The reference server stands beside them and imports only the
codec and the socket helpers; its fault overlay (reference_server_faults)
stands on it, and adds the verdict vocabulary. Nothing imports the overlay, and
the reference server holds no fault switch. The interop tier (``interop/``) reads reports
and verdicts and runs the suite as a command. A package's implementation modules
(``_name``) and private names are its own: other packages import its public namespace.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from reference_server_faults import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]
SUITE = "pytest_vfiouser"

# package -> the packages of the suite it may import (besides itself)
ALLOWED: dict[str, frozenset[str]] = {
    "protocol": frozenset(),
    "verdict": frozenset(),
    "_unix": frozenset(),
    "strategies": frozenset({"protocol"}),
    "client": frozenset({"protocol", "_unix"}),
    "target": frozenset({"protocol"}),
    "device": frozenset({"protocol", "client"}),
    "fuzz": frozenset({"verdict", "protocol", "client", "target", "device", "strategies"}),
    "report": frozenset({"verdict", "protocol", "fuzz"}),
    "clientcheck": frozenset({"protocol", "target"}),
    "plugin": frozenset(
        {
            "verdict",
            "protocol",
            "_unix",
            "client",
            "target",
            "device",
            "fuzz",
            "strategies",
            "report",
            "clientcheck",
        }
    ),
    "cli": frozenset({"plugin", "report", "protocol", "verdict"}),
    "": frozenset({"plugin", "verdict"}),  # the root: the names cases import (plugin's lazily)
}
REFERENCE_SERVER_ALLOWED = frozenset({"protocol", "_unix"})
# The cases use the suite's public API (case, MUST, the vfu_* fixtures) and its
# tools, never the plugin's insides: what they need from a run comes as fixtures.
CASES_ALLOWED = frozenset(
    {"", "verdict", "protocol", "client", "target", "device", "fuzz", "strategies"}
)
# The client cases read a client's session (clientcheck) and the codec, nothing else.
CLIENT_CASES = "conformance_client"
CLIENT_CASES_ALLOWED = frozenset({"", "verdict", "protocol", "clientcheck"})
# The fault overlay: the reference server (any of it) and these packages of the suite.
OVERLAY = "reference_server_faults"
OVERLAY_ALLOWED = frozenset({"protocol", "_unix", "verdict"})
# The interop tier: the reports it reads and the verdicts; the suite runs as a command.
INTEROP = "interop"
INTEROP_ALLOWED = frozenset({"report", "verdict"})
OUTSIDE = {
    "reference_server": REFERENCE_SERVER_ALLOWED,
    OVERLAY: OVERLAY_ALLOWED,
    "conformance": CASES_ALLOWED,
    CLIENT_CASES: CLIENT_CASES_ALLOWED,
    INTEROP: INTEROP_ALLOWED,
}


def _modules() -> list[Path]:
    return [
        *sorted((ROOT / SUITE).rglob("*.py")),
        *sorted((ROOT / "reference_server").rglob("*.py")),
        *sorted((ROOT / OVERLAY).rglob("*.py")),
        *sorted((ROOT / "conformance").rglob("*.py")),
        *sorted((ROOT / CLIENT_CASES).rglob("*.py")),
        *sorted((ROOT / INTEROP).rglob("*.py")),
    ]


def _top(module: str) -> str:
    return module.split(".")[0]


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, text: str):
    """(line, absolute module, imported names) of every import, at any depth."""
    tree = ast.parse(text, str(path))
    name = _name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield node.lineno, module, tuple(a.name for a in node.names)


def _package(module: str) -> str | None:
    """The suite's package a module belongs to ('' for the root), None outside the suite."""
    if module == SUITE:
        return ""
    if not module.startswith(SUITE + "."):
        return None
    return module.split(".")[1]


def _violations(path: Path, text: str | None = None) -> list[str]:
    me = _name(path)
    mine = _top(me) if _top(me) in OUTSIDE else _package(me)
    out = []
    for line, module, names in _imports(path, path.read_text() if text is None else text):
        where = f"{path.relative_to(ROOT)}:{line}"
        if _top(module) == OVERLAY and mine != OVERLAY:
            out.append(f"{where}: imports {module} (the fault overlay is started by name)")
            continue
        if _top(module) == "reference_server" and mine not in ("reference_server", OVERLAY):
            out.append(f"{where}: imports {module} (the reference server is started by name)")
            continue
        theirs = _package(module)
        if theirs is None:
            continue
        if (
            theirs == "" and names and mine in ("conformance", CLIENT_CASES)
        ):  # case, MUST: the root's API
            targets = [(n if n in ALLOWED else "") for n in names]
        elif theirs == "" and names:  # ``from pytest_vfiouser import plugin``: the packages
            targets = [(n if n != "__version__" else "") for n in names]
        else:
            targets = [theirs]
        for target in targets:
            if target == mine:
                continue
            allowed = OUTSIDE[mine] if mine in OUTSIDE else ALLOWED[mine]
            if target and target not in allowed:
                out.append(
                    f"{where}: {mine or SUITE} imports {target} ({module}), against the layers"
                )
        inner = module.split(".")[2:]
        if theirs != mine and any(p.startswith("_") for p in inner):
            out.append(f"{where}: imports the implementation module {module}: use its package")
        if theirs != mine and any(n.startswith("_") and not n.startswith("__") for n in names):
            out.append(f"{where}: imports private names {names} of {module}")
    return out


def test_every_package_is_known():
    packages = {
        p.name.removesuffix(".py")
        for p in (ROOT / SUITE).iterdir()
        if (p.suffix == ".py" or (p / "__init__.py").exists()) and p.name != "__init__.py"
    }
    assert packages == set(ALLOWED) - {""}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path):
    assert not _violations(path), "\n".join(_violations(path))


@pytest.mark.parametrize(
    ("where", "text", "complaint"),
    [
        ("protocol/_probe.py", "from pytest_vfiouser.client import Client", "against the layers"),
        (
            "fuzz/_probe.py",
            "from pytest_vfiouser.client._client import Client",
            "implementation module",
        ),
        ("report/_probe.py", "from ..plugin import get_state", "against the layers"),
        ("device/_probe.py", "from pytest_vfiouser.client import _private", "private names"),
        ("target/_probe.py", "from reference_server import registers", "started by name"),
    ],
)
def test_the_check_catches_what_it_forbids(where, text, complaint):
    """Each rule can fail: an import that breaks it is reported."""
    found = _violations(ROOT / SUITE / where, text)
    assert any(complaint in v for v in found), found


def test_cases_do_not_reach_into_the_plugin():
    found = _violations(
        ROOT / "conformance" / "_probe.py",
        "from pytest_vfiouser.plugin import get_state\nfrom pytest_vfiouser import MUST, case",
    )
    assert len(found) == 1 and "plugin" in found[0], found


def test_the_reference_server_imports_only_the_codec_and_socket_helpers():
    found = _violations(
        ROOT / "reference_server" / "_probe.py",
        "from pytest_vfiouser.client import Client\nfrom pytest_vfiouser import protocol",
    )
    assert len(found) == 1 and "client" in found[0], found


@pytest.mark.parametrize(
    ("where", "text", "complaint"),
    [
        ("reference_server/_probe.py", "from reference_server_faults import FAULTS", "overlay"),
        ("reference_server/_probe.py", "import reference_server_faults._framing", "overlay"),
        (f"{SUITE}/target/_probe.py", "from reference_server_faults import CATALOGUE", "overlay"),
        (f"{OVERLAY}/_probe.py", "from pytest_vfiouser.client import Client", "layers"),
        (f"{OVERLAY}/_probe.py", "from pytest_vfiouser.report import write", "layers"),
    ],
)
def test_the_fault_overlay_is_imported_by_nothing_and_imports_below_it(where, text, complaint):
    found = _violations(ROOT / where, text)
    assert any(complaint in v for v in found), found


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("from pytest_vfiouser.plugin import get_state", "against the layers"),
        ("from pytest_vfiouser.cli import main", "against the layers"),
        ("from pytest_vfiouser.report._compare import load", "implementation module"),
        ("from pytest_vfiouser.verdict import _private", "private names"),
        ("from reference_server import registers", "started by name"),
    ],
)
def test_interop_reads_reports_and_verdicts_only(text, complaint):
    found = _violations(ROOT / INTEROP / "_probe.py", text)
    assert any(complaint in v for v in found), found


def test_interop_may_import_the_reports_and_verdicts():
    found = _violations(
        ROOT / INTEROP / "_probe.py",
        "from pytest_vfiouser.report import ReportError, load\n"
        "from pytest_vfiouser.verdict import Verdict, in_report_order\n"
        "from . import _build",
    )
    assert not found, found


def test_the_fault_overlay_may_import_the_server_codec_sockets_and_verdicts():
    found = _violations(
        ROOT / OVERLAY / "_probe.py",
        "from reference_server.connection import Connection, _close_all\n"
        "from pytest_vfiouser.protocol import Command\n"
        "from pytest_vfiouser._unix import rights\n"
        "from pytest_vfiouser.verdict import Verdict\n"
        "from ._catalogue import FAULTS",
    )
    assert not found, found


# ---- the reference server holds no fault switch: its faults are the overlay's

_FAULT_NAME = re.compile(r"(^|_)faults?($|_)|faulty", re.IGNORECASE)


def _fault_switches(path: Path, text: str | None = None) -> list[str]:
    """Names of the fault machinery (FAULTS, *_faulty, fault ...) and fault names as
    strings: what an inline ``if "name" in FAULTS:`` leaves behind."""
    tree = ast.parse(path.read_text() if text is None else text)
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)):
            names = [node.name]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        elif isinstance(node, ast.alias):
            names = [node.name, node.asname or ""]
        elif isinstance(node, ast.Constant) and node.value in CATALOGUE:
            out.append(f"{path.name}:{node.lineno}: the fault name {node.value!r}")
        out += [f"{path.name}:{node.lineno}: {n}" for n in names if _FAULT_NAME.search(n)]
    return out


@pytest.mark.parametrize(
    "path", sorted((ROOT / "reference_server").rglob("*.py")), ids=lambda p: p.name
)
def test_the_reference_server_has_no_fault_switches(path):
    assert not _fault_switches(path), "\n".join(_fault_switches(path))


@pytest.mark.parametrize(
    "text",
    [
        'if "msg-id-8bit" in FAULTS:\n    pass',
        "from .faults import crash",
        "def _send_faulty(hdr):\n    pass",
        "flags = 0 if fault else 1",
    ],
)
def test_the_switch_check_catches_a_switch(text):
    assert _fault_switches(ROOT / "reference_server" / "_probe.py", text)


@pytest.mark.parametrize("package", sorted(set(ALLOWED) - {"", "verdict", "cli"}))
def test_each_package_says_what_it_holds_and_may_import(package):
    init = ROOT / SUITE / package / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert "May import" in doc, f"{init}: the docstring does not say what the package may import"
    tree = ast.parse(init.read_text())
    explicit = [
        n
        for n in tree.body
        if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets)
    ]
    assert explicit and isinstance(explicit[0].value, ast.List), f"{init}: no literal __all__"
