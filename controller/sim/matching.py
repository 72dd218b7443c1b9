"""Orders on the simulated exchange: validation by Binance's filters, matching, fills and margin.

The book is synthetic: around the mark price there are levels one basis point apart, each
holding `Market.level_qty` (about 200 000 USDT). A taker walks the levels (so a large order
fills in several trades, PARTIALLY_FILLED then FILLED); a resting limit order fills at its price,
one level's quantity per tick, once the mark price reaches it. Synchronous: the server calls it
between awaits, so no two requests interleave inside it.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal

from controller.sim import codes
from controller.sim.accounts import ZERO, Account, AccountBook
from controller.sim.events import BalanceChanged, Event, LeverageChanged, MarginCalled, OrderUpdated
from controller.sim.market import Market, SymbolSpec

D = Decimal
TAKER_FEE = D("0.0005")   # Binance's default (VIP 0) USD-M rates
MAKER_FEE = D("0.0002")
PERCENT_PRICE_UP = D("1.05")
PERCENT_PRICE_DOWN = D("0.95")
MAX_OPEN_ORDERS = 200
# Guessed: Binance does not publish the ratio at which MARGIN_CALL is pushed; 80 % is its
# app's "margin ratio high" warning level.
MARGIN_CALL_RATIO = D("0.8")
OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")
_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
_ALGO_TYPES = {"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"}


@dataclass(frozen=True)
class NewOrder:
    """A parsed POST /fapi/v1/order."""

    symbol: str
    side: str
    type: str
    quantity: Decimal | None
    price: Decimal | None = None
    time_in_force: str | None = None
    reduce_only: bool = False
    client_order_id: str | None = None
    good_till_date: int = 0


@dataclass
class Order:
    order_id: int
    client_order_id: str
    account: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    orig_qty: Decimal
    price: Decimal
    reduce_only: bool
    time_ms: int
    update_ms: int
    status: str = "NEW"
    executed_qty: Decimal = ZERO
    cum_quote: Decimal = ZERO
    good_till_date: int = 0
    reserved: Decimal = ZERO     # initial margin this order holds while open

    @property
    def remaining(self) -> Decimal:
        return self.orig_qty - self.executed_qty

    @property
    def avg_price(self) -> Decimal:
        return self.cum_quote / self.executed_qty if self.executed_qty else ZERO

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES


@dataclass(frozen=True)
class Fill:
    trade_id: int
    order_id: int
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    realized_pnl: Decimal
    maker: bool
    time_ms: int

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty


@dataclass(frozen=True)
class Income:
    tran_id: int
    symbol: str
    type: str        # REALIZED_PNL | COMMISSION
    amount: Decimal
    trade_id: int
    time_ms: int


class MatchingEngine:
    """Accepts, matches and cancels orders; changes leverage and margin type; values accounts."""

    def __init__(self, market: Market, book: AccountBook, now_ms: Callable[[], int]) -> None:
        self.market = market
        self.book = book
        self.now_ms = now_ms
        self.orders: dict[int, Order] = {}
        self._open: dict[int, Order] = {}  # the open ones, in placing order: a long run's ticks stay cheap
        self.trades: dict[str, list[Fill]] = {a.name: [] for a in book}
        self.income: dict[str, list[Income]] = {a.name: [] for a in book}
        self._order_ids = itertools.count(4_000_000_001)
        self._trade_ids = itertools.count(300_000_001)
        self._tran_ids = itertools.count(9_000_000_001)

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
        spec = self.spec(req.symbol)
        client_id = req.client_order_id
        if client_id is not None:
            if not _CLIENT_ID.match(client_id):
                raise codes.bad_client_order_id()
            # Binance: newClientOrderId is "a unique id among open orders".
            if any(o.client_order_id == client_id for o in self.open_orders(account)):
                raise codes.duplicate_client_order_id()
        price = self._check(account, spec, req)
        now = self.now_ms()
        tif = req.time_in_force or "GTC"
        order_id = next(self._order_ids)
        order = Order(
            order_id=order_id, client_order_id=client_id or f"sim-{order_id}", account=account.name,
            symbol=spec.symbol, side=req.side, type=req.type, time_in_force=tif,
            orig_qty=req.quantity or ZERO, price=req.price or ZERO, reduce_only=req.reduce_only,
            time_ms=now, update_ms=now, good_till_date=req.good_till_date,
        )
        if req.type == "LIMIT" and tif == "GTX" and self._crosses(spec, order.side, order.price):
            raise codes.post_only_rejected()
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
            done_reducing = order.reduce_only and not self._reducible(account, order)
            if req.type == "MARKET" or tif in ("IOC", "FOK") or done_reducing:
                events.append(self._close(order, "EXPIRED"))
            else:
                self._reserve(account, order)
        return accepted, order, events

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
        position = account.position(symbol)
        max_notional = spec.max_notional(leverage)
        # Guessed: Binance's code for lowering leverage below what an open position allows.
        if abs(position.amount) * self.market.price(symbol) > max_notional:
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
        if account.position(symbol).amount:
            raise codes.margin_type_position()
        if self.open_orders(account, symbol):
            raise codes.margin_type_open_orders()
        setting.margin_type = margin_type
        # Guessed: Binance documents MARGIN_TYPE_CHANGE as an ACCOUNT_UPDATE reason; with no
        # position the event carries the (flat) position in its new margin type.
        return [self._balance_event(account, "MARGIN_TYPE_CHANGE", [symbol], ZERO)]

    # -- time ----------------------------------------------------------------------------------

    def on_tick(self) -> list[Event]:
        """After prices moved: fill resting orders the price reached, expire GTD, margin calls."""
        events: list[Event] = []
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
                if order.reduce_only:
                    qty = min(qty, self._reducible(account, order))
                if qty > 0:
                    events += self._fill(account, spec, order, qty, order.price, maker=True)
                if order.is_open and order.reduce_only and not self._reducible(account, order):
                    events.append(self._close(order, "EXPIRED"))
        for account in self.book:
            events += self._margin_call(account)
        return events

    # -- internals -----------------------------------------------------------------------------

    def _check(self, account: Account, spec: SymbolSpec, req: NewOrder) -> Decimal:
        """Binance's filters, in the order its error codes suggest; returns the reference price."""
        if req.side not in ("BUY", "SELL"):
            raise codes.bad_side()
        if req.type in _ALGO_TYPES:
            raise codes.use_algo_endpoint()
        if req.type not in ("MARKET", "LIMIT"):
            raise codes.bad_order_type()
        if req.quantity is None:
            raise codes.mandatory("quantity")
        qty = req.quantity
        if qty <= 0:
            raise codes.qty_not_positive()
        if _places(qty) > spec.qty_precision:
            raise codes.bad_precision()
        if qty % spec.step:
            raise codes.qty_not_on_step()
        if qty < spec.min_qty:
            raise codes.qty_below_min()
        if qty > (spec.market_max_qty if req.type == "MARKET" else spec.max_qty):
            raise codes.qty_above_max()
        mark = self.market.price(spec.symbol)
        if req.type == "LIMIT":
            price = self._check_price(spec, req, mark)
        else:
            if req.price is not None:
                raise codes.not_required("price")
            price = self.market.best(spec.symbol, req.side)
        if not req.reduce_only and qty * price < spec.min_notional:
            raise codes.min_notional(_plain(spec.min_notional))
        position = account.position(spec.symbol).amount
        if req.reduce_only and (position == 0 or (position > 0) == (req.side == "BUY")):
            raise codes.reduce_only_rejected()
        if len(self.open_orders(account, spec.symbol)) >= MAX_OPEN_ORDERS:
            raise codes.max_open_orders()
        if not req.reduce_only:
            self._check_margin(account, spec, req.side, qty, price)
        return price

    def _check_price(self, spec: SymbolSpec, req: NewOrder, mark: Decimal) -> Decimal:
        if req.price is None:
            raise codes.mandatory("price")
        if req.time_in_force is None:
            raise codes.mandatory("timeInForce")
        if req.time_in_force not in ("GTC", "IOC", "FOK", "GTX", "GTD"):
            raise codes.bad_time_in_force()
        if req.time_in_force == "GTD" and not req.good_till_date:
            raise codes.mandatory("goodTillDate")
        price = req.price
        if price <= 0:
            raise codes.price_not_positive()
        if _places(price) > spec.price_precision:
            raise codes.bad_precision()
        if price % spec.tick:
            raise codes.price_not_on_tick()
        if price < spec.min_price:
            raise codes.price_below_min()
        if req.side == "BUY" and price > mark * PERCENT_PRICE_UP:
            raise codes.price_above_band(_plain(spec.round_price(mark * PERCENT_PRICE_UP)))
        if req.side == "SELL" and price < mark * PERCENT_PRICE_DOWN:
            raise codes.price_below_band(_plain(spec.round_price(mark * PERCENT_PRICE_DOWN)))
        return price

    def _check_margin(self, account: Account, spec: SymbolSpec, side: str, qty: Decimal,
                      price: Decimal) -> None:
        position = account.position(spec.symbol).amount
        signed = qty if side == "BUY" else -qty
        opposite = position != 0 and (position > 0) != (signed > 0)
        increase = max(ZERO, qty - abs(position)) if opposite else qty
        if increase == 0:
            return
        leverage = account.setting(spec.symbol).leverage
        resting = max(account.open_buy.get(spec.symbol, ZERO), account.open_sell.get(spec.symbol, ZERO))
        if abs(position + signed) * price + resting > spec.max_notional(leverage):
            raise codes.over_max_position()
        required = increase * price / leverage + increase * price * TAKER_FEE
        if required > account.totals(self.market).available:
            raise codes.insufficient_margin()

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
        position = account.position(order.symbol).amount
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
            if order.reduce_only:
                qty = min(qty, self._reducible(account, order))
                if qty == 0:
                    break
            events += self._fill(account, spec, order, qty, price, maker=False)
            price = price + gap if order.side == "BUY" else max(spec.tick, price - gap)
        return events

    def _fill(self, account: Account, spec: SymbolSpec, order: Order, qty: Decimal,
              price: Decimal, *, maker: bool) -> list[Event]:
        now = self.now_ms()
        realized = self._apply_to_position(account, spec, order.side, qty, price, now)
        commission = (qty * price * (MAKER_FEE if maker else TAKER_FEE)).quantize(D("0.00000001"))
        account.wallet += realized - commission
        account.update_ms = now
        order.executed_qty += qty
        order.cum_quote += qty * price
        order.update_ms = now
        order.status = "FILLED" if order.remaining == 0 else "PARTIALLY_FILLED"
        fill = Fill(next(self._trade_ids), order.order_id, spec.symbol, order.side, price, qty,
                    commission, realized, maker, now)
        self.trades[account.name].append(fill)
        self._record_income(account, fill)
        if order.reserved:
            self._reserve(account, order)
        # Guessed order: Binance's stream usually shows the trade before the balance change.
        return [OrderUpdated(account.name, replace(order), "TRADE", fill, now),
                self._balance_event(account, "ORDER", [spec.symbol], ZERO)]

    def _apply_to_position(self, account: Account, spec: SymbolSpec, side: str, qty: Decimal,
                           price: Decimal, now: int) -> Decimal:
        """One-way position accounting; returns the realised PnL of the closed part."""
        pos = account.position(spec.symbol)
        setting = account.setting(spec.symbol)
        signed = qty if side == "BUY" else -qty
        realized = ZERO
        if pos.amount == 0 or (pos.amount > 0) == (signed > 0):
            size = abs(pos.amount) + qty
            pos.entry_price = (abs(pos.amount) * pos.entry_price + qty * price) / size
            pos.amount += signed
            if setting.isolated:
                pos.isolated_wallet += qty * price / setting.leverage
        else:
            closing = min(qty, abs(pos.amount))
            direction = D(1) if pos.amount > 0 else D(-1)
            realized = closing * (price - pos.entry_price) * direction
            if setting.isolated:
                pos.isolated_wallet -= pos.isolated_wallet * closing / abs(pos.amount)
            pos.amount += signed
            if pos.amount == 0:
                pos.entry_price = ZERO
                pos.isolated_wallet = ZERO
            elif (pos.amount > 0) != (direction > 0):  # flipped: the rest opens at this price
                pos.entry_price = price
                if setting.isolated:
                    pos.isolated_wallet = abs(pos.amount) * price / setting.leverage
        pos.realized += realized
        pos.update_ms = now
        return realized

    def _record_income(self, account: Account, fill: Fill) -> None:
        rows = self.income[account.name]
        if fill.realized_pnl:
            rows.append(Income(next(self._tran_ids), fill.symbol, "REALIZED_PNL", fill.realized_pnl,
                               fill.trade_id, fill.time_ms))
        rows.append(Income(next(self._tran_ids), fill.symbol, "COMMISSION", -fill.commission,
                           fill.trade_id, fill.time_ms))

    def _reserve(self, account: Account, order: Order) -> None:
        """Recompute the margin and notional an open order holds, and the account's sums."""
        leverage = account.setting(order.symbol).leverage
        order.reserved = ZERO if order.reduce_only or not order.is_open else \
            order.remaining * order.price / leverage
        self._resum(account, order.symbol)

    def _resum(self, account: Account, symbol: str) -> None:
        orders = self.open_orders(account, symbol)
        account.open_margin[symbol] = sum((o.reserved for o in orders), ZERO)
        account.open_buy[symbol] = sum((o.remaining * o.price for o in orders if o.side == "BUY"), ZERO)
        account.open_sell[symbol] = sum((o.remaining * o.price for o in orders if o.side == "SELL"), ZERO)

    def _close(self, order: Order, status: str) -> OrderUpdated:
        order.status = status
        order.update_ms = self.now_ms()
        order.reserved = ZERO
        self._resum(self.book[order.account], order.symbol)
        return OrderUpdated(order.account, replace(order), status, None, order.update_ms)

    def _balance_event(self, account: Account, reason: str, symbols: list[str],
                       change: Decimal) -> BalanceChanged:
        totals = account.totals(self.market)
        return BalanceChanged(account.name, reason, account.wallet, totals.cross_wallet, change,
                              tuple(account.risks(self.market, symbols)), self.now_ms())

    def _margin_call(self, account: Account) -> list[Event]:
        totals = account.totals(self.market)
        if totals.maint_margin == 0 or totals.margin_ratio < MARGIN_CALL_RATIO:
            account.margin_called = False
            return []
        if account.margin_called:
            return []
        account.margin_called = True
        held = [s for s, p in account.positions.items() if p.amount and not account.setting(s).isolated]
        return [MarginCalled(account.name, totals.cross_wallet,
                             tuple(account.risks(self.market, held)), self.now_ms())]


def _places(d: Decimal) -> int:
    exponent = d.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _plain(d: Decimal) -> str:
    return format(d.normalize(), "f")
