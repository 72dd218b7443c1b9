"""Binance USD-M futures payloads into the bot's own typed records: raw dicts stop here.

Only what the bot trades on is read: trading rules, mark prices, positions, open orders,
applied leverage, the wallet balance, and three user-data events. Money and quantities are
`Decimal`, parsed from Binance's decimal strings. A payload that is not as documented raises
`PayloadError`; the bot logs it and goes on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any


class PayloadError(ValueError):
    """A payload that is not what Binance documents."""


@dataclass(frozen=True, slots=True)
class TradingRules:
    """exchangeInfo's PRICE_FILTER, LOT_SIZE and MIN_NOTIONAL of one symbol."""

    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal

    def round_quantity(self, quantity: Decimal) -> Decimal:
        """Down to a multiple of the step size (never up: sizing must not exceed its limit)."""
        return (quantity // self.step_size) * self.step_size

    def round_price(self, price: Decimal) -> Decimal:
        return (price // self.tick_size) * self.tick_size


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    amount: Decimal        # signed: negative is short
    mark_price: Decimal


@dataclass(frozen=True, slots=True)
class OpenOrder:
    symbol: str
    client_order_id: str
    quantity: Decimal
    filled_quantity: Decimal
    price: Decimal
    reduce_only: bool


# --- user-data events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderEvent:
    """ORDER_TRADE_UPDATE: an order of the account changed state (NEW, FILLED, CANCELED, ...)."""

    symbol: str
    order_id: int
    client_order_id: str
    status: str
    filled_quantity: Decimal  # cumulative


@dataclass(frozen=True, slots=True)
class PositionEvent:
    """One position of an ACCOUNT_UPDATE: the symbol's absolute amount now."""

    symbol: str
    amount: Decimal


@dataclass(frozen=True, slots=True)
class LeverageEvent:
    """ACCOUNT_CONFIG_UPDATE: the symbol's leverage is now ``leverage`` on the exchange."""

    symbol: str
    leverage: int


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """The user-data stream connected, or lost its connection (``reason``)."""

    connected: bool
    reason: str


Event = OrderEvent | PositionEvent | LeverageEvent | StreamEvent


def stream_events(raw: Any) -> list[Event]:
    """The events of one user-data message; [] for kinds the bot does not use."""
    kind = _get(raw, "e")
    try:
        if kind == "ORDER_TRADE_UPDATE":
            o = _get(raw, "o")
            return [OrderEvent(_get(o, "s"), _int(_get(o, "i")), _get(o, "c"), _get(o, "X"), _dec(_get(o, "z")))]
        if kind == "ACCOUNT_UPDATE":
            return [PositionEvent(_get(p, "s"), _dec(_get(p, "pa"))) for p in _list(_get(_get(raw, "a"), "P"))]
        if kind == "ACCOUNT_CONFIG_UPDATE" and "ac" in raw:  # "ai" (multi-assets mode) carries no leverage
            ac = _get(raw, "ac")
            return [LeverageEvent(_get(ac, "s"), _int(_get(ac, "l")))]
    except PayloadError as exc:
        raise PayloadError(f"{kind}: {exc}") from None
    return []


# --- REST answers ---------------------------------------------------------------------------------


def trading_rules(raw: Any) -> dict[str, TradingRules]:
    """GET /fapi/v1/exchangeInfo."""
    found = {}
    for symbol in _list(_get(raw, "symbols")):
        filters = {f.get("filterType"): f for f in _list(_get(symbol, "filters"))}
        name = _get(symbol, "symbol")
        try:
            found[name] = TradingRules(name, _dec(_get(filters["PRICE_FILTER"], "tickSize")),
                                       _dec(_get(filters["LOT_SIZE"], "stepSize")),
                                       _dec(_get(filters["LOT_SIZE"], "minQty")),
                                       _dec(_get(filters["MIN_NOTIONAL"], "notional")))
        except KeyError as exc:
            raise PayloadError(f"{name}: no {exc.args[0]} filter") from None
    return found


def mark_prices(raw: Any) -> dict[str, Decimal]:
    """GET /fapi/v1/premiumIndex (a list without a symbol, one object with one)."""
    return {_get(p, "symbol"): _dec(_get(p, "markPrice")) for p in (raw if isinstance(raw, list) else [raw])}


def positions(raw: Any) -> dict[str, Position]:
    """GET /fapi/v3/positionRisk (one-way mode: one entry per symbol)."""
    return {_get(p, "symbol"): Position(_get(p, "symbol"), _dec(_get(p, "positionAmt")), _dec(_get(p, "markPrice")))
            for p in _list(raw)}


def leverages(raw: Any) -> dict[str, int]:
    """GET /fapi/v1/symbolConfig: the leverage the exchange applies to each symbol."""
    return {_get(s, "symbol"): _int(_get(s, "leverage")) for s in _list(raw)}


def open_orders(raw: Any) -> list[OpenOrder]:
    """GET /fapi/v1/openOrders."""
    return [OpenOrder(_get(o, "symbol"), _get(o, "clientOrderId"), _dec(_get(o, "origQty")),
                      _dec(_get(o, "executedQty")), _dec(_get(o, "price")), bool(_get(o, "reduceOnly")))
            for o in _list(raw)]


def wallet_balance(raw: Any) -> Decimal:
    """GET /fapi/v2/account: the account's capital, as the bot sizes against it."""
    return _dec(_get(raw, "totalWalletBalance"))


def order_status(raw: Any) -> str:
    """GET /fapi/v1/order."""
    return str(_get(raw, "status"))


def order_id(raw: Any) -> int:
    """POST /fapi/v1/order's acknowledgement."""
    return _int(_get(raw, "orderId"))


def leverage(raw: Any) -> int:
    """POST /fapi/v1/leverage's answer: the leverage the exchange says it set."""
    return _int(_get(raw, "leverage"))


# --- fields ---------------------------------------------------------------------------------------


def _get(raw: Any, key: str) -> Any:
    if not isinstance(raw, Mapping) or key not in raw:
        raise PayloadError(f"missing field {key!r}")
    return raw[key]


def _list(raw: Any) -> list[Any]:
    if not isinstance(raw, list):
        raise PayloadError(f"expected a list, got {type(raw).__name__}")
    return raw


def _dec(value: Any) -> Decimal:
    if isinstance(value, (bool, float)):  # Binance sends money as text; a float has lost digits already
        raise PayloadError(f"expected a decimal string, got {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise PayloadError(f"expected a decimal, got {value!r}") from None


def _int(value: Any) -> int:
    if isinstance(value, bool):
        raise PayloadError(f"expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise PayloadError(f"expected an integer, got {value!r}") from None
