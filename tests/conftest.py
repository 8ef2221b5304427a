"""Shared fixtures: replayable seeds and once-per-session simulator builds."""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest


@pytest.fixture
def seed(request) -> int:
    """A seed per test: ``LLMCHIP_SEED`` if set (replay), else derived from the test id.

    The seed is printed, so a failing run shows the value to replay it with
    ``LLMCHIP_SEED=<seed> pytest <test id>``.
    """
    env = os.environ.get("LLMCHIP_SEED")
    value = int(env) if env else zlib.crc32(request.node.nodeid.encode())
    print(f"seed={value} (replay: LLMCHIP_SEED={value} pytest '{request.node.nodeid}')")
    return value


@pytest.fixture
def rng(seed) -> np.random.Generator:
    """A NumPy generator seeded with :func:`seed`."""
    return np.random.default_rng(seed)


_BUILDS: dict = {}


@pytest.fixture(scope="session")
def sim_build():
    """Return ``get(config, sim)``: a build made at most once per session (and cached on
    disk across sessions, keyed by the Verilog)."""
    from llmchip.tb.sim import build

    def get(config, sim):
        key = (config, sim)
        if key not in _BUILDS:
            _BUILDS[key] = build(config, sim)
        return _BUILDS[key]

    return get
