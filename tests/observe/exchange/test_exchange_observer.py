"""ExchangeObserver on the simulator: what the exchange itself says about the account, and when
it cannot say anything (nodata, never a silent pass)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from controller.exchange.weights import WeightBudget
from controller.sim.funding import INTERVAL as FUNDING_INTERVAL
from tests.support.bot import CAPITAL, STRATEGY, strategy
from tests.support.clients import binance_client
from tests.support.exchange_observer import observing


def requests_to(sim, method: str, path: str) -> int:
    return sum(1 for r in sim.requests if r.method == method and r.path == path)


async def market(client, side: str, qty: str, symbol: str = "BTCUSDT", **more) -> dict:
    return await client.new_order(symbol=symbol, side=side, order_type="MARKET", quantity=Decimal(qty), **more)


async def test_leverage_answered_as_applied_but_not_applied_is_caught_by_the_snapshot(sim, canary, clock):
    sim.faults.ignore_leverage("canary", "ETHUSDT")  # answers "leverage 5", keeps the default 20
    async with observing(canary, strategy(), clock=clock) as run:
        record = run.record
        assert record.last("leverage_mismatch", symbol="BTCUSDT") == 1  # both start at the default 20
        assert await canary.set_leverage("BTCUSDT", 5) == 5
        assert await canary.set_leverage("ETHUSDT", 5) == 5                 # the response hides it
        answered = clock.time()
        await run.until(lambda: record.last("leverage_mismatch", symbol="BTCUSDT") == 0)  # the stream's event
        await run.until(lambda: any(o.ts > answered for o in record.observations("leverage_applied", symbol="ETHUSDT")))
    assert record.last("leverage_applied", symbol="ETHUSDT") == 20
    assert record.last("leverage_mismatch", symbol="ETHUSDT") == 1
    assert 0.0 not in record.values("leverage_mismatch", symbol="ETHUSDT")
    assert record.last("margin_type_mismatch", symbol="SOLUSDT") == 1  # configured ISOLATED, still CROSSED
    assert record.last("margin_type_mismatch", symbol="BTCUSDT") == 0


async def test_a_position_shows_as_exposure_and_pnl_against_the_starting_capital(sim, canary, clock):
    async with observing(canary, strategy(), clock=clock) as run:
        record = run.record
        assert record.last("exposure_total_ratio") == 0 and record.last("pnl_ratio") == 0
        await market(canary, "BUY", "0.01")
        await run.until(lambda: (record.last("exposure_ratio", symbol="BTCUSDT") or 0) > 0)
        notional = Decimal("0.01") * sim.market.price("BTCUSDT")
        assert record.last("exposure_ratio", symbol="BTCUSDT") == pytest.approx(float(notional / CAPITAL), rel=1e-3)
        mark = record.mark()
        await run.until(lambda: bool(record.since(mark).values("pnl_ratio"))
                        and bool(record.since(mark).values("exposure_total_ratio")))
    later = record.since(mark)
    assert later.last("exposure_total_ratio") == pytest.approx(float(notional / CAPITAL), rel=1e-3)
    assert later.last("exposure_ratio", symbol="ETHUSDT") == 0
    assert -0.001 < later.last("pnl_ratio") < 0  # the taker fee and the spread, nothing else
    assert not record.values("capital_share")  # no master client: the firm's total is out of sight


async def test_a_hedged_symbols_long_and_short_both_count_in_its_exposure(sim, canary, clock):
    # Hedge mode: a LONG and a SHORT on one symbol are two positions; the exposure is their sum
    # (gross), whether the stream or the snapshot last valued them, never one side alone.
    async with binance_client(sim, "canary") as bot:
        await bot.futures_change_position_mode(dualSidePosition="true")
        async with observing(canary, strategy(), clock=clock) as run:
            record = run.record
            await bot.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                                           positionSide="LONG")
            await bot.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.020",
                                           positionSide="SHORT")
            held = record.mark()
            passes = run.observer.passes
            await run.until(lambda: run.observer.passes >= passes + 2
                            and bool(record.since(held).values("exposure_ratio", symbol="BTCUSDT")))
    gross = float(Decimal("0.030") * sim.market.price("BTCUSDT") / CAPITAL)
    after = record.since(held)
    assert after.values("exposure_ratio", symbol="BTCUSDT") == pytest.approx(
        [gross] * len(after.values("exposure_ratio", symbol="BTCUSDT")), rel=1e-3)
    assert after.last("exposure_total_ratio") == pytest.approx(gross, rel=1e-3)


async def test_funding_paid_on_a_position_shows_in_the_pnl_as_the_exchange_counts_it(sim, canary, clock):
    async with observing(canary, strategy(), clock=clock) as run:
        record = run.record
        await market(canary, "BUY", "0.01")
        await run.until(lambda: (record.last("exposure_ratio", symbol="BTCUSDT") or 0) > 0)
        before = await canary.account_snapshot()
        clock.advance((clock.time() // FUNDING_INTERVAL + 1) * FUNDING_INTERVAL - clock.time() + 1)  # 00, 08, 16 UTC
        await run.until(lambda: sim.accounts["canary"].wallet != before.total_wallet_balance)
        mark = record.mark()
        await run.until(lambda: bool(record.since(mark).values("pnl_ratio")))
        after = await canary.account_snapshot()
    # Prices stand still: the wallet moved by the funding fee alone, 0.01 x 62 000 x 0.01 %.
    fee = after.total_wallet_balance - before.total_wallet_balance
    assert fee == Decimal("-0.062")
    expected = (after.total_wallet_balance + after.total_unrealized_pnl - CAPITAL) / CAPITAL
    assert record.since(mark).last("pnl_ratio") == pytest.approx(float(expected), rel=1e-9)
    assert record.since(mark).last("pnl_ratio") == pytest.approx(
        float((before.total_wallet_balance + before.total_unrealized_pnl + fee - CAPITAL) / CAPITAL), rel=1e-9)


async def test_a_price_crash_on_a_leveraged_position_shows_margin_calls_and_the_margin_ratio(sim, canary, clock):
    config = strategy({**STRATEGY, "symbols": {**STRATEGY["symbols"], "BTCUSDT": {"leverage": 20}}})
    await canary.set_leverage("BTCUSDT", 20)
    async with observing(canary, config, clock=clock) as run:
        record = run.record
        await market(canary, "BUY", "0.54")  # 33 480 USDT on 1 800: nearly all of the margin
        await run.until(lambda: (record.last("exposure_ratio", symbol="BTCUSDT") or 0) > 18)
        assert record.last("margin_ratio") < 0.3 and not record.values("margin_calls")
        crashed = clock.time()
        sim.set_price("BTCUSDT", Decimal("58900"))  # -5 %: the loss eats the margin
        await run.until(lambda: bool(record.values("margin_calls")))
        await run.until(lambda: any(o.ts > crashed and o.value > 0.8 for o in record.observations("margin_ratio")))
    assert record.values("margin_calls") == [1.0]
    assert record.last("margin_ratio") > 0.8


async def test_the_canary_holds_one_point_eight_percent_of_the_firms_capital(sim, connect, canary, clock):
    master = await connect("master")
    async with observing(canary, strategy(), clock=clock, master=master) as run:
        await run.until(lambda: bool(run.record.values("capital_share")))
    assert run.record.last("capital_share") == pytest.approx(0.018)
    assert run.record.last("equity_share") == pytest.approx(0.018)


@pytest.mark.parametrize("book_depth", [Decimal(1000)])  # thin book: one market order, several trades
async def test_order_outcomes_count_each_order_once_by_how_it_ended(sim, canary, clock, book_depth):
    async with observing(canary, strategy(), clock=clock) as run:
        record = run.record
        assert {o.label("outcome"): o.value for o in record.observations("order_outcomes")} == {
            "filled": 0, "canceled": 0, "expired": 0, "rejected": 0, "unfilled": 0}
        await market(canary, "BUY", "0.05")  # 3 100 USDT over 1 000-USDT levels: 4 trades, 1 order
        price = sim.market.price("BTCUSDT") * Decimal("0.97")
        await canary.new_order(symbol="BTCUSDT", side="BUY", order_type="LIMIT", quantity=Decimal("0.002"),
                               price=price.quantize(Decimal("0.1")))
        await canary.cancel_all_orders("BTCUSDT")
        await market(canary, "SELL", "0.08", reduce_only=True)  # closes 0.05; the rest expires
        with pytest.raises(Exception, match="notional"):
            await market(canary, "BUY", "0.001")  # refused by REST: the stream never hears of it
        await run.until(lambda: record.last("order_outcomes", outcome="expired") == 1)
    assert record.last("order_outcomes", outcome="filled") == 1
    assert record.last("order_outcomes", outcome="canceled") == 1
    assert record.last("order_outcomes", outcome="rejected") == 0
    assert len(record.values("fill_notional_ratio", symbol="BTCUSDT")) >= 4  # one sample per trade


async def test_a_dropped_stream_is_reported_disconnected_and_unhealthy_until_it_is_back(sim, canary, clock):
    async with observing(canary, strategy(), clock=clock) as run:
        record = run.record
        mark = record.mark()
        assert sim.faults.drop_stream("canary") == 1
        await run.until(lambda: 0.0 in record.since(mark).values("stream_connected"))
        failed = record.since(mark).heartbeats(ok=False)
        assert failed and "disconnected" in failed[0].error
        await run.until(lambda: record.since(mark).values("stream_connected")[-1:] == [1.0])
        await run.until(lambda: record.heartbeats()[-1].ok)


@pytest.mark.parametrize("settings_latency", [0.0, 0.3])
async def test_a_stalled_stream_is_found_when_positions_move_without_it(sim, canary, clock, settings_latency):
    """The positions the check compares with must be read before the order: a pass that has only
    begun (its account read already reported, its positions not yet read) is not that baseline,
    and a slow settings read (the latency case) would let the order in before them."""
    async with observing(canary, strategy(), clock=clock) as run:
        sim.faults.add_latency(settings_latency, "/fapi/v1/symbolConfig")
        record = run.record
        passes = run.observer.passes
        # The pass after the next has begun: the next, begun after the connection, read its positions (passes
        # run one after another), so they are the baseline, the order not in them.
        await run.until(lambda: run.observer.passes > passes + 1)
        mark = record.mark()
        sim.faults.stall_stream("canary")  # connected, but delivers nothing
        await market(canary, "BUY", "0.002")
        await run.until(lambda: 0.0 in record.since(mark).values("stream_connected"))
        assert any("silent" in (h.error or "") for h in record.since(mark).heartbeats(ok=False))
        assert not record.heartbeats()[-1].ok
        resumed = record.mark()
        sim.faults.stall_stream("canary", False)  # the backlog arrives
        await run.until(lambda: record.since(resumed).values("stream_connected") == [1.0])
        await run.until(lambda: record.heartbeats()[-1].ok)


async def test_a_dead_api_is_reported_as_failed_snapshots_never_as_healthy(sim, canary, clock):
    async with observing(canary, strategy(), clock=clock) as run:
        record = run.record
        sim.faults.fail(None, rate=1.0)  # every REST call: HTTP 500
        mark = record.mark()
        await run.until(lambda: len(record.since(mark).heartbeats(ok=False)) >= 2)
        failing = record.mark()
        await run.until(lambda: len(record.since(failing).heartbeats(ok=False)) >= 2)
        assert not record.since(failing).heartbeats(ok=True)
        assert "snapshot failed" in record.since(failing).heartbeats(ok=False)[0].error
        sim.faults.clear()
        await run.until(lambda: record.heartbeats()[-1].ok)


async def test_a_pass_the_weight_budget_cannot_pay_for_is_not_sent_and_reported(sim, connect, clock):
    poor = await connect("canary", budget=WeightBudget(clock, share=0.1, limit=100))  # 10 a minute; a pass costs 15
    before = requests_to(sim, "GET", "/fapi/v1/symbolConfig")
    async with observing(poor, strategy(), clock=clock, connected=False) as run:
        await run.until(lambda: bool(run.record.heartbeats(ok=False)))
    assert "budget" in run.record.heartbeats(ok=False)[0].error
    assert not run.record.heartbeats(ok=True)
    assert requests_to(sim, "GET", "/fapi/v1/symbolConfig") == before


async def test_the_snapshot_costs_the_same_weight_whatever_the_number_of_symbols(canary, connect, clock):
    from controller.observe.exchange import ExchangeObserver

    many = {"symbols": {s: {"leverage": 2} for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT")},
            "buckets": {"all": {"allocation": "1", "symbols": ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT",
                                                                "XRPUSDT"]}},
            "sizing": {"order_fraction": "0.1"}}

    def cost(config, master=None) -> float:
        return ExchangeObserver(account="canary", client=canary, config=config, clock=clock, sink=lambda _: None,
                                master=master).weight_per_minute

    assert cost(strategy()) == cost(strategy(many)) == 40.0  # 20 per pass (the modes read: 5), every 30 s
    assert cost(strategy(), master=await connect("master")) == 50.0
