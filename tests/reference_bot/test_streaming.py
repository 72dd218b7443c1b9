"""The bot's streaming mode: mark prices from `<symbol>@markPrice@1s` through python-binance, not polled."""

from __future__ import annotations

from controller.config.strategy import StrategyConfig
from tests.support.bot import STRATEGY, running
from tests.support.simulator import requests_to

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
