"""Order matching on the simulated exchange: accepting, filling, cancelling and expiring orders.

The book is synthetic: around the mark price there are levels one basis point apart, each
holding `Market.level_qty` (about 200 000 USDT). A taker walks the levels (so a large order
fills in several trades, PARTIALLY_FILLED then FILLED); a resting limit order fills at its price,
one level's quantity per tick, once the mark price reaches it. Synchronous: the server calls it
between awaits, so no two requests interleave inside it.

An isolated position whose mark price reaches its liquidation price is closed by the exchange at
that price (an order of type LIQUIDATION, client id ``autoclose-...``); `auto_deleverage` closes a
position at the mark price as ADL does (client id ``adl_autoclose``). Both trade with execution
type CALCULATED, as Binance reports a liquidation's execution.

In hedge mode an order names its position side (LONG or SHORT); one that closes its side (SELL
LONG, BUY SHORT) is bounded by that side's position, as a reduce-only order is in one-way mode.
A resting LIMIT order can be modified (PUT /fapi/v1/order) under Binance's rules (`modify`).

An order passes Binance's symbol filters (`controller.sim.filters`) first; what a fill does to the
account, and the margin orders need and hold, is the ledger's (`controller.sim.ledger`).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

from controller.sim import codes, filters
from controller.sim.accounts import POSITION_SIDES, ZERO, Account, AccountBook
from controller.sim.events import Event, LeverageChanged, OrderUpdated
from controller.sim.ledger import Ledger
from controller.sim.market import Market, SymbolSpec
from controller.sim.orders import Fill, NewOrder, Order
from controller.sim.tickers import DailyTickers
from controller.sim.triggers import TriggerBook

_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")


class MatchingEngine:
    """Accepts, matches and cancels orders; changes leverage and margin type."""

    def __init__(self, market: Market, book: AccountBook, now_ms: Callable[[], int]) -> None:
        self.market = market
        self.book = book
        self.now_ms = now_ms
        self.ledger = Ledger(market, book, now_ms)
        self.orders: dict[int, Order] = {}
        self._open: dict[int, Order] = {}  # the open ones, in placing order: a long run's ticks stay cheap
        self.trades: dict[str, list[Fill]] = {a.name: [] for a in book}
        self._order_ids = itertools.count(4_000_000_001)
        self._trade_ids = itertools.count(300_000_001)
        self.tickers = DailyTickers()
        self.triggers = TriggerBook(self)
        self._observe_prices()

    # -- queries -------------------------------------------------------------------------------

    def spec(self, symbol: str | None) -> SymbolSpec:
        if not symbol:
            raise codes.mandatory("symbol")
        spec = self.market.spec(symbol)
        if spec is None:
            raise codes.bad_symbol()
        return spec

    def open_orders(self, account: Account, symbol: str | None = None) -> list[Order]:
        return [o for o in self._still_open() if o.account == account.name and (symbol is None or o.symbol == symbol)]

    def _still_open(self) -> list[Order]:
        """Every open order, in placing order; an order never reopens, so the closed ones go as found."""
        for order_id in [i for i, o in self._open.items() if not o.is_open]:
            del self._open[order_id]
        return list(self._open.values())

    def find(self, account: Account, symbol: str, order_id: int | None,
             client_order_id: str | None) -> Order | None:
        if order_id is not None:
            order = self.orders.get(order_id)
            return order if order and order.account == account.name and order.symbol == symbol else None
        matches = [o for o in self.orders.values() if o.account == account.name
                   and o.symbol == symbol and o.client_order_id == client_order_id]
        return max(matches, key=lambda o: o.order_id) if matches else None

    # -- orders --------------------------------------------------------------------------------

    def place(self, account: Account, req: NewOrder) -> tuple[Order, Order, list[Event]]:
        """Validate and accept an order, then match what is marketable.

        Returns (the order as accepted, the live order after matching, events).
        """
        spec, price = self.validate(account, req)
        client_id = req.client_order_id
        now = self.now_ms()
        tif = req.time_in_force or "GTC"
        order_id = next(self._order_ids)
        order = Order(
            order_id=order_id, client_order_id=client_id or f"sim-{order_id}", account=account.name,
            symbol=spec.symbol, side=req.side, type=req.type, time_in_force=tif,
            orig_qty=req.quantity or ZERO, price=req.price or ZERO, reduce_only=req.reduce_only,
            position_side=req.position_side, orig_type=req.orig_type or req.type,
            time_ms=now, update_ms=now, good_till_date=req.good_till_date,
        )
        self.orders[order.order_id] = order
        self._open[order.order_id] = order
        accepted = replace(order)
        events: list[Event] = [OrderUpdated(account.name, accepted, "NEW", None, now)]
        limit = price if req.type == "LIMIT" else None
        if tif == "FOK" and req.type == "LIMIT" and \
                self._fillable(spec, order.side, limit) < order.orig_qty:
            events.append(self._close(order, "EXPIRED"))
            return accepted, order, events
        events += self._take(account, spec, order, limit)
        if order.is_open:
            done_reducing = order.reduces and not self._reducible(account, order)
            if req.type == "MARKET" or tif in ("IOC", "FOK") or done_reducing:
                events.append(self._close(order, "EXPIRED"))
            else:
                self._reserve(account, order)
        return accepted, order, events

    def validate(self, account: Account, req: NewOrder) -> tuple[SymbolSpec, Decimal]:
        """Everything `place` checks before accepting ``req`` (POST /fapi/v1/order/test stops here);
        returns the symbol and the order's reference price."""
        spec = self.spec(req.symbol)
        client_id = req.client_order_id
        if client_id is not None:
            if not _CLIENT_ID.match(client_id):
                raise codes.bad_client_order_id()
            # Binance: newClientOrderId is "a unique id among open orders".
            if any(o.client_order_id == client_id for o in self.open_orders(account)):
                raise codes.duplicate_client_order_id()
        price = self._check(account, spec, req)
        if req.type == "LIMIT" and req.time_in_force == "GTX" and self._crosses(spec, req.side, price):
            raise codes.post_only_rejected()
        return spec, price

    def modify(self, account: Account, symbol: str, order_id: int | None, client_order_id: str | None,
               side: str, quantity: Decimal, price: Decimal) -> tuple[Order, list[Event]]:
        """PUT /fapi/v1/order: a resting LIMIT order's new quantity and price, under Binance's rules.

        A new quantity or price that breaks a filter is refused and the order stays as it was; the
        order is cancelled when it is partially filled and the new quantity is not above what
        filled, or when it is post-only (GTX) and the new price would take. Otherwise it is amended
        (execution type AMENDMENT) and, if its new price crosses the book, trades at once as a taker.
        """
        spec = self.spec(symbol)
        order = self.find(account, spec.symbol, order_id, client_order_id)
        if order is None:
            raise codes.no_such_order()
        if not order.is_open:
            # Guessed: the code Binance gives for modifying an order that is no longer open.
            raise codes.no_such_order()
        if order.type != "LIMIT":
            # Guessed: Binance modifies LIMIT orders only and documents no code for another type.
            raise codes.bad_order_type()
        if side != order.side:
            # Guessed: Binance requires the order's own side; its code for another is not documented.
            raise codes.bad_side()
        if quantity == order.orig_qty and price == order.price:
            raise codes.modify_unchanged()
        if order.modifications >= filters.MAX_MODIFICATIONS:
            raise codes.modify_limit_reached()
        filters.check(spec, NewOrder(symbol=spec.symbol, side=order.side, type="LIMIT", quantity=quantity,
                                     price=price, time_in_force=order.time_in_force,
                                     reduce_only=order.reduce_only, good_till_date=order.good_till_date,
                                     position_side=order.position_side), self.market)
        if quantity <= order.executed_qty or (order.time_in_force == "GTX" and self._crosses(spec, side, price)):
            return order, [self._close(order, "CANCELED")]
        added = quantity - order.executed_qty - order.remaining
        if not order.reduces and added > 0:
            # Simplified: only what the amendment adds to the order needs margin.
            self.ledger.check_margin(account, spec, order.side, added, price, order.position_side)
        order.orig_qty, order.price = quantity, price
        order.modifications += 1
        order.update_ms = self.now_ms()
        self._reserve(account, order)
        events: list[Event] = [OrderUpdated(account.name, replace(order), "AMENDMENT", None, order.update_ms)]
        events += self._take(account, spec, order, price)
        if order.is_open:
            self._reserve(account, order)
        return order, events

    def cancel(self, account: Account, symbol: str, order_id: int | None,
               client_order_id: str | None) -> tuple[Order, list[Event]]:
        self.spec(symbol)
        order = self.find(account, symbol, order_id, client_order_id)
        if order is None or not order.is_open:
            raise codes.unknown_order()
        return order, [self._close(order, "CANCELED")]

    def cancel_all(self, account: Account, symbol: str) -> list[Event]:
        self.spec(symbol)
        return [self._close(o, "CANCELED") for o in self.open_orders(account, symbol)]

    # -- configuration -------------------------------------------------------------------------

    def set_leverage(self, account: Account, symbol: str, leverage: int, *,
                     apply: bool = True) -> tuple[int, Decimal, list[Event]]:
        spec = self.spec(symbol)
        if not 1 <= leverage <= spec.max_leverage:
            raise codes.bad_leverage(str(leverage))
        held = sum((abs(account.position(symbol, side).amount) for side in account.sides), ZERO)
        max_notional = spec.max_notional(leverage)
        # Guessed: Binance's code for lowering leverage below what an open position allows.
        if held * self.market.price(symbol) > max_notional:
            raise codes.over_max_position()
        if not apply:  # fault "leverage silently not applied": answer as if done, change nothing
            return leverage, max_notional, []
        account.setting(symbol).leverage = leverage
        for order in self.open_orders(account, symbol):
            self._reserve(account, order)
        return leverage, max_notional, [LeverageChanged(account.name, symbol, leverage, self.now_ms())]

    def set_margin_type(self, account: Account, symbol: str, margin_type: str) -> list[Event]:
        self.spec(symbol)
        if margin_type not in ("ISOLATED", "CROSSED"):
            raise codes.bad_margin_type()
        setting = account.setting(symbol)
        if setting.margin_type == margin_type:
            raise codes.margin_type_unchanged()
        if account.holds(symbol):
            raise codes.margin_type_position()
        if self.open_orders(account, symbol) or self.triggers.open_orders(account, symbol):
            raise codes.margin_type_open_orders()
        setting.margin_type = margin_type
        # Guessed: Binance documents MARGIN_TYPE_CHANGE as an ACCOUNT_UPDATE reason; with no
        # position the event carries the (flat) position in its new margin type.
        return [self.ledger.balance_event(account, "MARGIN_TYPE_CHANGE", [symbol], ZERO)]

    # -- time ----------------------------------------------------------------------------------

    def on_tick(self) -> list[Event]:
        """After prices moved: liquidate isolated positions the price reached, fill resting orders
        the price reached, expire GTD, margin calls."""
        self._observe_prices()
        events: list[Event] = []
        for account in self.book:
            events += self._liquidate_isolated(account)
        now = self.now_ms()
        for order in self._still_open():
            account = self.book[order.account]
            spec = self.market.specs[order.symbol]
            if order.time_in_force == "GTD" and order.good_till_date and order.good_till_date <= now:
                events.append(self._close(order, "EXPIRED"))
                continue
            mark = self.market.price(order.symbol)
            reached = mark <= order.price if order.side == "BUY" else mark >= order.price
            if reached:
                qty = min(order.remaining, self.market.level_qty(order.symbol))
                if order.reduces:
                    qty = min(qty, self._reducible(account, order))
                if qty > 0:
                    events += self._fill(account, spec, order, qty, order.price, maker=True)
                if order.is_open and order.reduces and not self._reducible(account, order):
                    events.append(self._close(order, "EXPIRED"))
        events += self.triggers.on_tick()
        for account in self.book:
            events += self.ledger.margin_call(account)
        return events

    # -- the exchange closing positions itself ---------------------------------------------------

    def auto_deleverage(self, account: Account, symbol: str) -> list[Event]:
        """ADL: the exchange closes the account's positions in ``symbol`` at the mark price."""
        spec = self.spec(symbol)
        if not account.holds(spec.symbol):
            raise ValueError(f"{account.name} holds no {spec.symbol} position to deleverage")
        events: list[Event] = []
        for side in account.sides:
            if account.position(spec.symbol, side).amount:
                events += self._close_by_exchange(account, spec, "MARKET", "adl_autoclose",
                                                  self.market.price(spec.symbol), side)
        return events

    def _liquidate_isolated(self, account: Account) -> list[Event]:
        held = list(dict.fromkeys(s for (s, _), p in account.positions.items()
                                  if p.amount and account.setting(s).isolated))
        if not held:
            return []
        events: list[Event] = []
        for risk in account.risks(self.market, held):
            mark, price = risk.mark, risk.liquidation_price
            reached = mark <= price if risk.amount > 0 else mark >= price
            if risk.amount and price > 0 and reached:
                spec = self.market.specs[risk.symbol]
                # Binance's liquidation client ids are "autoclose-" and a number; the sim uses its time.
                events += self._close_by_exchange(account, spec, "LIQUIDATION", f"autoclose-{self.now_ms()}",
                                                  spec.round_price(price), risk.position_side)
        return events

    def _close_by_exchange(self, account: Account, spec: SymbolSpec, order_type: str, client_id: str,
                           price: Decimal, position_side: str = "BOTH") -> list[Event]:
        """The open orders of the symbol canceled, then the whole position closed at ``price``."""
        events: list[Event] = [self._close(o, "EXPIRED") for o in self.open_orders(account, spec.symbol)]
        position = account.position(spec.symbol, position_side)
        now = self.now_ms()
        order_id = next(self._order_ids)
        order = Order(order_id=order_id, client_order_id=client_id, account=account.name, symbol=spec.symbol,
                      side="SELL" if position.amount > 0 else "BUY", type=order_type, time_in_force="IOC",
                      orig_qty=abs(position.amount), price=price, reduce_only=position_side == "BOTH",
                      time_ms=now, update_ms=now, position_side=position_side)
        self.orders[order_id] = order
        events.append(OrderUpdated(account.name, replace(order), "NEW", None, now))
        # Simplified: the position closes at ``price`` and the wallet keeps what is left of its margin
        # (Binance passes that to its insurance fund).
        trade, balance = self._fill(account, spec, order, order.orig_qty, price, maker=False)
        return events + [replace(trade, exec_type="CALCULATED"), balance]

    # -- internals -----------------------------------------------------------------------------

    def _check(self, account: Account, spec: SymbolSpec, req: NewOrder) -> Decimal:
        """The symbol's filters, then what the account allows; returns the reference price."""
        price = filters.check(spec, req, self.market)
        if req.position_side not in POSITION_SIDES:
            raise codes.bad_value("positionSide")
        if (req.position_side == "BOTH") == account.hedge:
            raise codes.position_side_mismatch()
        if account.hedge and req.reduce_only:
            raise codes.not_required("reduceOnly")  # Binance: reduceOnly cannot be sent in hedge mode
        position = account.position(spec.symbol, req.position_side).amount
        closing = (req.position_side, req.side) in (("LONG", "SELL"), ("SHORT", "BUY"))
        if (req.reduce_only or closing) and (position == 0 or (position > 0) == (req.side == "BUY")):
            raise codes.reduce_only_rejected()
        if len(self.open_orders(account, spec.symbol)) >= filters.MAX_OPEN_ORDERS:
            raise codes.max_open_orders()
        if not (req.reduce_only or closing):
            self.ledger.check_margin(account, spec, req.side, req.quantity, price, req.position_side)
        return price

    def _crosses(self, spec: SymbolSpec, side: str, price: Decimal) -> bool:
        best = self.market.best(spec.symbol, side)
        return price >= best if side == "BUY" else price <= best

    def _fillable(self, spec: SymbolSpec, side: str, limit: Decimal | None) -> Decimal:
        if limit is None or not self._crosses(spec, side, limit):
            return ZERO
        best, gap = self.market.best(spec.symbol, side), self.market.level_gap(spec.symbol)
        levels = int(abs(limit - best) / gap) + 1
        return levels * self.market.level_qty(spec.symbol)

    def _reducible(self, account: Account, order: Order) -> Decimal:
        position = account.position(order.symbol, order.position_side).amount
        if position == 0 or (position > 0) == (order.side == "BUY"):
            return ZERO
        return abs(position)

    def _take(self, account: Account, spec: SymbolSpec, order: Order,
              limit: Decimal | None) -> list[Event]:
        """Walk the synthetic book from the best level, up to `limit` for a limit order."""
        events: list[Event] = []
        price = self.market.best(spec.symbol, order.side)
        gap, level = self.market.level_gap(spec.symbol), self.market.level_qty(spec.symbol)
        while order.remaining > 0:
            if limit is not None and (price > limit if order.side == "BUY" else price < limit):
                break
            qty = min(order.remaining, level)
            if order.reduces:
                qty = min(qty, self._reducible(account, order))
                if qty == 0:
                    break
            events += self._fill(account, spec, order, qty, price, maker=False)
            price = price + gap if order.side == "BUY" else max(spec.tick, price - gap)
        return events


    def _fill(self, account: Account, spec: SymbolSpec, order: Order, qty: Decimal,
              price: Decimal, *, maker: bool) -> list[Event]:
        now = self.now_ms()
        realized, commission = self.ledger.settle(account, spec.symbol, order.side, qty, price, maker=maker, now=now,
                                                  position_side=order.position_side)
        order.executed_qty += qty
        order.cum_quote += qty * price
        order.update_ms = now
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        fill = Fill(next(self._trade_ids), order.order_id, spec.symbol, order.side, price, qty,
                    commission, realized, maker, now, order.position_side)
        self.trades[account.name].append(fill)
        self.tickers.trade(fill)
        self.ledger.record_income(account, fill)
        if order.reserved:
            self._reserve(account, order)
        # Guessed order: Binance's stream usually shows the trade before the balance change.
        return [OrderUpdated(account.name, replace(order), "TRADE", fill, now),
                self.ledger.balance_event(account, "ORDER", [spec.symbol], ZERO)]

    def _observe_prices(self) -> None:
        now = self.now_ms()
        for symbol in self.market.specs:
            self.tickers.observe(symbol, self.market.price(symbol), now)

    def _reserve(self, account: Account, order: Order) -> None:
        """Recompute the margin and notional an open order holds, and the account's sums."""
        self.ledger.reserve(account, order, self.open_orders(account, order.symbol))

    def _close(self, order: Order, status: str) -> OrderUpdated:
        order.status = status
        order.update_ms = self.now_ms()
        order.reserved = ZERO
        account = self.book[order.account]
        self.ledger.resum(account, order.symbol, self.open_orders(account, order.symbol))
        return OrderUpdated(order.account, replace(order), status, None, order.update_ms)
