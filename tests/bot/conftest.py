"""The reference bot against a started simulator, through its own exchange connection.

In-process runs share one `SimulatedClock` (running at real speed) between the simulator and
the bot, at ten times the bot's default cadence (iterations every 0.1 s, prices every 0.1 s),
so the request-weight limits are raised to match.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest

from controller.clock import SimulatedClock
from controller.config.strategy import StrategyConfig
from controller.sim import Simulator
from reference_bot import Bot, BotSettings, Endpoints, ExchangeAccess, Strategy
from reference_bot.config import strategy_from
from reference_bot.exchange import FuturesAccount, Retries

FAST_RETRY = Retries(attempts=3, initial_pause=0.01, max_pause=0.05, request_timeout=5)
FAST = BotSettings(interval=0.1, order_ttl=0.5, reconcile_every=0.5, shutdown_timeout=3, stream_timeout=5, seed=3)
CAPITAL = Decimal(2000)  # the simulator's canary account

STRATEGY: dict[str, Any] = {
    "symbols": {
        "BTCUSDT": {"leverage": 5},
        "ETHUSDT": {"leverage": 5},
        "SOLUSDT": {"leverage": 3, "margin_type": "ISOLATED"},
    },
    "buckets": {
        "majors": {"allocation": "0.5", "symbols": ["BTCUSDT", "ETHUSDT"]},
        "alts": {"allocation": "0.3", "symbols": ["SOLUSDT"]},
    },
    "sizing": {"order_fraction": "0.25", "max_open_orders_per_symbol": 2},
}


def strategy(base: dict[str, Any] | None = None, **defects: Any) -> StrategyConfig:
    """The test strategy (or ``base``) with the named defects switched on, as the controller reads it."""
    return StrategyConfig.model_validate({**(base or STRATEGY), "bot": {"defects": defects}})


def bot_strategy(config: StrategyConfig) -> Strategy:
    """The same release config as the bot reads it (its own schema)."""
    return strategy_from(config.model_dump(mode="json"))


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock(speed=1.0)


@pytest.fixture
async def sim(clock):
    simulator = Simulator(clock=clock, seed=5, volatility=1.0, tick_seconds=0.1, weight_limit=1_000_000)
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()


@pytest.fixture
async def bot_exchange(sim, clock):
    """Opens the bot's own connection to a simulator account (as a bot is given it); closed at teardown."""
    opened: list[FuturesAccount] = []

    async def open_exchange(account: str = "canary") -> FuturesAccount:
        keys = sim.accounts[account]
        access = ExchangeAccess(Endpoints(sim.rest_url, sim.ws_url, sim.sapi_url), api_key=keys.api_key,
                                api_secret=keys.api_secret)
        exchange = FuturesAccount(access, clock=clock, account=account, retries=FAST_RETRY)
        opened.append(exchange)
        return exchange

    yield open_exchange
    for exchange in opened:
        await exchange.close()


@pytest.fixture
async def client(bot_exchange) -> FuturesAccount:
    return await bot_exchange("canary")


class RunningBot:
    """A bot whose `run()` is a task; `until` waits on its state changes, not on time."""

    def __init__(self, bot: Bot, task: asyncio.Task) -> None:
        self.bot = bot
        self.task = task

    def value(self, name: str, **labels: str) -> float:
        found = self.bot.metrics.value(name, **labels)
        assert found is not None, f"no sample {name}{labels}"
        return found

    async def until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        """Wait for ``predicate``; fail at once if the bot's run ends first."""
        waiting = asyncio.create_task(self.bot.wait_for(predicate, timeout), name="test-wait-for-bot")
        done, _ = await asyncio.wait({waiting, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if waiting not in done:
            waiting.cancel()
            self.task.result()  # raises what ended the run
            pytest.fail("the bot stopped before the condition held")
        waiting.result()

    async def stop(self) -> None:
        self.bot.stop()
        await asyncio.wait_for(self.task, timeout=10)


@asynccontextmanager
async def running(client, clock, config: StrategyConfig, settings: BotSettings = FAST):
    bot = Bot(config=bot_strategy(config), exchange=client, clock=clock, settings=settings)
    task = asyncio.create_task(bot.run(), name="test-bot-run")
    run = RunningBot(bot, task)
    try:
        yield run
    finally:
        if not task.done():
            await run.stop()


def histogram_quantile(q: float, bot: Bot, name: str) -> float:
    """The ``q`` quantile of one of the bot's histograms, as PromQL's histogram_quantile gives it."""
    from controller.analysis.histogram import histogram_quantile as promql_quantile

    buckets = [(s.labels["le"], s.value) for m in bot.metrics.registry.collect() if m.name == name
               for s in m.samples if s.name == f"{name}_bucket"]
    value = promql_quantile(q, buckets)
    assert value is not None and not math.isnan(value), f"{name} has no observations"
    return value


def observations(bot: Bot, name: str) -> float:
    return bot.metrics.value(f"{name}_count") or 0.0
