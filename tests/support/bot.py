"""The reference bot run in process by the tests: the test strategy, its defects, a running bot
that can be awaited on, and its metrics as PromQL would read them.

In-process runs share one `SimulatedClock` (running at real speed) between the simulator and
the bot, at ten times the bot's default cadence (iterations every 0.1 s, prices every 0.1 s),
so the simulator's request-weight limits are raised to match.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest

from controller.config.strategy import StrategyConfig
from reference_bot import Bot, BotSettings, Strategy
from reference_bot.config import strategy_from

FAST = BotSettings(interval=0.1, order_ttl=0.5, reconcile_every=0.5, shutdown_timeout=3, stream_timeout=5, seed=3)
CAPITAL = Decimal(1800)  # the simulator's canary account
IN_PROCESS_SIM: dict[str, Any] = {"seed": 5, "tick_seconds": 0.1, "weight_limit": 1_000_000}
"""The simulator's settings for an in-process bot (prices every 0.1 s, weight limits raised)."""

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
MAJORS_ONLY: dict[str, Any] = {"symbols": {"BTCUSDT": {"leverage": 5}, "ETHUSDT": {"leverage": 5}},
                               "buckets": {"majors": {"allocation": "0.5", "symbols": ["BTCUSDT", "ETHUSDT"]}},
                               "sizing": {"order_fraction": "0.5"}}


def strategy(base: dict[str, Any] | None = None, **defects: Any) -> StrategyConfig:
    """The test strategy (or ``base``) with the named defects switched on, as the controller reads it."""
    return StrategyConfig.model_validate({**(base or STRATEGY), "bot": {"defects": defects}})


def bot_strategy(config: StrategyConfig) -> Strategy:
    """The same release config as the bot reads it (its own schema)."""
    return strategy_from(config.model_dump(mode="json"))


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


@asynccontextmanager
async def trading(client, clock, config: StrategyConfig):
    """The bot, started and past its start-up (margin type and leverage set) before yielding:
    the stage's observation starts once the release is up."""
    bot = Bot(config=bot_strategy(config), exchange=client, clock=clock, settings=FAST)
    task = asyncio.create_task(bot.run(), name="test-bot-run")
    try:
        waiting = asyncio.create_task(bot.wait_for(lambda: bot.iterations >= 1, timeout=10), name="test-bot-up")
        await asyncio.wait({waiting, task}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        waiting.result()
        yield bot
    finally:
        bot.stop()
        await asyncio.wait_for(task, timeout=10)
