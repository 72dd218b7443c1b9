"""A started simulator on an ephemeral port and the REAL python-binance client pointed at it."""

from __future__ import annotations

import pytest

from controller.clock import SimulatedClock
from tests.support.clients import binance_client


@pytest.fixture
def clock(sim_clock) -> SimulatedClock:
    """In these tests the clock is the simulator's."""
    return sim_clock


@pytest.fixture
async def canary(sim):
    async with binance_client(sim, "canary") as client:
        yield client


@pytest.fixture
async def master(sim):
    async with binance_client(sim, "master") as client:
        yield client
