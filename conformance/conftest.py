"""Fixtures the conformance modules share beyond the plugin's ``vfu_*`` ones."""

from __future__ import annotations

import pytest

from pytest_vfiouser import unselected_module, watch_client

from . import SECTIONS


def pytest_ignore_collect(collection_path, config):
    """With --vfu-section, the other sections' modules are not collected."""
    return unselected_module(config, collection_path, SECTIONS)


@pytest.fixture
def fuzzer(request, vfu_settings, vfu_target, vfu_device, vfu_spec, vfu_observe):
    """A Fuzzer on the target (its counts go to the terminal summary); every wait for
    an answer is --vfu-timeout, as for any other case."""
    # Here, not at the top: fuzzing imports Hypothesis (0.3 s), which a run without fuzz
    # cases does without.
    from pytest_vfiouser.fuzz import SHRINK_SECONDS, Fuzzer, account  # noqa: PLC0415

    from ._fuzz import case_name, negotiated_caps  # noqa: PLC0415

    if vfu_target.persistent is False and not vfu_target.managed:
        pytest.skip(
            "the server exits after each client and is not one the suite starts "
            "(--vfu-socket): fuzzing needs new connections"
        )
    f = Fuzzer(
        vfu_target,
        spec=vfu_spec,
        timeout=vfu_settings.timeout,
        capabilities=negotiated_caps(vfu_device, vfu_spec),
        device_info=vfu_device.info,
        case_id=case_name(request.node),
        repro_dir=vfu_settings.fuzz_dir,
        observe=vfu_observe,
        on_connect=watch_client,
        shrink_seconds=SHRINK_SECONDS[vfu_settings.fuzz],
    )
    yield f
    f.close()
    account(request.config, f, request.node)
