"""The two defects of the close path, on the commands a decision gives (pure, no exchange)."""

from __future__ import annotations

from decimal import Decimal as D

from reference_bot.config import Defects
from reference_bot.defects import alter_exits
from reference_bot.ledger import ENTRY, EXIT
from reference_bot.payloads import TradingRules
from reference_bot.strategy import CancelOrders, PlaceOrder

BTC = TradingRules("BTCUSDT", tick_size=D("0.10"), step_size=D("0.001"), min_qty=D("0.001"), min_notional=D("100"))
CANCEL = CancelOrders(symbol="BTCUSDT", reason="closing")
CLOSE = PlaceOrder(symbol="BTCUSDT", side="SELL", order_type="MARKET", quantity=D("0.017"), price=None,
                   reference_price=D("60000"), purpose=EXIT, reduce_only=True)
ENTER = PlaceOrder(symbol="BTCUSDT", side="BUY", order_type="LIMIT", quantity=D("0.020"), price=D("60000"),
                   reference_price=D("60000"), purpose=ENTRY)


def test_a_release_without_exit_defects_sends_its_commands_as_decided():
    assert alter_exits(Defects(), [CANCEL, CLOSE], BTC) == [CANCEL, CLOSE]


def test_oversized_exits_scale_only_the_close_rounded_down_to_the_step():
    altered = alter_exits(Defects(oversized_exits=D("2.5")), [CANCEL, CLOSE, ENTER], BTC)
    assert altered[0] == CANCEL and altered[2] == ENTER
    assert altered[1].quantity == D("0.042") and altered[1].reduce_only and altered[1].purpose == EXIT


def test_exits_never_sent_drop_the_close_and_keep_the_rest():
    assert alter_exits(Defects(exits_never_sent=True), [CANCEL, CLOSE, ENTER], BTC) == [CANCEL, ENTER]
