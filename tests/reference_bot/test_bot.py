"""The bot in process, on the simulator: a healthy release, and each deliberate defect moving its metric."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from reference_bot import DeliberateDefect
from tests.support.bot import CAPITAL, histogram_quantile, observations, running, strategy

LATENCY = "strategy_signal_latency_seconds"


def filled(run) -> float:
    return run.value("strategy_orders_total", outcome="filled")


def canary_orders(sim) -> list:
    return [o for o in sim.engine.orders.values() if o.account == "canary"]


async def test_a_healthy_release_sets_its_leverage_and_trades_within_its_buckets(sim, client, clock):
    config = strategy()
    highest = dict.fromkeys(config.buckets, 0.0)

    def traded_a_while() -> bool:  # checked at every change of the bot's state
        for bucket in highest:
            highest[bucket] = max(highest[bucket], run.value("strategy_bucket_usage_ratio", bucket=bucket))
        return filled(run) >= 5 and observations(run.bot, LATENCY) >= 10

    async with running(client, clock, config) as run:
        await run.until(traded_a_while)
    canary = sim.accounts["canary"]
    for symbol, settings in config.symbols.items():
        assert canary.setting(symbol).leverage == settings.leverage
        assert run.value("strategy_leverage_applied", symbol=symbol) == settings.leverage
        assert run.value("strategy_leverage_configured", symbol=symbol) == settings.leverage
    assert run.value("strategy_leverage_mismatch_total") == 0
    for bucket, spec in config.buckets.items():
        assert run.value("strategy_bucket_allocation_ratio", bucket=bucket) == float(spec.allocation)
        assert highest[bucket] <= float(spec.allocation) * 1.02
    assert highest["majors"] > 0 and run.value("strategy_bucket_locks_total", bucket="majors") >= 1
    entries = [o for o in canary_orders(sim) if not o.reduce_only]
    assert entries and all(o.orig_qty * o.price <= config.order_notional(o.symbol, CAPITAL) * Decimal("1.01")
                           for o in entries)
    assert run.value("strategy_orders_total", outcome="rejected") == 0
    assert run.value("strategy_orders_total", outcome="error") == 0
    assert histogram_quantile(0.5, run.bot, LATENCY) < 0.15
    assert histogram_quantile(0.95, run.bot, LATENCY) < 0.4
    assert run.value("strategy_margin_fraction_updated_timestamp_seconds", bucket="majors") > 0


async def test_stopping_cancels_every_open_order_and_counts_them(sim, client, clock):
    canary = sim.accounts["canary"]
    async with running(client, clock, strategy()) as run:
        await run.until(lambda: len(sim.engine.open_orders(canary)) >= 2)
        canceled_before = run.value("strategy_orders_total", outcome="canceled")
        await run.stop()
    assert sim.engine.open_orders(canary) == []
    assert run.value("strategy_orders_total", outcome="canceled") >= canceled_before + 1
    assert run.bot.ledger.orders == {}
    assert run.value("strategy_order_queue_depth") == 0


async def test_a_wrong_leverage_on_one_symbol_shows_as_a_mismatch_there(sim, client, clock):
    config = strategy(wrong_leverage={"symbol": "BTCUSDT", "leverage": 20})
    async with running(client, clock, config) as run:
        await run.until(lambda: run.value("strategy_leverage_mismatch_total") >= 2)  # start-up and stream reads
        assert sim.accounts["canary"].setting("BTCUSDT").leverage == 20
        assert run.value("strategy_leverage_configured", symbol="BTCUSDT") == 5
        assert run.value("strategy_leverage_applied", symbol="BTCUSDT") == 20
        assert run.value("strategy_leverage_applied", symbol="ETHUSDT") == run.value(
            "strategy_leverage_configured", symbol="ETHUSDT")


async def test_leverage_the_exchange_silently_did_not_apply_is_a_mismatch(sim, client, clock):
    sim.faults.ignore_leverage("canary", "ETHUSDT")  # answers "leverage 5", keeps the default 20
    async with running(client, clock, strategy()) as run:
        await run.until(lambda: run.value("strategy_leverage_mismatch_total") >= 1)
        assert run.value("strategy_leverage_applied", symbol="ETHUSDT") != 5
        assert run.value("strategy_leverage_configured", symbol="ETHUSDT") == 5


async def test_oversized_orders_push_bucket_usage_above_its_allocation(sim, client, clock):
    majors_only = {"symbols": {"BTCUSDT": {"leverage": 5}, "ETHUSDT": {"leverage": 5}},
                   "buckets": {"majors": {"allocation": "0.5", "symbols": ["BTCUSDT", "ETHUSDT"]}},
                   "sizing": {"order_fraction": "0.25"}}
    config = strategy(majors_only, oversized_orders=3)
    async with running(client, clock, config) as run:
        await run.until(lambda: run.value("strategy_bucket_usage_ratio", bucket="majors") > 0.5 * 1.02)
        assert run.value("strategy_bucket_allocation_ratio", bucket="majors") == 0.5
    sent = [o for o in canary_orders(sim) if not o.reduce_only]
    assert any(o.orig_qty * o.price > config.order_notional(o.symbol, CAPITAL) * 2 for o in sent)


async def test_a_slow_signal_path_shows_in_the_latency_histogram(sim, client, clock):
    async with running(client, clock, strategy(slow_signal_seconds="0.3")) as run:
        await run.until(lambda: observations(run.bot, LATENCY) >= 3)
        assert histogram_quantile(0.5, run.bot, LATENCY) > 0.15
        assert run.value("strategy_order_queue_latency_seconds_count") >= 3


async def test_an_unhandled_exception_ends_the_run_with_that_exception(sim, client, clock):
    told: list[tuple[BaseException, bool]] = []
    async with running(client, clock, strategy(unhandled_exception_after_seconds="0.3")) as run:
        run.bot.on_crash = lambda error: told.append((error, run.task.done()))
        with pytest.raises(DeliberateDefect, match="unhandled exception in the trading task") as ended:
            await asyncio.wait_for(run.task, timeout=10)
    assert run.bot.iterations >= 1  # it traded before it crashed
    # Told at the crash, while its other tasks were still being cancelled (an embedding program
    # takes its /metrics down then, as a dead process's port closes).
    assert told == [(ended.value, False)]


async def test_a_rejected_orders_burst_is_counted_as_rejected(sim, client, clock):
    async with running(client, clock, strategy(rejected_orders_burst=6)) as run:
        await run.until(lambda: run.value("strategy_orders_total", outcome="rejected") >= 6)
    refused = [r for r in sim.requests if r.path == "/fapi/v1/order" and r.method == "POST" and r.code == -4164]
    assert len(refused) >= 6  # below the minimum notional, refused by the exchange itself


async def test_fills_the_stream_did_not_deliver_are_found_by_reconciliation(sim, client, clock):
    async with running(client, clock, strategy()) as run:
        await run.until(lambda: run.bot.iterations >= 1)
        sim.faults.stall_stream("canary")
        stalled_at, before = len(sim.requests), filled(run)
        await run.until(lambda: filled(run) >= before + 3)
    assert filled(run) >= before + 3
    # Reconciliation asks the exchange for each order that left the open list unreported.
    looked_up = [r for r in list(sim.requests)[stalled_at:] if (r.method, r.path) == ("GET", "/fapi/v1/order")]
    assert len(looked_up) >= 3


async def test_margin_fractions_go_stale_while_the_exchange_cannot_be_read(sim, client, clock):
    async with running(client, clock, strategy()) as run:
        updated = lambda: run.value("strategy_margin_fraction_updated_timestamp_seconds", bucket="alts")  # noqa: E731
        first = updated()
        await run.until(lambda: updated() > first)
        sim.faults.fail("GET /fapi/v3/positionRisk", rate=1.0, code=-1001, status=500)
        frozen = updated()
        iterations = run.bot.iterations
        await run.until(lambda: run.bot.iterations >= iterations + 15)  # 1.5 s: three reconcile periods
        assert updated() <= frozen + 0.5 and clock.time() - updated() > 1.0


async def test_orders_decided_but_not_yet_sent_are_dropped_at_stop_without_an_outcome(sim, client, clock):
    async with running(client, clock, strategy(slow_signal_seconds="5")) as run:
        await run.until(lambda: len(run.bot.ledger.orders) >= 1)  # decided, held by the slow signal path
        await run.stop()
    assert run.bot.ledger.orders == {}
    assert sum(run.value("strategy_orders_total", outcome=o) for o in ("filled", "rejected", "error")) == 0
    assert [o for o in sim.engine.orders.values() if o.account == "canary"] == []


async def test_two_symbols_of_one_bucket_never_take_the_same_room_in_one_iteration(client, clock):
    config = strategy({"symbols": {"BTCUSDT": {"leverage": 5}, "ETHUSDT": {"leverage": 5}},
                       "buckets": {"majors": {"allocation": "0.5", "symbols": ["BTCUSDT", "ETHUSDT"]}},
                       "sizing": {"order_fraction": "0.6", "max_open_orders_per_symbol": 1}})
    highest = []

    def committed_until_both_traded():
        highest.append(run.bot.ledger.usage("majors"))
        return run.bot.iterations >= 40

    async with running(client, clock, config) as run:
        await run.until(committed_until_both_traded)
    # One entry is 0.6 of the bucket's room: a second, in the same iteration, must not fit.
    assert max(highest) > Decimal("0.25")  # it did trade
    assert max(highest) <= Decimal("0.5") * Decimal("1.02")
