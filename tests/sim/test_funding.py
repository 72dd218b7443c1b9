"""Funding: every 8 h of clock, positions pay or receive notional x rate; the rate follows the
price path's premium, clamped and capped as Binance does; REST and the user stream show it."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from controller.sim.accounts import AccountBook
from controller.sim.funding import INTERVAL, FundingBook
from controller.sim.ledger import Ledger
from controller.sim.market import Market
from tests.support.clients import sync_time
from tests.support.user_stream import user_stream

EIGHT_AM = int(datetime(2026, 1, 1, 8, tzinfo=UTC).timestamp() * 1000)


async def test_crossing_a_funding_time_charges_longs_and_pays_shorts(sim, clock, canary, master):
    await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    await master.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.100")
    before = {name: sim.accounts[name].wallet for name in ("canary", "master")}
    async with user_stream(sim, canary) as stream:
        clock.advance(EIGHT_AM / 1000 - clock.time() + 1)  # past 08:00 UTC, the first funding time
        update = await stream.next_of("ACCOUNT_UPDATE")
    # Prices stand still, so the premium is nil and the rate is the interest rate: 0.01 %.
    assert update["a"]["m"] == "FUNDING_FEE" and update["T"] == EIGHT_AM
    assert update["a"]["B"][0]["bc"] == "-0.06200000" and update["a"]["P"] == []  # 0.01 x 62000 x 0.0001
    assert sim.accounts["canary"].wallet == before["canary"] - Decimal("0.062")
    assert sim.accounts["master"].wallet == before["master"] + Decimal("0.03")  # 0.1 x 3000 x 0.0001
    await sync_time(canary)
    rows = await canary.futures_income_history(incomeType="FUNDING_FEE")
    assert [(r["symbol"], r["income"], r["time"], r["tradeId"]) for r in rows] == [
        ("BTCUSDT", "-0.06200000", EIGHT_AM, "")]
    rates = await canary.futures_funding_rate(symbol="BTCUSDT")
    assert [(r["fundingRate"], r["fundingTime"]) for r in rates] == [("0.00010000", EIGHT_AM)]
    index = await canary.futures_mark_price(symbol="BTCUSDT")
    assert index["nextFundingTime"] == EIGHT_AM + int(INTERVAL * 1000) and index["lastFundingRate"] == "0.00010000"


def test_the_rate_follows_the_premium_clamped_and_capped():
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    market = Market(seed=1, start=start, volatility=0)
    funding = FundingBook(market, AccountBook(), Ledger(market, AccountBook(), lambda: 0), start=start)
    market.set_price("BTCUSDT", Decimal("68200"))   # +10 %: trades above its lagging index
    market.set_price("ETHUSDT", Decimal("2700"))    # -10 %: below it
    market.set_price("XRPUSDT", Decimal("0.8250"))  # +50 %
    funding.advance(start + INTERVAL)
    rates = {r.symbol: r.rate for r in funding.history}
    # P = 10/110 x (600 s / 8 h) = 0.00189; F = P + clamp(0.0001 - P, ±0.0005) = P - 0.0005.
    assert rates["BTCUSDT"] == Decimal("0.00139394")
    assert rates["ETHUSDT"] == Decimal("-0.00181481")  # P = -10/90 x 600/28800; F = P + 0.0005
    assert rates["XRPUSDT"] == Decimal("0.00375000")   # capped: 75 % of the first tier's 0.5 %
    assert rates["SOLUSDT"] == Decimal("0.00010000")   # no premium: the interest rate
    assert funding.next_time == start + 2 * INTERVAL
