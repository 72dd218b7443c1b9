"""Binance's symbol filters on the simulated exchange: what an order must satisfy before it reaches
the book (PRICE_FILTER, LOT_SIZE, MARKET_LOT_SIZE, PERCENT_PRICE, MIN_NOTIONAL, MAX_NUM_ORDERS).

The checks run in the order Binance's error codes suggest, so that an order breaking two rules
gets the code Binance would send. What depends on the account (reduce-only, open orders, margin)
is checked by the matching engine after these.
"""

from __future__ import annotations

from decimal import Decimal

from controller.sim import codes
from controller.sim.market import Market, SymbolSpec
from controller.sim.orders import NewOrder

PERCENT_PRICE_UP = Decimal("1.05")
PERCENT_PRICE_DOWN = Decimal("0.95")
MAX_OPEN_ORDERS = 200
MAX_MODIFICATIONS = 10_000   # exchangeInfo's maxMoveOrderLimit: amendments one order may take
ALGO_TYPES = frozenset({"STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"})


def check(spec: SymbolSpec, req: NewOrder, market: Market) -> Decimal:
    """Raise Binance's error for the first filter ``req`` breaks; return its reference price (the
    limit price, or the best level a market order would take first)."""
    if req.side not in ("BUY", "SELL"):
        raise codes.bad_side()
    if req.type in ALGO_TYPES:
        raise codes.use_algo_endpoint()
    if req.type not in ("MARKET", "LIMIT"):
        raise codes.bad_order_type()
    if req.quantity is None:
        raise codes.mandatory("quantity")
    qty = req.quantity
    if qty <= 0:
        raise codes.qty_not_positive()
    if places(qty) > spec.qty_precision:
        raise codes.bad_precision()
    if qty % spec.step:
        raise codes.qty_not_on_step()
    if qty < spec.min_qty:
        raise codes.qty_below_min()
    if qty > (spec.market_max_qty if req.type == "MARKET" else spec.max_qty):
        raise codes.qty_above_max()
    if req.type == "LIMIT":
        price = _check_price(spec, req, market.price(spec.symbol))
    else:
        if req.price is not None:
            raise codes.not_required("price")
        price = market.best(spec.symbol, req.side)
    if not req.reduce_only and qty * price < spec.min_notional:
        raise codes.min_notional(plain(spec.min_notional))
    return price


def _check_price(spec: SymbolSpec, req: NewOrder, mark: Decimal) -> Decimal:
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
    if places(price) > spec.price_precision:
        raise codes.bad_precision()
    if price % spec.tick:
        raise codes.price_not_on_tick()
    if price < spec.min_price:
        raise codes.price_below_min()
    if req.side == "BUY" and price > mark * PERCENT_PRICE_UP:
        raise codes.price_above_band(plain(spec.round_price(mark * PERCENT_PRICE_UP)))
    if req.side == "SELL" and price < mark * PERCENT_PRICE_DOWN:
        raise codes.price_below_band(plain(spec.round_price(mark * PERCENT_PRICE_DOWN)))
    return price


def places(value: Decimal) -> int:
    """Decimal places ``value`` needs: ``0.0150`` needs 3."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


def plain(value: Decimal) -> str:
    """``value`` as Binance quotes it in a message: no exponent, no trailing zeros."""
    return format(value.normalize(), "f")
