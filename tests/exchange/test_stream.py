"""The user-data stream: typed events, reconnects with reconciliation, nothing missed or doubled."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest

from controller.exchange.client import RetryPolicy
from controller.exchange.events import Fill, LeverageChanged, OrderUpdate, StreamStatus
from controller.exchange.stream import StreamSettings, UserStream
from controller.exchange.weights import OBSERVE, WeightBudget
from controller.logs import fields_of
from tests.support.checkout import REPO
from tests.support.clients import exchange_clients
from tests.support.event_log import EventLog
from tests.support.simulator import make_sim, requests_to

SYMBOLS = ("BTCUSDT", "ETHUSDT")


@asynccontextmanager
async def running(client, *, settings: StreamSettings | None = None):
    log = EventLog()
    stream = UserStream(client, SYMBOLS, log, settings=settings or StreamSettings(), since=client.clock.time())
    task = asyncio.create_task(stream.run(), name="test-user-stream")
    try:
        await log.wait_for(lambda events: connections(events) >= 1)
        yield stream, log
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def connections(events) -> int:
    return sum(1 for e in events if isinstance(e, StreamStatus) and e.connected)


def fills(events) -> list[Fill]:
    return [e for e in events if isinstance(e, Fill)]


async def buy(client, qty="0.002", symbol="BTCUSDT"):
    return await client.new_order(symbol=symbol, side="BUY", order_type="MARKET", quantity=Decimal(qty))


async def test_leverage_changes_and_fills_arrive_as_typed_events(canary):
    async with running(canary) as (stream, log):
        await canary.set_leverage("BTCUSDT", 8)
        order = await buy(canary)
        await log.wait_for(lambda events: fills(events) and any(
            isinstance(e, LeverageChanged) and e.leverage == 8 for e in events))
        fill = fills(log.events)[0]
        assert fill.symbol == "BTCUSDT" and fill.quantity == Decimal("0.002") and fill.order_id == order["orderId"]
        assert fill.ts_event > 0 and fill.ts_init >= fill.ts_event - 1
        statuses = {e.status for e in log.of(OrderUpdate) if e.order_id == order["orderId"]}
        assert "FILLED" in statuses


async def test_a_fill_missed_while_disconnected_is_recovered_by_reconciliation_once(sim, canary):
    async with running(canary) as (stream, log):
        await buy(canary)
        await log.wait_for(lambda events: len(fills(events)) == 1)
        sim.faults.stall_stream("canary")        # the socket stays open but delivers nothing
        await buy(canary)                         # this fill is pushed into the stalled socket
        sim.faults.drop_stream("canary")          # then the connection dies
        await log.wait_for(lambda events: connections(events) == 2 and len(fills(events)) == 2)
        sim.faults.stall_stream("canary", False)
        rest = await canary.user_trades("BTCUSDT")
        assert sorted(f.trade_id for f in fills(log.events)) == sorted(t.trade_id for t in rest)
        assert stream.stats.reconciled_fills == 1


async def test_an_expired_listen_key_leads_to_a_new_connection(sim, canary):
    async with running(canary) as (stream, log):
        keys_before = requests_to(sim, "POST", "/fapi/v1/listenKey")
        assert sim.faults.expire_listen_key("canary")
        await log.wait_for(lambda events: connections(events) == 2)
        assert requests_to(sim, "POST", "/fapi/v1/listenKey") == keys_before + 1
        await buy(canary)
        await log.wait_for(lambda events: len(fills(events)) == 1)


async def test_duplicated_events_are_dropped_and_counted(sim, canary):
    sim.faults.duplicate_events("canary", copies=2)
    async with running(canary) as (stream, log):
        await buy(canary)
        await buy(canary, qty="0.003")
        await log.wait_for(lambda events: len(fills(events)) == 2 and stream.stats.duplicates_dropped >= 4)
        assert len({f.trade_id for f in fills(log.events)}) == 2


async def test_the_listen_key_is_kept_alive_on_the_streams_clock(sim, clock, canary):
    async with running(canary, settings=StreamSettings(keepalive_every=60, reconcile_every=3600)) as (stream, log):
        clock.advance(61)
        async with asyncio.timeout(10):
            while requests_to(sim, "PUT", "/fapi/v1/listenKey") == 0:
                await clock.sleep(0.05)
        assert connections(log.events) == 1


async def test_the_connection_is_rotated_before_the_24_hour_limit(clock, canary):
    settings = StreamSettings(rotate_after=120, keepalive_every=3600, reconcile_every=3600)
    async with running(canary, settings=settings) as (stream, log):
        clock.advance(121)
        await log.wait_for(lambda events: connections(events) == 2)
        assert any(isinstance(e, StreamStatus) and not e.connected for e in log.events)


async def test_a_stalled_stream_is_caught_up_by_the_periodic_reconciliation(sim, clock, canary):
    settings = StreamSettings(reconcile_every=30, keepalive_every=3600)
    async with running(canary, settings=settings) as (stream, log):
        sim.faults.stall_stream("canary")
        await buy(canary)
        clock.advance(31)
        await log.wait_for(lambda events: len(fills(events)) == 1)
        assert stream.stats.reconciled_fills == 1 and connections(log.events) == 1


async def test_a_payload_that_does_not_parse_is_counted_and_the_stream_goes_on(canary, caplog):
    log = EventLog()
    stream = UserStream(canary, SYMBOLS, log)
    assert stream.handle_text("not json") is None
    assert stream.handle_text('{"e": "ORDER_TRADE_UPDATE", "E": 1, "o": {"s": "BTCUSDT"}}') is None
    assert stream.stats.parse_failures == 2
    assert "not json" in [fields_of(r).get("raw") for r in caplog.records]
    good = ('{"e":"ACCOUNT_CONFIG_UPDATE","E":1700000000000,"T":1700000000000,'
            '"ac":{"s":"BTCUSDT","l":12}}')
    assert stream.handle_text(good) == "ACCOUNT_CONFIG_UPDATE"
    assert log.of(LeverageChanged)[0].leverage == 12 and log.of(LeverageChanged)[0].ts_event == 1_700_000_000


TRADE = {"e": "ORDER_TRADE_UPDATE", "E": 1700000000000, "T": 1700000000000, "o": {
    "s": "BTCUSDT", "c": "bot-1", "S": "BUY", "o": "MARKET", "f": "GTC", "q": "0.010", "p": "0", "ap": "50000",
    "x": "TRADE", "X": "FILLED", "i": 42, "l": "0.010", "z": "0.010", "L": "50000", "N": "USDT", "n": "0.2",
    "T": 1700000000000, "t": 7, "m": False, "R": False, "rp": "0"}}


@pytest.mark.parametrize(("field", "value"), [("i", "42"), ("t", "7"), ("R", "false"), ("q", None), ("L", "NaN"),
                                              ("s", 1), ("t", None)])
async def test_a_field_of_the_wrong_type_is_a_parse_failure_not_a_guess(canary, field, value):
    """Binance sends ids as integers, flags as booleans and money as finite decimal text: an order id
    sent as text is no Binance payload (it is refused, not converted), nor a trade without its id."""
    log = EventLog()
    stream = UserStream(canary, SYMBOLS, log)
    assert stream.handle_text(json.dumps(TRADE)) == "ORDER_TRADE_UPDATE"
    broken = {**TRADE, "E": TRADE["E"] + 1, "o": {**TRADE["o"], field: value}}
    assert stream.handle_text(json.dumps(broken)) is None
    assert stream.handle_text(json.dumps(broken)) == "ORDER_TRADE_UPDATE"  # the same message again: a duplicate
    assert (stream.stats.parse_failures, stream.stats.duplicates_dropped) == (1, 1)
    assert [type(e) for e in log.events] == [OrderUpdate, Fill]


async def test_a_kind_the_controller_does_not_use_gives_no_event_and_no_failure(canary):
    log = EventLog()
    stream = UserStream(canary, SYMBOLS, log)
    lite = {"e": "TRADE_LITE", "E": 1700000000000, "T": 1700000000000, "s": "BTCUSDT", "q": "0.010", "p": "50000"}
    assert stream.handle_text(json.dumps(lite)) == "TRADE_LITE"
    assert stream.stats.parse_failures == 0 and log.events == []


async def test_events_delivered_out_of_order_still_give_each_fill_once(sim, canary):
    sim.faults.reorder_events("canary")
    async with running(canary) as (stream, log):
        order = await buy(canary)
        await log.wait_for(lambda events: len(fills(events)) == 1 and any(
            isinstance(e, OrderUpdate) and e.status == "NEW" and e.order_id == order["orderId"] for e in events))
        updates = [e.status for e in log.of(OrderUpdate) if e.order_id == order["orderId"]]
        assert updates.index("FILLED") < updates.index("NEW")  # delivered reversed, passed on as delivered
        assert [f.order_id for f in fills(log.events)] == [order["orderId"]]


async def test_the_periodic_check_costs_the_same_weight_for_every_symbol_count(sim, canary):
    every_symbol = sorted(await canary.symbol_filters())
    assert len(every_symbol) >= 15
    stream = UserStream(canary, every_symbol, EventLog())
    await stream.reconcile(full=True)          # after a connect: every symbol's trades
    spent = canary.budget.total_spent
    await stream.reconcile(full=False)         # nothing happened: leverage + positions only
    assert canary.budget.total_spent - spent == 10
    await buy(canary)                           # a fill the stream never delivered
    spent = canary.budget.total_spent
    await stream.reconcile(full=False)
    assert canary.budget.total_spent - spent == 15  # + that one symbol's trades
    assert stream.stats.reconciled_fills == 1


async def test_connections_the_exchange_ends_at_once_back_off_instead_of_storming(sim, clock, canary):
    async with running(canary, settings=StreamSettings(backoff_initial=5.0, backoff_max=60.0)) as (stream, log):
        keys = requests_to(sim, "POST", "/fapi/v1/listenKey")
        assert sim.faults.expire_listen_key("canary")       # ended seconds after it opened
        await log.wait_for(lambda events: any(isinstance(e, StreamStatus) and not e.connected for e in events))
        assert stream.stats.reconnect_at is not None and stream.stats.reconnect_at - clock.time() >= 2.4
        assert requests_to(sim, "POST", "/fapi/v1/listenKey") == keys
        clock.advance(5.0)
        await log.wait_for(lambda events: connections(events) == 2)


def wide_market():
    """bench/wide_market.py (the benchmarks' market of any symbol count), loaded by its path."""
    spec = importlib.util.spec_from_file_location("wide_market", REPO / "bench" / "wide_market.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_a_stream_of_100_symbols_connects_and_reconnects_within_the_observe_budget(clock):
    """A (re)connect reads trades only for symbols that traded in the gap: with 100 symbols it
    fits an observing budget of 240 a minute (the tightest a daemon has had as its default: 75 %
    of the IP's 2400, 65 % kept for acting), instead of failing on it and reconnecting forever."""
    symbols = tuple(s.symbol for s in wide_market().symbol_specs(100))  # 0, 21, 42...: BTC's rules
    async with make_sim(clock=clock, symbols=wide_market().symbol_specs(100)) as sim:
        async with exchange_clients(sim, clock, retry=RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.05,
                                                                     request_timeout=5)) as connect:
            budget = WeightBudget(clock, share=0.75, act_reserve=0.65)
            observer = await connect("canary", budget=budget.for_purpose(OBSERVE))
            trader = await connect("canary")
            await buy(trader, symbol=symbols[84])             # history before the stream starts
            clock.advance(1)
            log = EventLog()
            stream = UserStream(observer, symbols, log, since=clock.time())
            task = asyncio.create_task(stream.run(), name="test-wide-user-stream")
            try:
                await log.wait_for(lambda events: connections(events) >= 1, timeout=15)
                assert requests_to(sim, "POST", "/fapi/v1/listenKey") == 1 and stream.stats.disconnects == 0
                await buy(trader, symbol=symbols[21])
                await log.wait_for(lambda events: len(fills(events)) == 1)
                sim.faults.stall_stream("canary")
                await buy(trader, symbol=symbols[42])           # missed: pushed into the stalled socket
                trades_before = requests_to(sim, "GET", "/fapi/v1/userTrades")
                sim.faults.drop_stream("canary")
                await log.wait_for(lambda events: connections(events) == 2 and len(fills(events)) == 2, timeout=15)
                sim.faults.stall_stream("canary", False)
                assert requests_to(sim, "POST", "/fapi/v1/listenKey") == 2
                assert [f.symbol for f in fills(log.events)] == [symbols[21], symbols[42]]
                assert stream.stats.reconciled_fills == 1
                # the gap's traded symbols only, not 100 reads
                assert requests_to(sim, "GET", "/fapi/v1/userTrades") - trades_before <= 2
            finally:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task


async def test_a_reconcile_the_budget_cannot_pay_for_waits_for_it_on_the_same_connection(sim, clock, connect):
    budget = WeightBudget(clock, share=1.0, limit=100)
    client = await connect("canary", budget=budget)
    budget.reserve(90, what="what others spent this minute")  # the reconcile's second read does not fit
    log = EventLog()
    stream = UserStream(client, SYMBOLS, log, since=clock.time())
    task = asyncio.create_task(stream.run(), name="test-user-stream-budget")
    try:
        async with asyncio.timeout(10):
            while stream.stats.budget_waits == 0:
                await clock.sleep(0.01)
        assert connections(log.events) == 0                      # fail closed: not connected until reconciled
        clock.advance(60)                                        # the budget's next minute
        await log.wait_for(lambda events: connections(events) == 1)
        assert requests_to(sim, "POST", "/fapi/v1/listenKey") == 1  # the same connection, not a new one
        assert stream.stats.disconnects == 0 and stream.stats.budget_wait_s > 0
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
