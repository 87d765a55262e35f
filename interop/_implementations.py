"""The implementations under test and the spec revisions, as implementations.toml declares them."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

__all__ = ["HERE", "IMPLEMENTATIONS", "Catalogue", "CatalogueError", "Implementation", "load"]

HERE = Path(__file__).resolve().parent
IMPLEMENTATIONS = HERE / "implementations.toml"
THIRD_PARTY = HERE.parent.parent / "shared" / "third_party"


@dataclass(frozen=True)
class Implementation:
    name: str
    about: str = ""
    snapshot: str | None = None  # None: the embedded reference server, or a program's
    binary: str | None = None
    command: str | None = None  # "{binary} {socket}"
    options: tuple[str, ...] = ()
    revisions: tuple[str, ...] | None = None  # None: every revision of the catalogue
    meson_options: tuple[str, ...] = ()  # a build of its own with these (-Dname=value)
    client: bool = False  # a [[client]]: judged by the client mode, against our server
    program: str | None = None  # a client's program, set up outside the tier (from the repo)

    @property
    def is_reference(self) -> bool:
        """The embedded reference server: the clean run, no --vfu-server."""
        return self.snapshot is None and not self.client

    @property
    def peer(self) -> str:
        return "client" if self.client else "server"

    def server_command(self, samples: Path | None) -> str:
        """The --vfu-server (or --vfu-client) command: the template with {binary} the
        sample in ``samples`` (or {program} the client's program; {third_party} the
        shared third-party folder beside the repository); {socket} is left for the suite."""
        assert self.command, self.name
        command = self.command.replace("{third_party}", shlex.quote(str(THIRD_PARTY)))
        if self.program is not None:
            return command.replace("{program}", shlex.quote(str(self.program_path)))
        assert self.binary and samples is not None, self.name
        return command.replace("{binary}", shlex.quote(str(samples / self.binary)))

    @property
    def program_path(self) -> Path:
        assert self.program is not None, self.name
        return HERE.parent / self.program


@dataclass(frozen=True)
class Catalogue:
    revisions: tuple[str, ...]
    implementations: tuple[Implementation, ...]  # the servers, then the clients

    def revisions_of(self, impl: Implementation) -> tuple[str, ...]:
        """The spec revisions ``impl`` runs at, in the catalogue's order."""
        return tuple(r for r in self.revisions if impl.revisions is None or r in impl.revisions)

    def named(self, name: str) -> Implementation:
        for impl in self.implementations:
            if impl.name == name:
                return impl
        raise KeyError(name)


class CatalogueError(ValueError):
    """implementations.toml says something this module cannot use."""


_KEYS = {"name", "about", "snapshot", "binary", "command", "options", "revisions", "meson_options"}
_CLIENT_KEYS = _KEYS - {"meson_options"} | {"program"}


def load(path: Path = IMPLEMENTATIONS) -> Catalogue:
    with open(path, "rb") as f:
        data = tomllib.load(f)
    revisions = tuple(data.get("revisions") or ())
    if not revisions:
        raise CatalogueError(f"{path}: no revisions")
    impls = [
        _entry(path, n, entry, revisions, client=False)
        for n, entry in enumerate(data.get("implementation") or ())
    ]
    impls += [
        _entry(path, n, entry, revisions, client=True)
        for n, entry in enumerate(data.get("client") or ())
    ]
    names = [i.name for i in impls]
    if len(set(names)) != len(names):
        raise CatalogueError(f"{path}: an implementation name is declared twice")
    return Catalogue(revisions, tuple(impls))


def _entry(path: Path, n: int, entry: dict, revisions, client: bool) -> Implementation:
    kind = "client" if client else "implementation"
    unknown = set(entry) - (_CLIENT_KEYS if client else _KEYS)
    if unknown or "name" not in entry:
        raise CatalogueError(
            f"{path}: {kind} #{n + 1}: needs a name; unknown keys {sorted(unknown)}"
        )
    impl = Implementation(
        name=entry["name"],
        about=entry.get("about", ""),
        snapshot=entry.get("snapshot"),
        binary=entry.get("binary"),
        command=entry.get("command"),
        options=tuple(entry.get("options") or ()),
        revisions=tuple(entry["revisions"]) if "revisions" in entry else None,
        meson_options=tuple(entry.get("meson_options") or ()),
        client=client,
        program=entry.get("program"),
    )
    if impl.revisions is not None and not set(impl.revisions) <= set(revisions):
        raise CatalogueError(f"{path}: {impl.name}: revisions not among {list(revisions)}")
    if impl.snapshot is not None and not (impl.binary and impl.command):
        raise CatalogueError(f"{path}: {impl.name}: a snapshot needs a binary and a command")
    if client and (impl.command is None or (impl.snapshot is None) == (impl.program is None)):
        raise CatalogueError(
            f"{path}: {impl.name}: a client needs a command, and a snapshot or a program"
        )
    if impl.command is not None and "{socket}" not in impl.command:
        raise CatalogueError(f"{path}: {impl.name}: the command has no {{socket}}")
    return impl
