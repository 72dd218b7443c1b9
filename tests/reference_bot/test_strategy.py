"""The strategy's pure decisions: seeded directions, sizing from the bucket, and what each state asks for."""

from __future__ import annotations

from decimal import Decimal

from reference_bot.ledger import ENTRY, EXIT, TrackedOrder
from reference_bot.payloads import TradingRules
from reference_bot.strategy import (
    CancelOrders,
    Direction,
    Entry,
    PlaceOrder,
    Signal,
    SymbolView,
    decide,
    size_entry,
)
from tests.support.bot import bot_strategy, strategy

D = Decimal
BTC = TradingRules("BTCUSDT", tick_size=D("0.10"), step_size=D("0.001"), min_qty=D("0.001"), min_notional=D("100"))
ENTRY_ORDER = Entry(quantity=D("0.02"), price=D("62000.0"), margin=D("250"))


def order(side="BUY", *, purpose=ENTRY, acked=True, created_at=0.0, cancel_requested=False) -> TrackedOrder:
    return TrackedOrder("bot-x-1", "BTCUSDT", side, D("0.02"), D("62000"), purpose, created_at,
                        order_id=7 if acked else None, cancel_requested=cancel_requested)


def view(position="0", orders=(), **kw) -> SymbolView:
    return SymbolView("BTCUSDT", D(position), D("62000"), list(orders), **kw)


def decide_now(direction, symbol_view, *, entry=ENTRY_ORDER, room=D("1000"), now=1.0):
    return decide(direction, symbol_view, entry, room=room, now=now, ttl=5.0, max_open=2)


def test_the_same_seed_gives_the_same_directions():
    first, second = Signal(7, ["BTCUSDT", "ETHUSDT"]), Signal(7, ["BTCUSDT", "ETHUSDT"])
    run = [first.next("BTCUSDT") for _ in range(50)]
    assert run == [second.next("BTCUSDT") for _ in range(50)]
    assert set(run) == {Direction.LONG, Direction.FLAT, Direction.SHORT}  # it does flip
    assert run != [Signal(8, ["BTCUSDT"]).next("BTCUSDT") for _ in range(50)]


def test_an_entry_is_the_buckets_order_notional_rounded_down_to_the_step():
    config = bot_strategy(strategy())  # majors: 0.5 of capital, leverage 5, order_fraction 0.25 -> 1250 USDT
    entry = size_entry(config, "BTCUSDT", D(2000), D("61000.05"), BTC)
    assert entry == Entry(quantity=D("0.020"), price=D("61000.0"), margin=D("250"))
    assert entry.quantity * entry.price <= config.order_notional("BTCUSDT", D(2000))


def test_an_entry_below_the_minimum_notional_is_not_sized():
    assert size_entry(bot_strategy(strategy()), "BTCUSDT", D(100), D("62000"), BTC) is None  # 62.5 USDT < 100


def test_oversizing_scales_what_is_sent_but_not_the_margin_the_bucket_counts():
    entry = size_entry(bot_strategy(strategy()), "BTCUSDT", D(2000), D("62000"), BTC, factor=D(3))
    assert entry.quantity == D("0.060") and entry.margin == D("250")


def test_a_flat_symbol_with_a_signal_places_one_limit_entry_at_the_mark():
    [command] = decide_now(Direction.LONG, view())
    assert isinstance(command, PlaceOrder)
    assert (command.side, command.order_type, command.price, command.purpose) == ("BUY", "LIMIT", D("62000.0"), ENTRY)


def test_no_entry_without_room_in_the_bucket_or_beyond_the_open_order_limit():
    assert decide_now(Direction.LONG, view(), room=D("249")) == []
    assert decide_now(Direction.LONG, view(orders=[order(), order()])) == []


def test_a_position_against_the_signal_is_closed_reduce_only_and_its_entries_canceled():
    commands = decide_now(Direction.SHORT, view("0.04", [order()]))
    assert [type(c) for c in commands] == [CancelOrders, PlaceOrder]
    close = commands[1]
    assert (close.side, close.order_type, close.quantity, close.reduce_only, close.purpose) == (
        "SELL", "MARKET", D("0.04"), True, EXIT)


def test_nothing_is_decided_while_a_close_or_a_cancel_is_on_its_way():
    assert decide_now(Direction.SHORT, view("0.04", [order(purpose=EXIT)])) == []
    assert decide_now(Direction.LONG, view(cancel_queued=True)) == []


def test_stale_or_wrong_side_entries_are_canceled_but_not_twice():
    assert decide_now(Direction.LONG, view(orders=[order(created_at=0.0)]), now=6.0) == [
        CancelOrders(symbol="BTCUSDT", reason="stale")]
    assert decide_now(Direction.SHORT, view(orders=[order("BUY")])) == [
        CancelOrders(symbol="BTCUSDT", reason="flipped")]
    # A cancel already requested is not requested again; the open-order limit still counts the order.
    [command] = decide_now(Direction.LONG, view(orders=[order(created_at=0.0, cancel_requested=True)]), now=6.0)
    assert isinstance(command, PlaceOrder)
    assert decide_now(Direction.LONG, view(orders=[order(cancel_requested=True), order()])) == []
    assert decide_now(Direction.FLAT, view(orders=[order(cancel_requested=True)])) == []


def test_a_flat_signal_cancels_resting_entries_and_keeps_no_position():
    assert decide_now(Direction.FLAT, view(orders=[order()])) == [CancelOrders(symbol="BTCUSDT", reason="flat")]
    assert decide_now(Direction.FLAT, view()) == []
