"""The exchange layer against a started simulator, through the real python-binance client."""

from __future__ import annotations

import pytest

from controller.clock import SimulatedClock
from controller.exchange.client import RetryPolicy
from tests.support.clients import exchange_clients

FAST_RETRY = RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.05, request_timeout=5)


@pytest.fixture
def clock(sim_clock) -> SimulatedClock:
    """In these tests the clock is the simulator's."""
    return sim_clock


@pytest.fixture
async def connect(sim, clock):
    """Open an ExchangeClient for a simulator account; closed at teardown."""
    async with exchange_clients(sim, clock, retry=FAST_RETRY) as open_client:
        yield open_client


@pytest.fixture
async def canary(connect):
    return await connect("canary")
