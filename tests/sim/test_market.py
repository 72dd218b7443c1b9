"""The synthetic market: seeded price walk on the clock, replayed prices, brackets."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from controller.sim.market import SYMBOLS, Market, PriceReplay
from tests.support.clients import binance_client
from tests.support.clocks import make_clock
from tests.support.simulator import make_sim

D = Decimal


def test_the_walk_is_a_function_of_the_seed():
    a, b, c = (Market(seed=s, start=0.0) for s in (1, 1, 2))
    for m in (a, b, c):
        m.advance(3600.0)
    assert a.price("BTCUSDT") == b.price("BTCUSDT") != c.price("BTCUSDT")


def test_prices_stay_on_the_tick_and_move_with_time():
    market = Market(seed=5, start=0.0)
    before = market.price("ETHUSDT")
    market.advance(48 * 3600.0)  # one exact step, however long the jump
    after = market.price("ETHUSDT")
    assert after != before
    assert after % D("0.01") == 0
    assert D("0.5") < after / before < D("2")


def test_zero_volatility_holds_prices():
    market = Market(seed=5, start=0.0, volatility=0)
    market.advance(3600.0)
    assert market.price("BTCUSDT") == D("62000.00")


def test_replayed_prices_follow_the_csv(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("timestamp,symbol,price\n1000,BTCUSDT,50000\n61000,BTCUSDT,51000.5\n")
    market = Market(seed=0, start=0.0, replay=PriceReplay.from_csv(path))

    prices = []
    for t in (0.5, 30.0, 61.0, 500.0):
        market.advance(t)
        prices.append(market.price("BTCUSDT"))

    assert prices == [D("50000"), D("50000"), D("51000.5"), D("51000.5")]


def test_about_twenty_symbols_with_consistent_brackets():
    assert len(SYMBOLS) >= 20
    for spec in SYMBOLS:
        floors = [b.floor for b in spec.brackets]
        assert floors == [D(0)] + [b.cap for b in spec.brackets[:-1]]
        for lower, upper in zip(spec.brackets, spec.brackets[1:], strict=False):
            # maintenance margin is continuous where one tier ends and the next begins
            assert upper.floor * lower.mmr - lower.cum == upper.floor * upper.mmr - upper.cum
            assert upper.leverage < lower.leverage


async def test_a_simulator_lists_the_symbols_it_is_given():
    extra = replace(SYMBOLS[0], symbol="BTC2USDT", base="BTC2")
    async with make_sim(clock=make_clock(speed=1.0), seed=3, symbols=(SYMBOLS[0], extra)) as simulator:
        async with binance_client(simulator) as client:
            listed = [s["symbol"] for s in (await client.futures_exchange_info())["symbols"]]
    assert listed == ["BTCUSDT", "BTC2USDT"]
