"""The reference bot trading on the simulator, watched by ExchangeObserver: a healthy release
passes the exchange-side checks of stages C and D, and each defect shows where it should."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest

from controller.config.strategy import StrategyConfig
from reference_bot import Bot, BotSettings
from tests.bot.conftest import bot_strategy
from tests.observe_exchange.conftest import observing, strategy

FAST = BotSettings(interval=0.1, order_ttl=0.5, reconcile_every=0.5, shutdown_timeout=3, stream_timeout=5, seed=3)
MAJORS_ONLY = {"symbols": {"BTCUSDT": {"leverage": 5}, "ETHUSDT": {"leverage": 5}},
               "buckets": {"majors": {"allocation": "0.5", "symbols": ["BTCUSDT", "ETHUSDT"]}},
               "sizing": {"order_fraction": "0.5"}}


@pytest.fixture
def volatility() -> float:
    return 1.0  # the bot's limit orders fill as prices move


@pytest.fixture
async def bot_client(bot_exchange):
    return await bot_exchange("canary")


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


async def test_a_healthy_release_shows_no_mismatch_no_oversized_fill_and_no_margin_call(canary, bot_client, clock):
    config = strategy()
    async with trading(bot_client, clock, config), observing(canary, config, clock=clock) as run:
        record = run.record
        await run.until(lambda: len(record.values("fill_notional_ratio")) >= 5, timeout=20)
    for symbol in config.symbols:
        assert set(record.values("leverage_mismatch", symbol=symbol)) == {0.0}
        assert set(record.values("margin_type_mismatch", symbol=symbol)) == {0.0}
    assert set(record.values("fill_leverage_mismatch")) == {0.0}
    assert max(record.values("fill_notional_ratio")) <= 1.02
    assert all(o.label("bucket") == config.bucket_of(o.label("symbol"))
               for o in record.observations("fill_notional_ratio"))
    assert not record.values("margin_calls") and max(record.values("margin_ratio")) < 0.3
    assert record.last("order_outcomes", outcome="filled") >= 1


async def test_a_wrong_leverage_shows_as_a_mismatch_on_that_symbol_and_its_fills(canary, bot_client, clock):
    config = strategy(wrong_leverage={"symbol": "BTCUSDT", "leverage": 20})
    async with trading(bot_client, clock, config), observing(canary, config, clock=clock) as run:
        record = run.record
        await run.until(lambda: bool(record.values("fill_leverage_mismatch", symbol="BTCUSDT")), timeout=20)
    assert set(record.values("leverage_mismatch", symbol="BTCUSDT")) == {1.0}
    assert set(record.values("leverage_applied", symbol="BTCUSDT")) == {20.0}
    assert set(record.values("leverage_mismatch", symbol="ETHUSDT")) == {0.0}
    assert set(record.values("fill_leverage_mismatch", symbol="BTCUSDT")) == {1.0}
    assert set(record.values("fill_leverage_mismatch", symbol="ETHUSDT")) <= {0.0}


async def test_oversized_orders_show_as_fills_above_their_buckets_limit(canary, bot_client, clock):
    config = strategy(MAJORS_ONLY, oversized_orders=3)  # 3 x half the bucket: 1.5 x its limit
    async with trading(bot_client, clock, config), observing(canary, config, clock=clock) as run:
        record = run.record
        await run.until(lambda: bool(record.values("fill_notional_ratio")), timeout=20)
    assert max(record.values("fill_notional_ratio", bucket="majors")) > 1.02
