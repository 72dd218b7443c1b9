"""The reference bot trading on the simulator, watched by ExchangeObserver: a healthy release
passes the exchange-side checks of stages C and D, and each defect shows where it should."""

from __future__ import annotations

import pytest

from tests.support.bot import MAJORS_ONLY, strategy, trading
from tests.support.exchange_observer import observing


@pytest.fixture
def volatility() -> float:
    return 1.0  # the bot's limit orders fill as prices move


@pytest.fixture
async def bot_client(bot_exchange):
    return await bot_exchange("canary")


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
