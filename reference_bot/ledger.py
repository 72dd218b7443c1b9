"""What the bot holds: its orders (queued, in flight, open) and its position per symbol.

The exchange is the truth. Positions are absolute amounts from ACCOUNT_UPDATE and REST; order
outcomes come from ORDER_TRADE_UPDATE, or from a REST look-up when the stream missed them.
Between an order's fill and the ACCOUNT_UPDATE that moves the position, the filled quantity
is kept as "unconfirmed" so that margin is never under-counted in that gap. Synchronous and
free of I/O: the bot feeds it what it learns and asks it questions.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from decimal import Decimal

from reference_bot.config import Strategy
from reference_bot.payloads import OrderEvent

ZERO = Decimal(0)

ENTRY = "entry"    # opens or adds to a position; holds margin while open
EXIT = "exit"      # reduce-only close of a position
DEFECT = "defect"  # sent by a deliberate defect; holds no margin in the bot's books

TERMINAL = {"FILLED": "filled", "CANCELED": "canceled", "EXPIRED": "expired", "EXPIRED_IN_MATCH": "expired",
            "REJECTED": "rejected"}
"""Binance order statuses that end an order, and the outcome each counts as."""


@dataclass
class TrackedOrder:
    """One order of this bot, from the moment it is queued until it ends."""

    client_order_id: str
    symbol: str
    side: str
    quantity: Decimal
    price: Decimal            # the limit price; for a market order the mark price it was sized at
    purpose: str
    created_at: float
    order_id: int | None = None  # set when the exchange acknowledged it
    filled: Decimal = ZERO
    cancel_requested: bool = False

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def direction(self) -> int:
        return 1 if self.side == "BUY" else -1


class Ledger:
    """Orders by client id, positions and marks by symbol, margin by bucket."""

    def __init__(self, config: Strategy, *, remember_finished: int = 10_000) -> None:
        self.config = config
        self.capital = ZERO
        self.marks: dict[str, Decimal] = {}
        self.orders: dict[str, TrackedOrder] = {}
        self._positions = {symbol: ZERO for symbol in config.symbols}
        self._unconfirmed = {symbol: ZERO for symbol in config.symbols}
        self._changes = {symbol: 0 for symbol in config.symbols}  # bumps on every position-moving event
        self._finished: OrderedDict[str, str] = OrderedDict()
        self._remember = remember_finished
        self._holding: set[str] = set()

    # --- orders ---------------------------------------------------------------------------------

    def add(self, order: TrackedOrder) -> None:
        self.orders[order.client_order_id] = order

    def acknowledge(self, client_order_id: str, order_id: int) -> None:
        order = self.orders.get(client_order_id)
        if order is not None and order.order_id is None:
            order.order_id = order_id

    def finish(self, client_order_id: str, outcome: str) -> TrackedOrder | None:
        """End an order with ``outcome``; None if it had ended already (each order counts once)."""
        order = self.orders.pop(client_order_id, None)
        if order is None:
            return None
        self._finished[client_order_id] = outcome
        while len(self._finished) > self._remember:
            self._finished.popitem(last=False)
        return order

    def is_finished(self, client_order_id: str) -> bool:
        return client_order_id in self._finished

    def on_order_update(self, update: OrderEvent) -> tuple[TrackedOrder, str] | None:
        """Apply an ORDER_TRADE_UPDATE; returns (order, outcome) when it ends the order.

        Updates of orders that ended already (a duplicate, a late NEW after FILLED) and of
        orders this bot did not send are ignored.
        """
        order = self.orders.get(update.client_order_id)
        if order is None:
            return None
        if order.order_id is None:
            order.order_id = update.order_id
        delta = update.filled_quantity - order.filled
        if delta > 0:
            order.filled = update.filled_quantity
            if order.symbol in self._unconfirmed:
                self._unconfirmed[order.symbol] += delta * order.direction
                self._changes[order.symbol] += 1
        outcome = TERMINAL.get(update.status)
        if outcome is None:
            return None
        self.finish(order.client_order_id, outcome)
        return order, outcome

    def request_cancel(self, symbol: str) -> list[TrackedOrder]:
        """Mark the symbol's acknowledged orders as asked to cancel; returns them."""
        marked = [o for o in self.orders_of(symbol) if o.order_id is not None and not o.cancel_requested]
        for order in marked:
            order.cancel_requested = True
        return marked

    def orders_of(self, symbol: str, purpose: str | None = None) -> list[TrackedOrder]:
        return [o for o in self.orders.values() if o.symbol == symbol and (purpose is None or o.purpose == purpose)]

    # --- positions ------------------------------------------------------------------------------

    def position(self, symbol: str) -> Decimal:
        """Signed position amount, fills not yet confirmed by an ACCOUNT_UPDATE included."""
        return self._positions.get(symbol, ZERO) + self._unconfirmed.get(symbol, ZERO)

    def position_version(self, symbol: str) -> int:
        """Changes with every event that moves the symbol's position (see `set_position`)."""
        return self._changes.get(symbol, 0)

    def set_position(self, symbol: str, amount: Decimal, *, unless_changed_since: int | None = None) -> None:
        """The exchange's absolute position. A REST snapshot passes the version it was requested
        at, and is dropped if a stream event moved the position while the request was out."""
        if symbol not in self._positions:
            return
        if unless_changed_since is not None and self._changes[symbol] != unless_changed_since:
            return
        self._positions[symbol] = amount
        self._unconfirmed[symbol] = ZERO
        self._changes[symbol] += 1

    # --- margin ---------------------------------------------------------------------------------

    def margin(self, symbol: str) -> Decimal:
        """Margin the symbol commits: position at mark plus open and queued entries, at the
        configured leverage (the exposure the strategy meant, expressed in capital)."""
        leverage = self.config.symbols[symbol].leverage
        mark = self.marks.get(symbol, ZERO)
        exposure = abs(self.position(symbol)) * mark
        exposure += sum((o.remaining * o.price for o in self.orders_of(symbol, ENTRY)), ZERO)
        return exposure / leverage

    def bucket_margin(self, bucket: str) -> Decimal:
        return sum((self.margin(s) for s in self.config.buckets[bucket].symbols), ZERO)

    def usage(self, bucket: str) -> Decimal:
        """The bucket's margin as a share of capital (compare with its allocation)."""
        return self.bucket_margin(bucket) / self.capital if self.capital > 0 else ZERO

    def holding(self, symbol: str) -> bool:
        """True while the symbol has a position or an entry or exit order alive."""
        return self.position(symbol) != 0 or any(o.purpose != DEFECT for o in self.orders_of(symbol))

    def lock_changes(self) -> list[tuple[str, bool]]:
        """Symbols that started (True: lock) or stopped (False: unlock) holding margin since the last call."""
        now = {symbol for symbol in self.config.symbols if self.holding(symbol)}
        changes = [(s, True) for s in sorted(now - self._holding)] + [(s, False) for s in sorted(self._holding - now)]
        self._holding = now
        return changes
