"""The reference bot in process against a started simulator, through its own exchange connection.

The simulator and the bot share the simulator's clock (running at real speed); see
`tests.support.bot` for the bot's cadence and the simulator's settings that match it.
"""

from __future__ import annotations

import pytest

from controller.clock import SimulatedClock
from reference_bot.exchange import FuturesAccount
from tests.support.bot import IN_PROCESS_SIM
from tests.support.simulator import make_sim


@pytest.fixture
def clock(sim_clock) -> SimulatedClock:
    """In these tests the clock is the simulator's."""
    return sim_clock


@pytest.fixture
async def sim(clock):
    async with make_sim(clock=clock, volatility=1.0, **IN_PROCESS_SIM) as simulator:
        yield simulator


@pytest.fixture
async def client(bot_exchange) -> FuturesAccount:
    return await bot_exchange("canary")
