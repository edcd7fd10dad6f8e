"""Shared fixtures. Sets up 2 host CPU devices for JAX before JAX initialises."""

from __future__ import annotations

import importlib
import os

# Must happen before JAX initialises its backends (sharding tests use 2 CPU devices).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest

from ebmppl._backend import available

BACKENDS = ("numpyro", "pyro")
REQUIRE_ALL = os.environ.get("EBMPPL_REQUIRE_ALL_BACKENDS", "") not in ("", "0")


def load_harness(name: str):
    """Import tests/harness_<name>.py; skip (or fail in CI) when the backend is missing."""
    if not available(name):
        if REQUIRE_ALL:
            pytest.fail(f"backend {name} is not installed but EBMPPL_REQUIRE_ALL_BACKENDS is set")
        pytest.skip(f"backend {name} not installed (pip install 'ebmppl[{name}]')")
    try:
        return importlib.import_module(f"harness_{name}")
    except ModuleNotFoundError as err:
        if err.name == f"harness_{name}":
            if REQUIRE_ALL:
                pytest.fail(f"tests/harness_{name}.py is missing")
            pytest.skip(f"no test harness for backend {name} yet")
        raise


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The backend harness module (same interface for both backends; see harness_numpyro.py)."""
    return load_harness(request.param)


@pytest.fixture
def numpyro_harness():
    return load_harness("numpyro")
