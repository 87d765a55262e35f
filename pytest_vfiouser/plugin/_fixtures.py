"""The fixtures conformance cases use.

* ``vfu_target``   the running server (``TargetHandle``): ``socket_path``, ``pid``,
  ``command``, ``alive``, ``snapshot()``, ``before``/``after`` resource
  snapshots, ``fresh()`` for a brand-new process.
* ``vfu_connect``  factory: ``vfu_connect()`` is a new ``Client`` connected but
  not negotiated (keyword arguments go to ``Client.connect``); all are closed
  at teardown. Fds a message may not carry that any of them receives fail the case
  (``_fds``); ``watch_client(client)`` has a client the case made otherwise (the
  fuzzer's, a second server's) judged the same way. A server that serves one client
  per process skips a test's second connection (UNIMPLEMENTED), unless
  ``second_client=True`` (a case checking it).
  ``vfu_connect.target`` is the ``vfu_target`` it connects to, ``vfu_connect.timeout``
  its reply timeout.
* ``vfu_client``   a connection negotiated with default capabilities.
* ``vfu_device``   the ``DeviceModel``: what the server reports, merged with
  the profile (``has(feature)``, ``scratch(region)``, ``expected``, ...).
* ``vfu_spec``     the spec revision under test ("0.9.1" or "0.9.2").
* ``vfu_profile``  the ``Profile``.
* ``vfu_settings`` the run's validated options (``Settings``): ``timeout`` (every
  wait for the server, from --vfu-timeout), ``fuzz``, ``fuzz_dir``, ``strict``...
* ``vfu_observe``  ``vfu_observe(text)`` records an observation (INFORMATIONAL).
* ``vfu_hooks``    calls the implementer's hooks, skipping (UNIMPLEMENTED)
  when none is implemented: ``trigger_irq``, ``trigger_dma``, ``device_state``.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_vfiouser.client import (
    Client,
    ClientError,
    ErrorReply,
    MalformedReply,
    UnexpectedReply,
)
from pytest_vfiouser.device import (
    DISCOVERABLE,
    DeviceModel,
    Profile,
    missing_hook,
    resolve_feature,
)
from pytest_vfiouser.target import NEGOTIATION, TargetCrashed, TargetHandle
from pytest_vfiouser.verdict import Verdict

from ._discovery import check_claims, negotiation_failure
from ._fds import watch
from ._hookspecs import hook_attr
from ._judge import HANDLE_KEY, OBSERVATIONS_KEY, ServerFault, case_name, hook_raised
from ._markers import REQUIRES
from ._options import Settings
from ._state import get_state

__all__ = ["observe", "watch_client"]

_CLIENTS_KEY = pytest.StashKey[list]()
_INDEXES = frozenset({"vfu_region_index", "vfu_irq_index"})  # from _device_params
_current_item: pytest.Item | None = None


def observe(text: str) -> None:
    """Record an observation on the running case (a passing case becomes INFORMATIONAL)."""
    if _current_item is None:
        raise RuntimeError("pytest_vfiouser.observe() called outside a running test")
    _current_item.stash.setdefault(OBSERVATIONS_KEY, []).append(str(text))


def watch_client(client) -> None:
    """Judge what ``client``, made by the running case itself (not with vfu_connect),
    receives: fds that no message allows fail the case, as on vfu_connect's clients."""
    if _current_item is None:
        raise RuntimeError("pytest_vfiouser.watch_client() called outside a running test")
    watch(_current_item, client)


@pytest.fixture(autouse=True)
def _vfu_case(request: pytest.FixtureRequest):
    """Skip (UNIMPLEMENTED) cases whose ``requires`` the device lacks; bind observe().
    Cases over the device's region or IRQ indexes, or needing what only discovery can
    tell, need the device described (``RunState.device``)."""
    global _current_item
    item = request.node
    if _INDEXES & set(item.fixturenames):  # parametrized over what discovery found
        state = get_state(request.config)
        state.device(request.getfixturevalue("vfu_target"))
    needs = [name for mark in item.iter_markers(REQUIRES) for name in mark.args]
    if needs:
        state = get_state(request.config)
        settings = state.settings
        claimed = [n for n in needs if n in DISCOVERABLE and settings.profile.has_feature(n)]
        if claimed:  # what the profile declares, discovery may show absent: judged once
            check_claims(state, request.getfixturevalue("vfu_target"), claimed)
        for name in needs:
            model = None
            if name in DISCOVERABLE and settings.profile.has_feature(name) is None:
                # Only discovery can tell: a case it failed for is not run (or judged).
                model = state.device(request.getfixturevalue("vfu_target"))
            _, missing = resolve_feature(
                name, settings.spec, settings.profile, state.hook_names, model
            )
            if missing:
                pytest.skip(missing)
    _current_item = item
    try:
        yield
    finally:
        _current_item = None


@pytest.fixture
def vfu_spec(request: pytest.FixtureRequest) -> str:
    """The spec revision under test."""
    return get_state(request.config).settings.spec


@pytest.fixture
def vfu_settings(request: pytest.FixtureRequest) -> Settings:
    """The run's validated options (read only)."""
    return get_state(request.config).settings


@pytest.fixture
def vfu_profile(request: pytest.FixtureRequest) -> Profile:
    """The device profile (``Profile.empty()`` when none was given)."""
    return get_state(request.config).settings.profile


@pytest.fixture
def vfu_target(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The server under test for this test (started according to --vfu-restart)."""
    state = get_state(request.config)
    item = request.node
    manager = state.manager
    if manager.base_dir is None:
        manager.base_dir = str(tmp_path_factory.mktemp("vfu-targets", numbered=False))
    key = manager.key_for(item.nodeid, item.nodeid.split("::", 1)[0])
    handle = manager.acquire(key, case=case_name(item))
    item.stash[HANDLE_KEY] = handle
    yield handle
    crash = manager.release(handle)
    if crash is not None:
        raise TargetCrashed(crash.message())


@pytest.fixture
def vfu_connect(request: pytest.FixtureRequest, vfu_target: TargetHandle) -> Callable:
    """``vfu_connect()``: a new raw Client connected to the server (not negotiated)."""
    state = get_state(request.config)
    # Describe the device before the test holds a connection: a server that
    # serves one client at a time could not answer discovery later. Only the cases
    # needing it are judged for a failure (vfu_device, vfu_client), unless the target
    # stopped answering (every case needs it).
    state.discover(vfu_target)
    state.manager.check()
    clients: list = request.node.stash.setdefault(_CLIENTS_KEY, [])

    def connect(timeout: float | None = None, second_client: bool = False, **kwargs) -> Client:
        vfu_target.note_connect(second_client)
        client = Client.connect(
            vfu_target.socket_path,
            timeout=state.settings.timeout if timeout is None else timeout,
            **kwargs,
        )
        clients.append(client)
        watch(request.node, client)
        return client

    # For helpers that must tell a server that closed a connection from one that left.
    connect.target, connect.timeout = vfu_target, state.settings.timeout
    yield connect
    for client in clients:
        client.close()


@pytest.fixture
def vfu_client(request: pytest.FixtureRequest, vfu_connect: Callable):
    """A connection negotiated (VERSION) with the client's default capabilities.

    A VERSION that fails (here or in discovery) is judged once, a FAIL quoting the
    spec; the later cases needing a negotiated connection are not run (NOT-RUN)."""
    manager = get_state(request.config).manager
    manager.check(NEGOTIATION)
    client = vfu_connect()
    try:
        client.negotiate()
    except (ErrorReply, MalformedReply, UnexpectedReply) as e:
        detail = negotiation_failure(e)
        manager.block((NEGOTIATION,), "negotiation failed", detail, case_name(request.node))
        raise ServerFault(Verdict.FAIL, f"negotiation failed: {detail}") from None
    return client


@pytest.fixture
def vfu_device(request: pytest.FixtureRequest, vfu_target: TargetHandle) -> DeviceModel:
    """What the server reports about the device, merged with the profile (cached)."""
    return get_state(request.config).device(vfu_target)


@pytest.fixture
def vfu_observe(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``vfu_observe(text)``: record an observation about the server (INFORMATIONAL)."""
    observations = request.node.stash.setdefault(OBSERVATIONS_KEY, [])
    return lambda text: observations.append(str(text))


class Hooks:
    """The implementer's hooks; a hook nobody implements skips the case (UNIMPLEMENTED)."""

    def __init__(self, config: pytest.Config, device: DeviceModel):
        self._hook = config.pluginmanager.hook
        self.device = device

    def _call(self, name: str, **kwargs):
        try:
            result = getattr(self._hook, hook_attr(name))(device=self.device, **kwargs)
        except (ClientError, OSError):
            raise  # what the server did to the hook's requests: judged as the server's
        except Exception as e:  # the implementer's code (or the case's callback in it)
            hook_raised(e, name)
            raise
        if result is None:
            pytest.skip(missing_hook(name))
        return result

    def trigger_irq(self, client, index: int, subindex: int = 0):
        return self._call("vfu_trigger_irq", client=client, index=index, subindex=subindex)

    def trigger_dma(
        self, client, direction: str, address: int, length: int, device_offset: int = 0
    ):
        return self._call(
            "vfu_trigger_dma",
            client=client,
            direction=direction,
            address=address,
            length=length,
            device_offset=device_offset,
        )

    def device_state(self, client) -> bytes:
        return self._call("vfu_device_state", client=client)


@pytest.fixture
def vfu_hooks(request: pytest.FixtureRequest, vfu_device: DeviceModel) -> Hooks:
    """Calls the hooks of the implementer (see pytest_vfiouser.hookspecs)."""
    return Hooks(request.config, vfu_device)


def wire_log_sections(item: pytest.Item, last: int = 40) -> list[tuple[str, str]]:
    """Report sections with the end of each connection's wire log (for failed tests)."""
    out = []
    for n, client in enumerate(item.stash.get(_CLIENTS_KEY, [])):
        logs = [(f"vfio-user wire log, connection {n}", client.wire_log)]
        if client.twin is not None:  # 0.9.2 twin-socket mode: its own socket, its own log
            logs.append((f"vfio-user wire log, connection {n}'s twin socket", client.twin.log))
        for title, log in logs:
            try:
                text = log.render(last=last)
            except Exception as e:  # never let a log hide the real failure
                text = f"(wire log unavailable: {e})"
            if text:
                out.append((title, text))
    return out


def connection_logs(item: pytest.Item) -> list:
    """The WireLog of each connection the test made (vfu_connect), in order (for artifacts.py)."""
    return [client.wire_log for client in item.stash.get(_CLIENTS_KEY, [])]
