"""The exchange source against a started simulator, through the real exchange layer.

The simulator and the observer share the simulator's clock, running at real speed (signatures
stay valid); the simulator is set as for an in-process bot. Prices stand still unless a test
module overrides ``volatility``.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from controller.clock import SimulatedClock
from controller.exchange.client import ExchangeClient
from controller.sim.market import BOOK_DEPTH
from tests.support.bot import IN_PROCESS_SIM
from tests.support.clients import exchange_clients
from tests.support.exchange_observer import FAST_RETRY
from tests.support.simulator import make_sim


@pytest.fixture
def clock(sim_clock) -> SimulatedClock:
    """In these tests the clock is the simulator's."""
    return sim_clock


@pytest.fixture
def volatility() -> float:
    return 0.0


@pytest.fixture
def book_depth() -> Decimal:
    return BOOK_DEPTH


@pytest.fixture
async def sim(clock, volatility, book_depth):
    async with make_sim(clock=clock, volatility=volatility, book_depth=book_depth, **IN_PROCESS_SIM) as simulator:
        yield simulator
        simulator.faults.clear()  # no fault a test switched on outlives it


@pytest.fixture
async def connect(sim, clock):
    """Open an ExchangeClient for a simulator account; closed at teardown."""
    async with exchange_clients(sim, clock, retry=FAST_RETRY, weight_limit=1_000_000) as open_client:
        yield open_client


@pytest.fixture
async def canary(connect) -> ExchangeClient:
    return await connect("canary")
