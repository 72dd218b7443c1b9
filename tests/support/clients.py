"""Clients of a simulator's accounts, one factory each: the real python-binance client, the
controller's ExchangeClient, and the reference bot's own FuturesAccount."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from binance import AsyncClient

from controller.clock import Clock
from controller.config.daemon import Endpoints
from controller.exchange.client import ExchangeClient, RequestGate, RetryPolicy
from controller.exchange.weights import IP_LIMIT_PER_MINUTE, WeightBudget
from controller.sim import Simulator
from reference_bot import Endpoints as BotEndpoints
from reference_bot import ExchangeAccess
from reference_bot.exchange import FuturesAccount, Retries


async def sync_time(client: AsyncClient) -> None:
    """What AsyncClient.create does against Binance: align request timestamps to server time."""
    server = await client.futures_time()
    client.timestamp_offset = server["serverTime"] - int(time.time() * 1000)


@asynccontextmanager
async def binance_client(sim: Simulator, account: str = "canary", *, api_key: str | None = None,
                         api_secret: str | None = None) -> AsyncIterator[AsyncClient]:
    """The REAL python-binance client on a simulator account, its time synced; closed on exit."""
    keys = sim.accounts[account]
    client = AsyncClient(api_key or keys.api_key, api_secret or keys.api_secret)
    client.FUTURES_URL = sim.rest_url
    client.MARGIN_API_URL = sim.sapi_url
    client.API_URL = sim.api_url
    try:
        await sync_time(client)
        yield client
    finally:
        await client.close_connection()


ExchangeClientOpener = Callable[..., Awaitable[ExchangeClient]]


@asynccontextmanager
async def exchange_clients(sim: Simulator, clock: Clock, *, retry: RetryPolicy,
                           weight_limit: int = IP_LIMIT_PER_MINUTE) -> AsyncIterator[ExchangeClientOpener]:
    """Yields ``open_client(account, ...)``, which opens an ExchangeClient on a simulator account
    (``retry`` and a whole budget of ``weight_limit`` unless told otherwise); all closed on exit."""
    opened: list[ExchangeClient] = []

    async def open_client(account: str = "canary", *, budget: WeightBudget | None = None,
                          client_clock: Clock | None = None, api_secret: str | None = None,
                          retry: RetryPolicy = retry, gate: RequestGate | None = None) -> ExchangeClient:
        keys = sim.accounts[account]
        client_clock = client_clock or clock
        client = ExchangeClient(
            account=account, api_key=keys.api_key, api_secret=api_secret or keys.api_secret,
            endpoints=Endpoints(sim.rest_url, sim.ws_url, sim.sapi_url), clock=client_clock,
            budget=budget or WeightBudget(client_clock, share=1.0, limit=weight_limit), gate=gate, retry=retry)
        opened.append(client)
        await client.sync_time()
        return client

    try:
        yield open_client
    finally:
        for client in opened:
            await client.close()


BOT_RETRY = Retries(attempts=3, initial_pause=0.01, max_pause=0.05, request_timeout=5)
"""The bot's retries, short enough for tests."""


def bot_account(sim: Simulator, clock: Clock, account: str = "canary", *,
                retries: Retries = BOT_RETRY, key: str = "trading") -> FuturesAccount:
    """The reference bot's own connection to a simulator account, as a bot is given it, with its
    ``trading`` or ``read-only`` key."""
    keys = sim.accounts[account].key(key)
    access = ExchangeAccess(BotEndpoints(sim.rest_url, sim.ws_url, sim.sapi_url), api_key=keys.key,
                            api_secret=keys.secret)
    return FuturesAccount(access, clock=clock, account=account, retries=retries)
