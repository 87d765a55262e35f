"""The layers of the code: every import of every module goes down, never up or sideways.

From the bottom: the codec (``protocol``) and the verdict vocabulary; the
socket helpers (``_unix``) and the strategies; the raw client; the target
process and the device; fuzzing; the reports; the pytest plugin; the
command line. The reference server stands beside them and imports only the
codec and the socket helpers. A package's implementation modules (``_name``)
and private names are its own: other packages import its public namespace.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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
    "fuzz": frozenset({"protocol", "client", "target", "device", "strategies"}),
    "report": frozenset({"verdict", "protocol", "fuzz"}),
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
        }
    ),
    "cli": frozenset({"plugin", "report", "protocol"}),
    "": frozenset({"plugin"}),  # the package root: the names cases import, lazily
}
REFERENCE_SERVER_ALLOWED = frozenset({"protocol", "_unix"})
# The cases use the suite's public API (case, MUST, the vfu_* fixtures) and its
# tools, never the plugin's insides: what they need from a run comes as fixtures.
CASES_ALLOWED = frozenset(
    {"", "verdict", "protocol", "client", "target", "device", "fuzz", "strategies"}
)
OUTSIDE = {"reference_server": REFERENCE_SERVER_ALLOWED, "conformance": CASES_ALLOWED}


def _modules() -> list[Path]:
    return [
        *sorted((ROOT / SUITE).rglob("*.py")),
        *sorted((ROOT / "reference_server").rglob("*.py")),
        *sorted((ROOT / "conformance").rglob("*.py")),
    ]


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
    mine = next((o for o in OUTSIDE if me.startswith(o)), None)
    mine = mine or _package(me)
    out = []
    for line, module, names in _imports(path, path.read_text() if text is None else text):
        where = f"{path.relative_to(ROOT)}:{line}"
        if module.startswith("reference_server") and mine != "reference_server":
            out.append(f"{where}: imports {module} (the reference server is started by name)")
            continue
        theirs = _package(module)
        if theirs is None:
            continue
        if theirs == "" and names and mine == "conformance":  # case, MUST: the root's API
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
