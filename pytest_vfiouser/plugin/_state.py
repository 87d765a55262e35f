"""The per-run state the hooks and fixtures share, kept in ``config.stash``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest

from pytest_vfiouser.client import Client, ClientError
from pytest_vfiouser.device import DeviceModel
from pytest_vfiouser.report import JsonWriter, Records, combine_targets
from pytest_vfiouser.target import DEVICE, TargetHandle, TargetManager

from ._discovery import discover_device
from ._hookspecs import HOOK_NAMES, hook_attr
from ._options import Settings

__all__ = ["RunState", "get_state"]


@dataclass
class RunState:
    config: pytest.Config
    settings: Settings
    manager: TargetManager
    records: Records = field(default_factory=Records)
    started_at: float = field(default_factory=time.time)
    # Bookkeeping of every pytest process that managed targets (xdist workers
    # send theirs to the controller): TargetManager.summary() dicts.
    target_summaries: list[dict] = field(default_factory=list)
    deselected_by_revision: int = 0
    unknown_baselines: tuple[str, ...] = ()
    active: bool = False  # a conformance session: the plugin acts (_activation)
    usage_error: str | None = None  # found by an xdist worker, reported by the controller
    interrupted: dict | None = None  # why the run stopped early: {"reason", "signal"}
    json: JsonWriter | None = None  # the JSON report, written as cases are judged
    claims_checked: set[str] = field(default_factory=set)  # features (_discovery.check_claims)
    client_run: str | None = None  # client mode: how the client's run went (_client_session)
    _device: DeviceModel | None = None
    _discovered = False

    @property
    def hook_names(self) -> frozenset[str]:
        """Names of the vfu_* hooks some plugin implements."""
        hook = self.config.pluginmanager.hook
        return frozenset(n for n in HOOK_NAMES if getattr(hook, hook_attr(n)).get_hookimpls())

    def device(self, handle: TargetHandle) -> DeviceModel:
        """The device model, discovered once (on ``handle``'s server) and cached.

        When discovery failed, the case asking is the one judged for it (FAIL, HANG or
        CRASH: ServerFault) if none was yet, else it is not run (TargetNotRun): see
        ``_discovery``. A server that exits, crashes or hangs during discovery is
        replaced, so the test still gets a fresh one.
        """
        self.discover(handle)
        self.manager.check(DEVICE)
        return self._device

    def discover(self, handle: TargetHandle) -> DeviceModel | None:
        """Discover the device once, if not done yet; the model, or None when discovery
        failed (what that prevents is blocked in the manager). Judges no case."""
        if not self._discovered:
            self._discovered = True
            self._device = discover_device(self, handle)
        return self._device

    def probe(self, socket_path: str) -> str | None:
        """Whether a new client is served at ``socket_path`` (connect and VERSION within
        --vfu-timeout): None if it is, else what happened (``TargetManager.probe``)."""
        try:
            with Client.connect(socket_path, timeout=self.settings.timeout) as client:
                client.negotiate()
        except (ClientError, OSError) as e:
            return f"{type(e).__name__}: {e}"
        return None

    def negotiated(self) -> dict | None:
        return self._device.negotiated() if self._device is not None else None

    def own_targets(self) -> dict:
        """This process's target bookkeeping (TargetManager.summary() and more)."""
        mine = self.manager.summary()
        mine["negotiated"] = self.negotiated()
        mine["deselected_by_revision"] = self.deselected_by_revision
        return mine

    def targets(self) -> dict:
        """The target bookkeeping of the run so far (of every process that managed targets)."""
        summaries = list(self.target_summaries)
        if self.manager.starts or self.manager.notes or not summaries:
            summaries.append(self.own_targets())
        return combine_targets(summaries)


_KEY = pytest.StashKey[RunState]()


def set_state(config: pytest.Config, state: RunState) -> None:
    config.stash[_KEY] = state


def get_state(config: pytest.Config) -> RunState:
    try:
        return config.stash[_KEY]
    except KeyError:
        raise RuntimeError("the vfiouser plugin is not configured") from None
