"""The bot's books: each order ends once, margin is never under-counted, buckets lock and unlock."""

from __future__ import annotations

from decimal import Decimal

from reference_bot.ledger import DEFECT, ENTRY, EXIT, Ledger, TrackedOrder
from reference_bot.payloads import OrderEvent
from tests.support.bot import bot_strategy, strategy

D = Decimal


def books() -> Ledger:
    ledger = Ledger(bot_strategy(strategy()))
    ledger.capital = D(2000)
    ledger.marks["BTCUSDT"] = D(60000)
    return ledger


def tracked(client_id="bot-a-1", *, side="BUY", quantity="0.02", purpose=ENTRY) -> TrackedOrder:
    return TrackedOrder(client_id, "BTCUSDT", side, D(quantity), D(60000), purpose, created_at=0.0)


def update(status, filled="0", client_id="bot-a-1") -> OrderEvent:
    return OrderEvent(symbol="BTCUSDT", order_id=7, client_order_id=client_id, status=status,
                      filled_quantity=D(filled))


def test_an_order_counts_its_outcome_once_whatever_the_stream_repeats():
    ledger = books()
    ledger.add(tracked())
    assert ledger.on_order_update(update("NEW")) is None
    ended = ledger.on_order_update(update("FILLED", "0.02"))
    assert ended is not None and ended[1] == "filled"
    assert ledger.on_order_update(update("FILLED", "0.02")) is None  # duplicate
    assert ledger.on_order_update(update("NEW")) is None             # late, out of order
    assert ledger.finish("bot-a-1", "canceled") is None and ledger.is_finished("bot-a-1")


def test_queued_and_open_entries_count_as_margin_at_the_configured_leverage():
    ledger = books()
    ledger.add(tracked())  # 0.02 x 60000 = 1200 notional at leverage 5
    assert ledger.margin("BTCUSDT") == D(240)
    assert ledger.usage("majors") == D("0.12")
    ledger.add(tracked("bot-a-2", purpose=EXIT))
    ledger.add(tracked("bot-a-3", purpose=DEFECT))
    assert ledger.margin("BTCUSDT") == D(240)


def test_a_fill_is_counted_before_the_position_update_confirms_it_and_not_twice_after():
    ledger = books()
    ledger.add(tracked())
    ledger.on_order_update(update("FILLED", "0.02"))
    assert ledger.position("BTCUSDT") == D("0.02") and ledger.margin("BTCUSDT") == D(240)
    ledger.set_position("BTCUSDT", D("0.02"))  # the ACCOUNT_UPDATE that follows
    assert ledger.position("BTCUSDT") == D("0.02")


def test_a_rest_position_read_is_dropped_when_the_stream_moved_the_position_meanwhile():
    ledger = books()
    version = ledger.position_version("BTCUSDT")
    ledger.set_position("BTCUSDT", D("0.05"))  # stream, while the REST request was out
    ledger.set_position("BTCUSDT", D("0"), unless_changed_since=version)
    assert ledger.position("BTCUSDT") == D("0.05")


def test_a_symbol_locks_when_it_first_holds_margin_and_unlocks_when_flat_without_orders():
    ledger = books()
    assert ledger.lock_changes() == []
    ledger.add(tracked())
    assert ledger.lock_changes() == [("BTCUSDT", True)]
    ledger.on_order_update(update("FILLED", "0.02"))
    assert ledger.lock_changes() == []  # still holding: now a position
    ledger.set_position("BTCUSDT", D(0))
    assert ledger.lock_changes() == [("BTCUSDT", False)]


def test_orders_sent_by_a_defect_hold_no_margin_and_no_lock():
    ledger = books()
    ledger.add(tracked(purpose=DEFECT))
    assert ledger.lock_changes() == [] and ledger.margin("BTCUSDT") == 0
