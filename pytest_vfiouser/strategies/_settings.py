"""Hypothesis settings for the property tests of the codec."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# Enough examples to find edge cases, no deadline (CI machines stall), and no
# complaint about large data.
CODEC_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
