"""What the exchange records of a release beyond its config: trading a symbol the config does not
name, the exchange closing positions itself (liquidation, ADL), the account's modes changed, an
isolated position near its liquidation, and orders their own time in force ended unfilled.

ExchangeView alone (typed events and snapshots in, observations out), then the observer against
the simulator for what only the exchange can do."""

from __future__ import annotations

from decimal import Decimal

import pytest

from controller.exchange.events import (
    AccountModes,
    AccountUpdate,
    Balance,
    LeverageChanged,
    MultiAssetsChanged,
    OrderUpdate,
    Position,
    PositionChange,
)
from controller.exchange.parse import stream_events
from controller.observe.exchange_view import ExchangeView
from tests.observe.exchange.test_exchange_view import T0, fill, order, record, view  # noqa: F401 (fixtures)
from tests.support.bot import CAPITAL, strategy
from tests.support.exchange_observer import observing

D = Decimal
FOREIGN = "DOGEUSDT"  # traded on the exchange, named nowhere in the strategy


def update(symbol: str, order_id: int, status: str, *, client_id: str | None = None, order_type: str = "LIMIT",
           time_in_force: str = "GTC", ts=T0) -> OrderUpdate:
    return OrderUpdate("canary", symbol, order_id, client_id or f"c-{order_id}", "SELL", order_type, "NEW", status,
                       D("1"), D("0.1"), D(0), D(0), False, ts, ts, time_in_force)


def held(symbol: str, amount: str, *, updated: float = T0) -> Position:
    return Position(symbol, D(amount), D("0.1"), D("0.1"), D(0), D(amount) * D("0.1"), D(0), D(0), D(0), updated)


def test_every_kind_of_activity_on_a_symbol_outside_the_config_is_observed(view, record):
    view.on_event(update(FOREIGN, 1, "NEW"))
    view.on_event(LeverageChanged("canary", FOREIGN, 20, T0, T0))
    view.on_event(AccountUpdate("canary", "ORDER", (Balance("USDT", CAPITAL, CAPITAL),),
                                (PositionChange(FOREIGN, D("100"), D("0.1"), D(0), "CROSSED", D(0)),), T0, T0))
    # The first reading counts a position outside the config: nothing says it predates the release.
    view.on_positions([held(FOREIGN, "150")], requested_at=T0, at=T0 + 1)
    view.on_positions([held(FOREIGN, "150")], requested_at=T0 + 30, at=T0 + 31)  # unchanged: nothing new
    assert record.values("foreign_activity", symbol=FOREIGN) == [1.0, 1.0, 1.0, 1.0]
    view.on_positions([held(FOREIGN, "160")], requested_at=T0 + 60, at=T0 + 61)
    assert record.values("foreign_activity", symbol=FOREIGN) == [1.0] * 5
    assert record.values("foreign_activity", symbol="BTCUSDT") == []
    view.on_event(update("BTCUSDT", 2, "NEW"))
    assert len(record.values("foreign_activity")) == 5  # a configured symbol is no foreign activity


def test_a_position_outside_the_config_older_than_the_placement_is_not_the_releases_doing(record):
    view = ExchangeView(config=strategy(), sink=record, capital=CAPITAL, placed_at=T0)
    view.on_positions([held(FOREIGN, "100", updated=T0 - 600)], requested_at=T0 + 5, at=T0 + 6)  # a predecessor's
    view.on_positions([held(FOREIGN, "100", updated=T0 - 600)], requested_at=T0 + 30, at=T0 + 31)
    assert record.values("foreign_activity") == []
    view.on_positions([], requested_at=T0 + 60, at=T0 + 61)  # closed: someone traded it
    assert record.values("foreign_activity", symbol=FOREIGN) == [1.0]


def test_a_position_outside_the_config_opened_before_the_view_started_is_the_releases(record):
    view = ExchangeView(config=strategy(), sink=record, capital=CAPITAL, placed_at=T0)
    view.on_positions([held(FOREIGN, "100", updated=T0 + 2)], requested_at=T0 + 5, at=T0 + 6)  # the bot was first
    assert record.values("foreign_activity", symbol=FOREIGN) == [1.0]


def test_liquidation_and_adl_orders_are_counted_once_each_by_kind(view, record):
    for event in (update("BTCUSDT", 3, "NEW", client_id="autoclose-1767225600000", order_type="LIQUIDATION"),
                  update("BTCUSDT", 3, "FILLED", client_id="autoclose-1767225600000", order_type="LIQUIDATION"),
                  update("ETHUSDT", 4, "NEW", client_id="adl_autoclose", order_type="MARKET"),
                  update("SOLUSDT", 5, "FILLED")):
        view.on_event(event)
    assert record.values("liquidations", symbol="BTCUSDT", kind="liquidation") == [1.0]
    assert record.values("liquidations", symbol="ETHUSDT", kind="adl") == [1.0]
    assert len(record.values("liquidations")) == 2


def test_an_order_its_time_in_force_ended_unfilled_is_not_counted_expired(view, record):
    view.open(T0)
    view.on_event(update("BTCUSDT", 6, "EXPIRED", time_in_force="IOC"))
    view.on_event(update("BTCUSDT", 7, "EXPIRED", time_in_force="GTX"))
    view.on_event(update("BTCUSDT", 8, "EXPIRED", time_in_force="GTC"))  # e.g. a reduce-only rest expired
    assert view.outcomes["unfilled"] == 2 and view.outcomes["expired"] == 1
    assert record.values("order_outcomes", outcome="unfilled") == [0.0, 1.0, 2.0]
    assert record.values("order_outcomes", outcome="expired") == [0.0, 1.0]


def test_the_time_in_force_and_a_liquidations_trade_are_read_from_the_stream():
    raw = {"e": "ORDER_TRADE_UPDATE", "E": 1767225600000, "T": 1767225600000, "o": {
        "s": "BTCUSDT", "c": "autoclose-1767225600000", "S": "SELL", "o": "LIQUIDATION", "f": "IOC", "q": "0.010",
        "p": "59000", "ap": "59000", "x": "CALCULATED", "X": "FILLED", "i": 9, "l": "0.010", "z": "0.010",
        "L": "59000", "T": 1767225600000, "t": 77, "m": False, "R": True, "rp": "-30", "n": "0.3", "N": "USDT"}}
    order_update, trade = stream_events(raw, "canary", T0)
    assert (order_update.time_in_force, order_update.liquidation) == ("IOC", "liquidation")
    assert (trade.trade_id, trade.quantity, trade.price) == (77, D("0.010"), D("59000"))
    [changed] = stream_events({"e": "ACCOUNT_CONFIG_UPDATE", "E": 1767225600000, "T": 1767225600000,
                               "ai": {"j": True}}, "canary", T0)
    assert changed == MultiAssetsChanged("canary", True, T0, T0)


def test_modes_are_judged_against_the_placements_or_else_the_first_reading(record):
    placed = ExchangeView(config=strategy(), sink=record, capital=CAPITAL, modes=AccountModes(False, False))
    placed.on_modes(AccountModes(hedge=True, multi_assets=False), at=T0)
    assert record.values("account_mode_mismatch", mode="position_mode") == [1.0]
    assert record.values("account_mode_mismatch", mode="multi_assets") == [0.0]
    placed.on_event(MultiAssetsChanged("canary", True, T0 + 1, T0 + 1))
    assert record.values("account_mode_mismatch", mode="multi_assets") == [0.0, 1.0]

    later = record.mark()
    first = ExchangeView(config=strategy(), sink=record, capital=CAPITAL)
    first.on_modes(AccountModes(hedge=True, multi_assets=True), at=T0)  # what the account had: the reference
    first.on_modes(AccountModes(hedge=True, multi_assets=True), at=T0 + 30)
    assert record.since(later).values("account_mode_mismatch") == [0.0, 0.0, 0.0, 0.0]


def test_each_isolated_position_has_its_own_margin_ratio(view, record):
    # SOLUSDT is isolated in the config; BTCUSDT is a cross position (no isolated margin).
    view.on_positions([Position("SOLUSDT", D("10"), D("150"), D("140"), D("-100"), D("1400"), D("137"), D("50"),
                                D("10")),
                       Position("BTCUSDT", D("0.01"), D("62000"), D("62000"), D(0), D("620"), D(0), D(0), D("2"))],
                      requested_at=T0, at=T0 + 1)
    assert record.values("isolated_margin_ratio", symbol="SOLUSDT") == [pytest.approx(0.2)]
    assert record.values("isolated_margin_ratio", symbol="BTCUSDT") == []
    view.on_positions([], requested_at=T0 + 30, at=T0 + 31)  # flat: 0, so the group stays fresh
    assert record.values("isolated_margin_ratio", symbol="SOLUSDT")[-1] == 0.0


async def test_the_observer_sees_an_isolated_liquidation_and_a_symbol_outside_the_config(sim, canary, clock):
    config = strategy()
    async with observing(canary, config, clock=clock) as run:
        record = run.record
        await canary.set_margin_type("SOLUSDT", "ISOLATED")
        await canary.set_leverage("SOLUSDT", 3)
        await canary.new_order(symbol="SOLUSDT", side="BUY", order_type="MARKET", quantity=D("5"))
        await canary.new_order(symbol=FOREIGN, side="BUY", order_type="MARKET", quantity=D("1000"))
        await run.until(lambda: record.values("foreign_activity", symbol=FOREIGN))
        [solana] = [p for p in await canary.positions("SOLUSDT") if p.amount]
        sim.set_price("SOLUSDT", solana.liquidation_price - 1)
        await run.until(lambda: record.values("liquidations", symbol="SOLUSDT", kind="liquidation") == [1.0])


async def test_a_liquidation_while_the_stream_is_down_is_found_over_rest_when_it_reconnects(sim, canary, clock):
    """The stream cannot tell of a liquidation it was not connected for: on reconnecting, the
    exchange's own list of liquidation orders (GET /fapi/v1/forceOrders) is read, so the policy
    that rolls back on a liquidation still hears of it, once."""
    config = strategy()
    async with observing(canary, config, clock=clock) as run:
        record = run.record
        await canary.set_margin_type("SOLUSDT", "ISOLATED")
        await canary.set_leverage("SOLUSDT", 3)
        await canary.new_order(symbol="SOLUSDT", side="BUY", order_type="MARKET", quantity=D("5"))
        [solana] = [p for p in await canary.positions("SOLUSDT") if p.amount]

        sim.faults.fail("/fapi/v1/listenKey")  # no new listenKey: the stream stays down once cut
        mark = record.mark()
        assert sim.faults.drop_stream("canary") >= 1
        await run.until(lambda: 0.0 in record.since(mark).values("stream_connected"))
        sim.set_price("SOLUSDT", solana.liquidation_price - 1)  # liquidated while nobody listens
        assert not [p for p in await canary.positions("SOLUSDT") if p.amount]
        assert record.values("liquidations") == []

        sim.faults.clear()
        await run.until(lambda: record.values("liquidations", symbol="SOLUSDT", kind="liquidation") == [1.0])
        await run.until(lambda: record.since(mark).values("stream_connected")[-1:] == [1.0])
        assert record.values("liquidations") == [1.0]  # once, though later reconnects read it again
