"""Orders and their trades on the simulated exchange, as records: what a request asks for, the
order as the book holds it, and each fill.

Plain data, so that events, the wire format and the engine can share them without importing
one another.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from controller.sim.accounts import ZERO

OPEN_STATUSES = ("NEW", "PARTIALLY_FILLED")


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
    position_side: str = "BOTH"
    orig_type: str | None = None   # the algo order type that placed it (STOP_MARKET...), if any


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
    modifications: int = 0       # PUT /fapi/v1/order amendments so far (Binance caps them)
    orig_type: str = ""          # Binance's origType: the algo type that placed it, else its type
    position_side: str = "BOTH"  # BOTH in one-way mode; LONG or SHORT in hedge mode

    @property
    def reduces(self) -> bool:
        """Only reduces a position: reduce-only, or a hedge-mode order closing its side (SELL LONG,
        BUY SHORT), which Binance bounds by the position as it does reduce-only."""
        closing = (self.position_side, self.side) in (("LONG", "SELL"), ("SHORT", "BUY"))
        return self.reduce_only or closing

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
    position_side: str = "BOTH"

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty
