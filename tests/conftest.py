"""Shared pytest setup: deterministic hypothesis, codec backends as a fixture."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from orbithil.hal import codec

# Deterministic property tests: the same examples on every run and every machine.
settings.register_profile(
    "orbithil",
    derandomize=True,
    deadline=None,
    max_examples=300,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("orbithil")


@pytest.fixture(params=["python", "c"])
def codec_backend(request):
    """Each codec backend. The C one must be built: `make setup` builds it, so a missing
    C backend is a failure, not a skip."""
    backends = codec.available_backends()
    if request.param not in backends:
        pytest.fail(f"the C codec is {codec.c_status()}")
    return backends[request.param]
