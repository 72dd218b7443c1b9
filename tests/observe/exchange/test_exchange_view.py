"""ExchangeView, the observer's synchronous core: typed events and snapshots in, observations out,
with no event loop running (so no await and no I/O can hide in the hot path)."""

from __future__ import annotations

import asyncio
import inspect
from decimal import Decimal

import pytest

from controller.exchange.events import (
    AccountSnapshot,
    AccountUpdate,
    Balance,
    Fill,
    LeverageChanged,
    MarginCall,
    MarginCallPosition,
    OrderUpdate,
    Position,
    PositionChange,
    StreamStatus,
    SubAccountBalance,
    SymbolSettings,
)
from controller.observe.exchange import ExchangeObserver
from controller.observe.exchange_view import ExchangeView
from tests.support.bot import strategy
from tests.support.exchange_observer import Recorder

T0 = 1_767_225_600.0
D = Decimal
CAPITAL = D(2000)  # the account's capital in these tests (no simulator here)
LIMIT = D("0.5") * CAPITAL * 5  # majors: allocation x capital x leverage = 5 000 USDT


def order(order_id: int, status: str, *, qty="0.02", price="62000", avg="0", filled="0", reduce_only=False,
          ts=T0) -> OrderUpdate:
    return OrderUpdate("canary", "BTCUSDT", order_id, f"c-{order_id}", "BUY", "LIMIT" if D(price) else "MARKET",
                       "TRADE" if D(filled) else "NEW", status, D(qty), D(price), D(avg), D(filled), reduce_only,
                       ts, ts)


def fill(order_id: int, trade_id: int, *, qty="0.01", price="62000", ts=T0) -> Fill:
    return Fill("canary", "BTCUSDT", trade_id, order_id, f"c-{order_id}", "BUY", D(price), D(qty),
                D(price) * D(qty), D(0), "USDT", D(0), False, ts, ts)


def position(symbol: str, amount: str, entry: str, upnl: str, ts=T0, side: str = "BOTH") -> AccountUpdate:
    return AccountUpdate("canary", "ORDER", (Balance("USDT", CAPITAL, CAPITAL),),
                         (PositionChange(symbol, D(amount), D(entry), D(upnl), "CROSSED", D(0), side),), ts, ts)


def connected(ts=T0) -> StreamStatus:
    return StreamStatus("canary", True, "connected", ts, ts)


def settings(btc: int = 5) -> list[SymbolSettings]:
    return [SymbolSettings("BTCUSDT", btc, "CROSSED"), SymbolSettings("ETHUSDT", 5, "CROSSED"),
            SymbolSettings("SOLUSDT", 3, "ISOLATED")]


def held(symbol: str, amount: str, mark: str, side: str = "BOTH") -> Position:
    return Position(symbol, D(amount), D(mark), D(mark), D(0), D(amount) * D(mark), D(0), D(0), D(0), side=side)


@pytest.fixture
def record() -> Recorder:
    return Recorder()


@pytest.fixture
def view(record) -> ExchangeView:
    view = ExchangeView(config=strategy(), sink=record, capital=CAPITAL)
    view.on_settings(settings(), requested_at=T0, at=T0)
    return view


def test_on_event_is_synchronous_and_needs_no_event_loop(canary, clock):
    with pytest.raises(RuntimeError):
        asyncio.get_running_loop()  # nothing could be awaited, so nothing could be sent
    record = Recorder()
    observer = ExchangeObserver(account="canary", client=canary, config=strategy(), clock=clock, sink=record,
                                capital=CAPITAL)
    assert not inspect.iscoroutinefunction(observer.on_event)
    for event in (connected(), LeverageChanged("canary", "BTCUSDT", 5, T0, T0), order(1, "NEW"),
                  order(1, "FILLED", filled="0.02", avg="62000"), fill(1, 10, qty="0.02"),
                  position("BTCUSDT", "0.02", "62000", "0")):
        assert observer.on_event(event) is None
    assert record.values("stream_connected") == [1.0]
    assert record.values("fill_notional_ratio") == [pytest.approx(0.02 * 62000 / float(LIMIT))]
    assert record.values("order_outcomes", outcome="filled") == [1.0]
    assert record.values("exposure_ratio", symbol="BTCUSDT") == [pytest.approx(0.62)]


def test_a_fill_is_sized_by_its_orders_notional_not_by_its_own(view, record):
    view.on_event(order(1, "PARTIALLY_FILLED", qty="0.05", price="62000", filled="0.01"))
    view.on_event(fill(1, 10, qty="0.01"))  # a fifth of the order; the order is what was sized
    view.on_event(order(2, "FILLED", qty="0.1", price="0", avg="61000", filled="0.1"))  # market: average price
    view.on_event(fill(2, 11, qty="0.1", price="61000"))
    ratios = record.values("fill_notional_ratio", symbol="BTCUSDT", bucket="majors")
    assert ratios == [pytest.approx(0.05 * 62000 / 5000), pytest.approx(0.1 * 61000 / 5000)]


def test_a_reduce_only_fill_is_checked_for_leverage_but_not_sized(view, record):
    view.on_event(order(3, "FILLED", qty="1", price="0", avg="62000", filled="1", reduce_only=True))
    view.on_event(fill(3, 12, qty="1"))
    assert record.values("fill_leverage_mismatch", symbol="BTCUSDT") == [0.0]
    assert record.values("fill_notional_ratio") == []


def test_a_fill_whose_order_was_never_seen_is_counted_not_guessed(view, record):
    view.on_event(fill(99, 13))  # found over REST after a reconnect: no order update came with it
    assert record.values("fill_notional_ratio") == [] and view.stats.unsized_fills == 1


def test_an_order_ends_once_however_often_its_end_is_reported(view, record):
    view.open(T0)
    for update in (order(4, "FILLED", filled="0.02"), order(4, "NEW"), order(4, "FILLED", filled="0.02"),
                   order(5, "CANCELED"), order(6, "EXPIRED_IN_MATCH")):
        view.on_event(update)
    assert view.outcomes == {"canceled": 1, "expired": 1, "filled": 1, "rejected": 0, "unfilled": 0}
    assert record.values("order_outcomes", outcome="filled") == [0.0, 1.0]


def test_orders_the_release_placed_and_fills_on_the_account_are_counted_from_the_start(view, record):
    view.open(T0)
    for update in (order(7, "NEW"), order(7, "NEW"), fill(7, 20), order(7, "FILLED", filled="0.02"),
                   order(8, "NEW", ts=T0 + 1)):
        view.on_event(update)
    # The controller's own orders (a rollback's flattening) are not the release's; their fills still count.
    view.on_event(OrderUpdate("canary", "BTCUSDT", 9, "rb1d2-BTCUSDT-1", "SELL", "MARKET", "NEW", "NEW", D("0.02"),
                              D(0), D(0), D(0), True, T0 + 2, T0 + 2))
    view.on_event(fill(9, 21, ts=T0 + 2))

    assert record.values("orders_placed") == [0.0, 1.0, 2.0]  # an order counts once, however often it is reported
    assert record.values("account_fills") == [0.0, 1.0, 2.0]


def test_fills_of_orders_created_before_the_view_watched_are_counted_apart_from_the_releases_own(view, record):
    view.open(T0)
    view.on_event(order(7, "NEW"))
    view.on_event(order(7, "FILLED", filled="0.02"))  # created while watched: the release's own
    view.on_event(order(3, "FILLED", filled="0.02", ts=T0 + 1))  # resting since before the watch: whose is unknown
    view.on_event(OrderUpdate("canary", "BTCUSDT", 9, "rb1d2-BTCUSDT-1", "SELL", "MARKET", "TRADE", "FILLED",
                              D("0.02"), D(0), D(62000), D("0.02"), True, T0 + 2, T0 + 2))  # the controller's own

    assert record.values("own_orders_filled") == [0.0, 1.0]
    assert record.values("prior_orders_filled") == [0.0, 1.0]


def test_a_leverage_change_the_stream_reports_beats_an_older_snapshot(view, record):
    view.on_event(LeverageChanged("canary", "BTCUSDT", 10, T0 + 2, T0 + 2))
    view.on_settings(settings(btc=5), requested_at=T0 + 1, at=T0 + 3)  # asked before the change
    assert record.values("leverage_applied", symbol="BTCUSDT")[-1] == 10
    assert record.values("leverage_mismatch", symbol="BTCUSDT")[-1] == 1
    view.on_event(fill(7, 14))
    assert record.values("fill_leverage_mismatch", symbol="BTCUSDT") == [1.0]


def test_exposure_follows_the_stream_and_the_snapshot(view, record):
    view.on_event(position("BTCUSDT", "-0.1", "60000", "-100"))  # short, the mark rose to 61 000
    assert record.values("exposure_ratio", symbol="BTCUSDT") == [pytest.approx(6100 / 2000)]
    view.on_positions([held("BTCUSDT", "-0.1", "61000"), held("ETHUSDT", "1", "3000")], requested_at=T0 + 1,
                      at=T0 + 1)
    assert record.last("exposure_total_ratio") == pytest.approx((6100 + 3000) / 2000)
    assert record.last("exposure_ratio", symbol="SOLUSDT") == 0


def test_a_hedged_symbols_sides_are_two_positions_each_updated_on_its_own(view, record):
    # Hedge mode: an ACCOUNT_UPDATE names the side it moved; the other side keeps its value.
    view.on_event(position("BTCUSDT", "0.1", "62000", "0", side="LONG"))
    view.on_event(position("BTCUSDT", "-0.05", "62000", "0", side="SHORT", ts=T0 + 1))
    assert record.last("exposure_ratio", symbol="BTCUSDT") == pytest.approx(9300 / 2000)
    view.on_event(position("BTCUSDT", "0", "0", "0", side="LONG", ts=T0 + 2))
    assert record.last("exposure_ratio", symbol="BTCUSDT") == pytest.approx(3100 / 2000)
    view.on_positions([held("BTCUSDT", "0.2", "62000", "LONG"), held("BTCUSDT", "-0.05", "62000", "SHORT")],
                      requested_at=T0 + 3, at=T0 + 3)
    assert record.last("exposure_ratio", symbol="BTCUSDT") == pytest.approx(15500 / 2000)
    assert record.last("exposure_total_ratio") == pytest.approx(15500 / 2000)


def test_a_hedged_isolated_symbol_reads_the_side_nearer_its_liquidation(record):
    view = ExchangeView(config=strategy(), sink=record, capital=CAPITAL)  # SOLUSDT is isolated in it

    def side(name: str, amount: str, isolated: str, maintenance: str) -> Position:
        return Position("SOLUSDT", D(amount), D("150"), D("150"), D(0), D(amount) * D("150"), D(0), D(isolated),
                        D(maintenance), side=name)

    view.on_positions([side("SHORT", "-10", "100", "60"), side("LONG", "10", "100", "20")], requested_at=T0, at=T0)
    assert record.values("isolated_margin_ratio", symbol="SOLUSDT") == [pytest.approx(0.6)]


def test_a_hedged_side_that_moved_without_an_account_update_is_named_with_its_side(view, record):
    view.on_event(connected(T0))
    view.on_event(position("BTCUSDT", "0.1", "62000", "0", side="LONG"))
    long = held("BTCUSDT", "0.1", "62000", "LONG")
    view.on_positions([long], requested_at=T0 + 1, at=T0 + 1)
    view.on_positions([long, held("BTCUSDT", "-0.1", "62000", "SHORT")], requested_at=T0 + 2, at=T0 + 2)
    view.on_positions([long, held("BTCUSDT", "-0.1", "62000", "SHORT")], requested_at=T0 + 3, at=T0 + 3)
    assert view.stalled is not None and "BTCUSDT SHORT" in view.stalled and "LONG" not in view.stalled


def test_a_position_the_stream_closes_as_a_snapshot_is_out_stays_closed_on_a_stepped_clock(view, record):
    # A stepped clock stands still while requests are out: the snapshot is asked for, the stream
    # reports the close, the snapshot answers with the position still open, all at T0 + 1.
    view.on_event(position("ETHUSDT", "0.6", "3000", "0"))
    view.on_event(position("ETHUSDT", "0", "0", "0", ts=T0 + 1))
    view.on_positions([held("ETHUSDT", "0.6", "3000")], requested_at=T0 + 1, at=T0 + 1)
    assert record.last("exposure_ratio", symbol="ETHUSDT") == 0
    assert view.stats.stale_snapshot_values == 1


def test_a_leverage_change_the_stream_reports_as_a_snapshot_is_out_wins_on_a_stepped_clock(view, record):
    view.on_event(LeverageChanged("canary", "BTCUSDT", 10, T0 + 1, T0 + 1))
    view.on_settings(settings(btc=5), requested_at=T0 + 1, at=T0 + 1)
    assert record.values("leverage_applied", symbol="BTCUSDT")[-1] == 10


def test_a_margin_call_is_a_sample_of_one_with_the_margin_ratio_it_states(view, record):
    view.on_event(MarginCall("canary", D("2000"), (MarginCallPosition("BTCUSDT", "BOTH", D("0.6"), "CROSSED",
                                                                       D("58900"), D("-1860"), D("141")),), T0, T0))
    assert record.values("margin_calls") == [1.0]
    assert record.values("margin_ratio") == [pytest.approx(141 / 140)]


def test_the_account_snapshot_gives_margin_ratio_and_pnl_against_the_starting_capital(view, record):
    view.on_account(AccountSnapshot("canary", D("2100"), D("2050"), D("41"), D("1500"), D("-50"), T0), at=T0)
    assert record.last("margin_ratio") == pytest.approx(41 / 2050)
    assert record.last("pnl_ratio") == pytest.approx(50 / 2000)


def test_events_beat_the_heartbeat_at_most_once_a_second_while_healthy(view, record):
    view.on_event(connected(T0))
    view.snapshot_done(T0, None)
    for i in range(30):
        view.on_event(order(100 + i, "NEW", ts=T0 + i * 0.1))
    assert [h.ts for h in record.heartbeats(ok=True)] == [T0, T0, T0 + 1.0, T0 + 2.0]


def test_no_ok_heartbeat_while_a_snapshot_is_failing_or_the_stream_is_down(view, record):
    view.on_event(connected(T0))
    view.snapshot_done(T0 + 1, "snapshot failed: Retryable: HTTP 500")
    view.on_event(order(8, "NEW", ts=T0 + 5))
    assert record.heartbeats()[-1].ok is False
    view.snapshot_done(T0 + 6, None)
    view.on_event(StreamStatus("canary", False, "closed by the exchange", T0 + 7, T0 + 7))
    view.on_event(order(9, "NEW", ts=T0 + 9))
    view.snapshot_done(T0 + 10, None)
    assert [h.ok for h in record.heartbeats()] == [True, False, True, False, False]
    assert "disconnected" in record.heartbeats()[-1].error


def test_a_position_change_no_account_update_reported_marks_the_stream_silent(view, record):
    view.on_event(connected(T0))
    view.on_positions([], requested_at=T0 + 1, at=T0 + 1)
    view.on_positions([held("BTCUSDT", "0.1", "62000")], requested_at=T0 + 2, at=T0 + 2)  # may be in flight
    assert view.stalled is None
    view.on_positions([held("BTCUSDT", "0.1", "62000")], requested_at=T0 + 3, at=T0 + 3)  # still nothing
    view.snapshot_done(T0 + 3, None)
    assert record.last("stream_connected") == 0 and "silent" in record.heartbeats()[-1].error
    view.on_event(position("BTCUSDT", "0.1", "62000", "0", ts=T0 + 4))  # the backlog arrives
    assert record.last("stream_connected") == 1 and record.heartbeats()[-1].ok


def snapshot(wallet: str, upnl: str = "0") -> AccountSnapshot:
    return AccountSnapshot("canary", D(wallet), D(wallet) + D(upnl), D(0), D(wallet), D(upnl), T0)


def balances(view: ExchangeView, wallet: str, upnl: str = "0", *, firm_without: str = "98000") -> None:
    """A snapshot pass with the master's key: the firm is the master's wallet plus the canary's."""
    view.on_account(snapshot(wallet, upnl), at=T0)
    view.on_balances(D(wallet), snapshot(firm_without), [SubAccountBalance("canary@x", D(wallet), D(wallet))], at=T0)


def transfer(reason: str, change: str | None, asset: str = "USDT", wallet: str = "2000") -> AccountUpdate:
    return AccountUpdate("canary", reason, (Balance(asset, D(wallet), D(wallet), None if change is None else D(change)),),
                         (), T0, T0)


def test_the_capital_share_is_what_was_moved_in_and_the_equity_share_what_it_is_worth(view, record):
    balances(view, "2000")
    assert record.last("capital_share") == pytest.approx(0.02) and record.last("equity_share") == pytest.approx(0.02)
    balances(view, "2300", upnl="100")  # it earned 300 and holds 100 more unrealized: not capital given to it
    assert record.last("capital_share") == pytest.approx(2000 / 100_300)
    assert record.last("equity_share") == pytest.approx(2400 / 100_300)


def test_transfers_in_and_out_move_the_capital_share(view, record):
    balances(view, "2000")
    view.on_event(transfer("DEPOSIT", "500", wallet="2500"))
    view.on_event(transfer("ORDER", "0", wallet="2510"))  # a trade's balance change is not capital moved
    view.on_event(transfer("WITHDRAW", "-100", wallet="2410"))
    balances(view, "2410")
    assert record.last("capital_share") == pytest.approx(2400 / 100_410)


@pytest.mark.parametrize("update", [transfer("DEPOSIT", None), transfer("DEPOSIT", "0.1", asset="BTC")])
def test_a_transfer_whose_amount_cannot_be_counted_stops_the_capital_share(view, record, update):
    balances(view, "2000")
    view.on_event(update)
    mark = record.mark()
    balances(view, "2000")
    assert not record.since(mark).values("capital_share")  # fail closed: its policy goes nodata
    assert record.since(mark).values("equity_share") and view.funding_unknown.startswith("a DEPOSIT of ")
