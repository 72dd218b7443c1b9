"""The exchange layer against a started simulator, through the real python-binance client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from controller.clock import SimulatedClock
from controller.config.daemon import Endpoints
from controller.exchange.client import ExchangeClient, RequestGate, RetryPolicy
from controller.exchange.events import ExchangeEvent
from controller.exchange.weights import WeightBudget
from controller.sim import Simulator

FAST_RETRY = RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.05, request_timeout=5)

@pytest.fixture
def clock(sim_clock) -> SimulatedClock:
    """In these tests the clock is the simulator's."""
    return sim_clock

@pytest.fixture
async def connect(sim, clock):
    """Open an ExchangeClient for a simulator account; closed at teardown."""
    opened: list[ExchangeClient] = []

    async def open_client(account: str = "canary", *, budget: WeightBudget | None = None,
                          client_clock=None, api_secret: str | None = None, retry: RetryPolicy = FAST_RETRY,
                          gate: RequestGate | None = None) -> ExchangeClient:
        acct = sim.accounts[account]
        client_clock = client_clock or clock
        client = ExchangeClient(
            account=account, api_key=acct.api_key, api_secret=api_secret or acct.api_secret,
            endpoints=Endpoints(sim.rest_url, sim.ws_url, sim.sapi_url), clock=client_clock,
            budget=budget or WeightBudget(client_clock, share=1.0), gate=gate, retry=retry)
        opened.append(client)
        await client.sync_time()
        return client

    yield open_client
    for client in opened:
        await client.close()

@pytest.fixture
async def canary(connect):
    return await connect("canary")

class EventLog:
    """A sink for the stream that tests can await on."""

    def __init__(self) -> None:
        self.events: list[ExchangeEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: ExchangeEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, predicate: Callable[[list[ExchangeEvent]], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.events):
                self._changed.clear()
                await self._changed.wait()

def requests_to(sim: Simulator, method: str, path: str) -> int:
    return sum(1 for r in sim.requests if r.method == method and r.path == path)
