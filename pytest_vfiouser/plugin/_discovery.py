"""Device discovery, once per run, and what its failure prevents.

``discover_device`` describes the device once (VERSION, DEVICE_GET_INFO, every region
and IRQ: ``device.discover``). When that fails, the server is judged, never the
harness, and once: a reply that does not decode, or refuses what the server must
serve, is a FAIL quoting the sentence it breaks; no reply within --vfu-timeout a HANG
(and when a fresh server does not answer VERSION either, the target stopped
answering: every other case is NOT-RUN); a signal a CRASH. What the failure prevents
is blocked for the run (``TargetManager.block``): the cases that need the device's
description and, when VERSION failed, those that need a negotiated connection. The
first of them to ask is judged; the later ones are NOT-RUN, pointing at it. Cases on
raw connections still run, and give their own verdicts.

``negotiation_failure`` says the same of a VERSION that fails in ``vfu_client``.

``check_claims``: a feature the profile declares (``[features] name = true``) that
discovery shows the device lacks is judged once too: the first case needing it is a
FAIL naming the profile's key and what discovery found; the later ones are NOT-RUN,
pointing at it (not UNIMPLEMENTED one by one, which would hide that the device does
not do what its implementer says it does).
"""

from __future__ import annotations

from pytest_vfiouser.client import (
    Client,
    ClientError,
    ConnectionClosed,
    ErrorReply,
    MalformedReply,
    Timeout,
    UnexpectedReply,
    errno_text,
)
from pytest_vfiouser.device import (
    FEATURE_REVISIONS,
    TWIN_PROBE,
    DeviceModel,
    DiscoveryError,
    discover,
    discovery_proposal,
    probe_twin_socket,
)
from pytest_vfiouser.protocol import Command, command_name
from pytest_vfiouser.target import DEVICE, NEGOTIATION, TargetHandle
from pytest_vfiouser.verdict import Verdict

from ._judge import ServerFault

__all__ = ["DISCOVERY_FAILED", "check_claims", "discover_device", "negotiation_failure"]

DISCOVERY_FAILED = "device discovery failed"

# The sentences a reply to VERSION or DEVICE_GET_INFO breaks, by what went wrong.
_FORMAT = {
    Command.VERSION: (
        'Spec (VFIO_USER_VERSION): "This is the initial message sent by the client after the '
        "socket connection is established; the same format is used for the server's "
        'reply." ... "version major | 0 | 2", "version minor | 2 | 2", "version data | 4 | '
        'variable (including terminating NUL). Optional." ... "The version data is an '
        'optional UTF-8 encoded JSON byte array"'
    ),
    Command.DEVICE_GET_INFO: (
        'Spec (VFIO_USER_DEVICE_GET_INFO): Reply "argsz | 0 | 4", "flags | 4 | 4", '
        '"num_regions | 8 | 4", "num_irqs | 12 | 4" ... "argsz is the size required for '
        'the full reply payload (16 bytes today)"'
    ),
}
_REFUSED = {
    Command.VERSION: (
        'Spec (VFIO_USER_VERSION): "The server compares these with the versions and '
        "capabilities it supports and sends a VFIO_USER_VERSION reply according to the "
        'following rules." ... "Both the client and server must support all minor versions '
        'less than the maximum minor version it supports."'
    ),
    Command.DEVICE_GET_INFO: (
        'Spec (VFIO_USER_DEVICE_GET_INFO): "This command message is sent by the client to '
        'the server to query for basic information about the device."'
    ),
}
_ECHOED = (
    "Spec (Header): \"Message ID identifies the message, and is echoed in the command's "
    'reply message." ... "Command specifies the command to be executed, listed in '
    'Commands. It is also set in the reply header."'
)
_REPLIED_TO = (
    'Spec (Header): "Each command message in Commands must be replied to with a reply '
    'message, unless the message sets the No_Reply bit."'
)
_CLOSE_ON_VERSION = (
    ' (it may close on VERSION only "If the server requires a capability the client did '
    'not include"; the client proposed max_msg_fds and max_data_xfer_size, which the spec '
    "makes optional for both sides)"
)


def discover_device(state, handle: TargetHandle) -> DeviceModel | None:
    """The device as ``handle``'s server describes it, or None when it could not: then
    what the failure prevents is blocked (see the module docstring)."""
    settings, manager = state.settings, state.manager
    found: list = []  # the model, or (the exception, the command it failed on)

    def use() -> str | None:
        client, command = None, Command.VERSION
        try:
            client = Client.connect(handle.socket_path, timeout=settings.timeout)
            client.negotiate(capabilities=discovery_proposal(client, settings.spec))
            command = Command.DEVICE_GET_INFO
            client.device_get_info().check().body  # noqa: B018 (it must decode)
            command = None  # the regions and IRQs
            found.append(
                discover(
                    client, spec=settings.spec, profile=settings.profile, hooks=state.hook_names
                )
            )
        except (DiscoveryError, ClientError, OSError) as e:
            cause = e.__cause__ if isinstance(e, DiscoveryError) and e.__cause__ else e
            found.append((cause, command))
            return f"{DISCOVERY_FAILED}: {type(cause).__name__}: {cause}"
        finally:
            if client is not None:
                client.close()
        return None

    def probe() -> str | None:
        try:
            client = Client.connect(handle.socket_path, timeout=settings.timeout)
        except OSError as e:
            return f"the twin-socket probe could not connect: {e}"
        found[0].probed[TWIN_PROBE] = probe_twin_socket(client)
        return None

    error, crash = manager.use_once(handle, "device discovery", use)
    if error is None:
        if settings.spec in FEATURE_REVISIONS["twin_socket"]:
            # On a connection of its own (see probe_twin_socket); a server that serves
            # one client is started again for it. What fails here the cases judge.
            manager.use_once(handle, "the twin-socket probe", probe)
        return found[0]
    exc, command = found[0]
    # DEVICE_GET_INFO is what the cases on a negotiated connection send as their positive
    # control (the probe that it still serves requests): without it they cannot judge.
    needs = (DEVICE,) if command is None else (NEGOTIATION, DEVICE)
    if crash is not None:
        # the crash itself (signal, core, stderr) is in the notes once (use_once)
        verdict, detail = Verdict.CRASH, f"server killed by {crash.signal}: {_broken(exc, command)}"
    elif isinstance(exc, Timeout):
        verdict, detail = Verdict.HANG, f"no reply in time: {exc}"
        if not manager.answering_after_hang(
            handle, "device discovery got no reply in time", _fault(Verdict.HANG)
        ):
            return None  # the target stopped answering: every case is blocked
        if command == Command.VERSION:
            needs = (DEVICE,)  # but a fresh server answers VERSION
    else:
        verdict, detail = Verdict.FAIL, _broken(exc, command)
    manager.block(needs, DISCOVERY_FAILED, detail, first=_fault(verdict))
    return None


def check_claims(state, handle: TargetHandle, features) -> None:
    """For a case needing ``features`` (each declared true by the profile): raise ServerFault
    (FAIL) for the first case needing one that discovery shows the device lacks,
    TargetNotRun for the later ones. A discovery that failed is judged by itself: then
    the claims are not checked."""
    manager, profile = state.manager, state.settings.profile
    for name in features:
        need = f"feature {name}"
        if name not in state.claims_checked:
            state.claims_checked.add(name)
            model = state.discover(handle)
            found = model.lacks(name) if model is not None else None
            if found is not None:
                where = profile.path or repr(profile.name)
                what = (
                    f"the profile {where} declares features.{name} = true, but the device lacks it"
                )
                manager.block(
                    (need,),
                    what,
                    f"device discovery found that {found}",
                    first=_fault(Verdict.FAIL),
                )
        manager.check(need)


def negotiation_failure(exc: ClientError) -> str:
    """What a VERSION that failed with ``exc`` breaks, quoting the spec."""
    return _broken(exc, Command.VERSION)


def _fault(verdict: Verdict):
    return lambda message: ServerFault(verdict, message)


def _broken(exc: BaseException, command: int) -> str:
    """What the reply (or its absence) to ``command`` (None: some request describing
    the regions and IRQs) did wrong, and the sentence."""
    name = command_name(command) if command is not None else "a request"
    if isinstance(exc, MalformedReply):
        if exc.header is not None:
            command, name = exc.header.command, command_name(exc.header.command)
        quote = _FORMAT.get(command, "")
        return f"the {name} reply does not decode: {exc}" + (f"\n{quote}" if quote else "")
    if isinstance(exc, ErrorReply):
        quote = _REFUSED.get(exc.command, "")
        refused = f"the server refused {command_name(exc.command)}: {errno_text(exc.errno)}"
        return refused + (f"\n{quote}" if quote else "")
    if isinstance(exc, UnexpectedReply):
        return f"{name} was not answered by its reply: {exc}\n{_ECHOED}"
    if isinstance(exc, ConnectionClosed):
        extra = _CLOSE_ON_VERSION if command == Command.VERSION else ""
        return f"the server closed the connection instead of answering: {exc}\n{_REPLIED_TO}{extra}"
    return f"{type(exc).__name__}: {exc}"
