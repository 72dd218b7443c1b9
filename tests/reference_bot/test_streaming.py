"""The bot's streaming mode: mark prices from `<symbol>@markPrice@1s` through python-binance, not polled."""

from __future__ import annotations

import asyncio
import time

from controller.config.strategy import StrategyConfig
from reference_bot.prices import MarkPriceFeed
from tests.support.bot import IN_PROCESS_SIM, STRATEGY, running
from tests.support.clients import bot_account
from tests.support.simulator import make_sim, requests_to

MARK_PRICES = ("GET", "/fapi/v1/premiumIndex")


async def test_a_streaming_bot_trades_on_streamed_prices_and_never_polls_them(sim, client, clock):
    config = StrategyConfig.model_validate({**STRATEGY, "bot": {"stream_prices": True}})
    async with running(client, clock, config) as run:
        await run.until(lambda: run.value("strategy_orders_total", outcome="filled") >= 3)
        assert sim.market_streams.subscribers("btcusdt@markPrice@1s") == 1
        streamed = run.bot.prices.fresh()
    assert streamed is not None and set(streamed) == set(STRATEGY["symbols"])
    assert requests_to(sim, *MARK_PRICES) == 0
    assert run.value("strategy_orders_total", outcome="error") == 0


async def test_a_polling_bot_reads_prices_over_rest(sim, client, clock):
    config = StrategyConfig.model_validate({**STRATEGY, "bot": {"stream_prices": False}})
    async with running(client, clock, config) as run:
        await run.until(lambda: run.bot.iterations >= 3)
        assert run.bot.prices is None
    assert requests_to(sim, *MARK_PRICES) >= 3
    assert sim.market_streams.subscribers("btcusdt@markPrice@1s") == 0


async def test_the_price_feed_stops_at_once_though_its_stream_is_quiet(clock):
    # python-binance's own exit waits for its read loop's next message or its 10 s receive
    # timeout; here no message comes after the first (the simulator ticks once an hour).
    async with make_sim(clock=clock, **{**IN_PROCESS_SIM, "tick_seconds": 3600.0}) as sim:
        exchange = bot_account(sim, clock)
        feed = MarkPriceFeed(exchange, STRATEGY["symbols"])
        listening = asyncio.create_task(feed.run())
        try:
            await sim.market_streams.subscribed("btcusdt@markPrice@1s")
            sim.tick()
            async with asyncio.timeout(5):
                await feed.wait_fresh()
            started = time.monotonic()
            listening.cancel()
            await asyncio.wait({listening})
            stopped_after = time.monotonic() - started
        finally:
            listening.cancel()
            await exchange.close()
    assert stopped_after < 2.0  # was 10 s: python-binance's receive timeout
    assert sim.market_streams.subscribers("btcusdt@markPrice@1s") == 0
