"""Raw Binance payloads into typed events and snapshots. Raw dicts stop here.

Field names follow Binance's USD-M futures user-data stream and REST documentation (checked
against the models of Binance's own SDK, binance-sdk-derivatives-trading-usds-futures).
Anything that does not parse raises `PayloadError`, which the stream logs with the raw text
and counts; it never ends the stream. Each parser below is `_malformed_refused`: a value of the
wrong type anywhere in a payload (a list where an object belongs, null for an id) is a
`PayloadError` too, not the TypeError or AttributeError Python would raise on it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, ParamSpec, TypeVar

from controller.exchange.events import (
    AccountSnapshot,
    AccountUpdate,
    Balance,
    ExchangeEvent,
    Fill,
    LeverageBracket,
    LeverageChanged,
    MarginCall,
    MarginCallPosition,
    MultiAssetsChanged,
    OpenOrder,
    OrderUpdate,
    Position,
    PositionChange,
    SubAccountBalance,
    SymbolFilters,
    SymbolSettings,
)


class PayloadError(ValueError):
    """A payload that is not what Binance documents."""


P = ParamSpec("P")
R = TypeVar("R")


def _malformed_refused(parser: Callable[P, R]) -> Callable[P, R]:
    """``parser``, with a payload of the wrong shape refused as a `PayloadError` naming what broke."""

    @functools.wraps(parser)
    def parsing(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return parser(*args, **kwargs)
        except PayloadError:
            raise
        except (TypeError, AttributeError, ValueError, ArithmeticError, LookupError) as exc:
            raise PayloadError(f"unexpected shape ({type(exc).__name__}: {exc})") from None

    return parsing


def _dec(value: Any) -> Decimal:
    try:
        number = Decimal(str(value))
    except (InvalidOperation, TypeError):
        raise PayloadError(f"expected a decimal, got {value!r}") from None
    if not number.is_finite():  # NaN or infinity is no price or balance Binance sends
        raise PayloadError(f"expected a finite decimal, got {value!r}")
    return number


def _get(raw: Mapping[str, Any], key: str) -> Any:
    try:
        return raw[key]
    except (KeyError, TypeError):
        raise PayloadError(f"missing field {key!r}") from None


POSITION_SIDES = frozenset({"BOTH", "LONG", "SHORT"})


def _position_side(raw: Mapping[str, Any], key: str) -> str:
    """A position's side: Binance always sends it (BOTH in one-way mode); absent, one-way is meant."""
    value = raw.get(key, "BOTH")
    if value not in POSITION_SIDES:
        raise PayloadError(f"expected a position side (BOTH, LONG or SHORT) for {key!r}, got {value!r}")
    return value


def _text(raw: Mapping[str, Any], key: str) -> str:
    value = _get(raw, key)
    if not isinstance(value, str):  # a symbol, side or id: a list or number here is no Binance payload
        raise PayloadError(f"expected text for {key!r}, got {value!r}")
    return value


def _ms(value: Any) -> float:
    if not isinstance(value, int) or isinstance(value, bool):
        raise PayloadError(f"expected milliseconds as an integer, got {value!r}")
    return value / 1000


# --- user-data stream ---------------------------------------------------------------------------


@_malformed_refused
def stream_events(raw: Mapping[str, Any], account: str, ts_init: float) -> list[ExchangeEvent]:
    """The typed events in one user-data message; [] for messages that carry none we use."""
    kind = _get(raw, "e")
    parser = _STREAM.get(kind)
    if parser is None:
        return []  # e.g. TRADE_LITE, STRATEGY_UPDATE: documented, not used by the controller
    try:
        return parser(raw, account, ts_init)
    except PayloadError as exc:
        raise PayloadError(f"{kind}: {exc}") from None


FILL_EXECUTIONS = ("TRADE", "CALCULATED")
"""Execution types that carry a trade: an ordinary one, and a liquidation's ("CALCULATED")."""


def _order_trade_update(raw, account, ts_init) -> list[ExchangeEvent]:
    o = _get(raw, "o")
    ts_event = _ms(_get(raw, "E"))
    update = OrderUpdate(
        account=account, symbol=_text(o, "s"), order_id=int(_get(o, "i")), client_order_id=_text(o, "c"),
        side=_text(o, "S"), order_type=_text(o, "o"), execution_type=_text(o, "x"), status=_text(o, "X"),
        quantity=_dec(_get(o, "q")), price=_dec(_get(o, "p")), average_price=_dec(_get(o, "ap")),
        filled_quantity=_dec(_get(o, "z")), reduce_only=bool(_get(o, "R")), ts_event=ts_event, ts_init=ts_init,
        time_in_force=str(o.get("f") or "GTC"))
    events: list[ExchangeEvent] = [update]
    if update.execution_type in FILL_EXECUTIONS:
        qty, price = _dec(_get(o, "l")), _dec(_get(o, "L"))
        events.append(Fill(
            account=account, symbol=update.symbol, trade_id=int(_get(o, "t")), order_id=update.order_id,
            client_order_id=update.client_order_id, side=update.side, price=price, quantity=qty,
            quote_quantity=price * qty, commission=_dec(o.get("n", "0")), commission_asset=o.get("N") or "USDT",
            realized_pnl=_dec(o.get("rp", "0")), maker=bool(_get(o, "m")), ts_event=_ms(_get(o, "T")), ts_init=ts_init))
    return events


def _account_update(raw, account, ts_init) -> list[ExchangeEvent]:
    a = _get(raw, "a")
    balances = tuple(Balance(_text(b, "a"), _dec(_get(b, "wb")), _dec(_get(b, "cw")),
                             _dec(b["bc"]) if "bc" in b else None) for b in _get(a, "B"))
    positions = tuple(PositionChange(_text(p, "s"), _dec(_get(p, "pa")), _dec(_get(p, "ep")), _dec(_get(p, "up")),
                                     str(_get(p, "mt")).upper(), _dec(_get(p, "iw")), _position_side(p, "ps"))
                      for p in _get(a, "P"))
    return [AccountUpdate(account, _text(a, "m"), balances, positions, _ms(_get(raw, "E")), ts_init)]


def _account_config_update(raw, account, ts_init) -> list[ExchangeEvent]:
    ac = raw.get("ac")
    if ac is None:
        ai = raw.get("ai")
        if ai is None:
            return []
        multi_assets = _get(ai, "j")  # "ai": the multi-assets mode changed
        if not isinstance(multi_assets, bool):
            raise PayloadError(f"multi-assets mode must be a boolean, got {multi_assets!r}")
        return [MultiAssetsChanged(account, multi_assets, _ms(_get(raw, "E")), ts_init)]
    leverage = _get(ac, "l")
    if not isinstance(leverage, int) or isinstance(leverage, bool):
        raise PayloadError(f"leverage must be an integer, got {leverage!r}")
    return [LeverageChanged(account, _text(ac, "s"), leverage, _ms(_get(raw, "E")), ts_init)]


def _margin_call(raw, account, ts_init) -> list[ExchangeEvent]:
    positions = tuple(MarginCallPosition(_text(p, "s"), _text(p, "ps"), _dec(_get(p, "pa")), str(_get(p, "mt")).upper(),
                                         _dec(_get(p, "mp")), _dec(_get(p, "up")), _dec(_get(p, "mm")))
                      for p in _get(raw, "p"))
    return [MarginCall(account, _dec(_get(raw, "cw")), positions, _ms(_get(raw, "E")), ts_init)]


_STREAM: dict[str, Callable[[Mapping[str, Any], str, float], list[ExchangeEvent]]] = {
    "ORDER_TRADE_UPDATE": _order_trade_update,
    "ACCOUNT_UPDATE": _account_update,
    "ACCOUNT_CONFIG_UPDATE": _account_config_update,
    "MARGIN_CALL": _margin_call,
}


# --- REST -----------------------------------------------------------------------------------------


def _each(raw: Any, parse: Callable[[Mapping[str, Any]], Any]) -> list[Any]:
    if not isinstance(raw, list):
        raise PayloadError(f"expected a list, got {type(raw).__name__}")
    return [parse(item) for item in raw]


@_malformed_refused
def positions(raw: Any) -> list[Position]:
    """GET /fapi/v3/positionRisk. It carries no leverage or margin type: see `symbol_settings`."""
    return _each(raw, lambda p: Position(
        _text(p, "symbol"), _dec(_get(p, "positionAmt")), _dec(_get(p, "entryPrice")), _dec(_get(p, "markPrice")),
        _dec(_get(p, "unRealizedProfit")), _dec(_get(p, "notional")), _dec(_get(p, "liquidationPrice")),
        _dec(p.get("isolatedMargin", "0")), _dec(p.get("maintMargin", "0")), _ms(p.get("updateTime", 0)),
        _position_side(p, "positionSide")))


@_malformed_refused
def symbol_settings(raw: Any) -> list[SymbolSettings]:
    """GET /fapi/v1/symbolConfig."""
    return _each(raw, lambda s: SymbolSettings(_text(s, "symbol"), int(_get(s, "leverage")), str(_get(s, "marginType")).upper()))


@_malformed_refused
def account(raw: Any, name: str, ts_init: float) -> AccountSnapshot:
    """GET /fapi/v2/account (or v3)."""
    return AccountSnapshot(name, _dec(_get(raw, "totalWalletBalance")), _dec(_get(raw, "totalMarginBalance")),
                           _dec(_get(raw, "totalMaintMargin")), _dec(_get(raw, "availableBalance")),
                           _dec(_get(raw, "totalUnrealizedProfit")), ts_init)


@_malformed_refused
def open_orders(raw: Any) -> list[OpenOrder]:
    return _each(raw, lambda o: OpenOrder(
        _text(o, "symbol"), int(_get(o, "orderId")), _text(o, "clientOrderId"), _text(o, "side"), _text(o, "type"),
        _text(o, "status"), _dec(_get(o, "origQty")), _dec(_get(o, "price")), _dec(_get(o, "executedQty")),
        bool(_get(o, "reduceOnly"))))


@_malformed_refused
def transfers(raw: Any, account_name: str, ts_init: float) -> list[AccountUpdate]:
    """GET /fapi/v1/income rows of type TRANSFER as the stream's ACCOUNT_UPDATE would have told them:
    ``DEPOSIT`` or ``WITHDRAW`` with the amount as the balance's change. An income row carries no
    balance, so the wallet figures are 0: only the change is meant to be read."""
    updates = []
    for row in _each(raw, lambda r: r):
        if _text(row, "incomeType") != "TRANSFER":
            continue
        amount = _dec(_get(row, "income"))
        updates.append(AccountUpdate(account_name, "DEPOSIT" if amount > 0 else "WITHDRAW",
                                     (Balance(_text(row, "asset"), Decimal(0), Decimal(0), amount),), (),
                                     _ms(_get(row, "time")), ts_init))
    return updates


@dataclass(frozen=True)
class IncomeHistory:
    """GET /fapi/v1/income over a window: its transfers, the symbols whose fills or funding it
    lists (every fill books a commission row), and whether the window was read whole."""

    transfers: tuple[AccountUpdate, ...]
    symbols: frozenset[str]
    complete: bool  # fewer rows than the limit: nothing of the window was cut off


@_malformed_refused
def income(raw: Any, account_name: str, ts_init: float, *, limit: int) -> IncomeHistory:
    """Every income row of a window, of any type and symbol (one read of weight 30 for all symbols)."""
    rows = _each(raw, lambda r: r)
    symbols = frozenset(_text(row, "symbol") for row in rows if _text(row, "incomeType") != "TRANSFER")
    return IncomeHistory(tuple(transfers(rows, account_name, ts_init)), symbols - {""}, len(rows) < limit)


@_malformed_refused
def force_orders(raw: Any, account_name: str, ts_init: float) -> list[OrderUpdate]:
    """GET /fapi/v1/forceOrders: the orders the exchange sent to close the account's positions
    (liquidation and ADL), as the stream's ORDER_TRADE_UPDATE would have reported them."""
    return _each(raw, lambda o: OrderUpdate(
        account=account_name, symbol=_text(o, "symbol"), order_id=int(_get(o, "orderId")),
        client_order_id=_text(o, "clientOrderId"), side=_text(o, "side"), order_type=_text(o, "type"),
        execution_type="CALCULATED", status=_text(o, "status"), quantity=_dec(_get(o, "origQty")),
        price=_dec(_get(o, "price")), average_price=_dec(_get(o, "avgPrice")),
        filled_quantity=_dec(_get(o, "executedQty")), reduce_only=bool(_get(o, "reduceOnly")),
        ts_event=_ms(_get(o, "updateTime")), ts_init=ts_init, time_in_force=str(o.get("timeInForce") or "GTC")))


@_malformed_refused
def user_trades(raw: Any, account_name: str, ts_init: float) -> list[Fill]:
    """GET /fapi/v1/userTrades: the REST view of the fills the stream reports."""
    return _each(raw, lambda t: Fill(
        account_name, _text(t, "symbol"), int(_get(t, "id")), int(_get(t, "orderId")), None, _text(t, "side"),
        _dec(_get(t, "price")), _dec(_get(t, "qty")), _dec(_get(t, "quoteQty")), _dec(_get(t, "commission")),
        _text(t, "commissionAsset"), _dec(_get(t, "realizedPnl")), bool(_get(t, "maker")), _ms(_get(t, "time")), ts_init))


@_malformed_refused
def leverage_brackets(raw: Any) -> list[LeverageBracket]:
    out: list[LeverageBracket] = []
    for entry in _each(raw, lambda e: e):
        for b in _get(entry, "brackets"):
            out.append(LeverageBracket(_text(entry, "symbol"), int(_get(b, "bracket")), int(_get(b, "initialLeverage")),
                                       _dec(_get(b, "notionalCap")), _dec(_get(b, "notionalFloor")), _dec(_get(b, "maintMarginRatio"))))
    return out


@_malformed_refused
def symbol_filters(raw: Any) -> list[SymbolFilters]:
    """GET /fapi/v1/exchangeInfo: PRICE_FILTER, LOT_SIZE and MIN_NOTIONAL of each symbol."""
    out = []
    for symbol in _iter(_get(raw, "symbols")):
        filters = {f.get("filterType"): f for f in _iter(_get(symbol, "filters"))}
        try:
            out.append(SymbolFilters(_text(symbol, "symbol"), _dec(_get(filters["PRICE_FILTER"], "tickSize")),
                                     _dec(_get(filters["LOT_SIZE"], "stepSize")), _dec(_get(filters["LOT_SIZE"], "minQty")),
                                     _dec(_get(filters["MIN_NOTIONAL"], "notional"))))
        except KeyError as exc:
            raise PayloadError(f"{symbol.get('symbol')}: no {exc.args[0]} filter") from None
    return out


@_malformed_refused
def mark_prices(raw: Any) -> dict[str, Decimal]:
    """GET /fapi/v1/premiumIndex (one object with a symbol, a list without)."""
    items = raw if isinstance(raw, list) else [raw]
    return {_text(p, "symbol"): _dec(_get(p, "markPrice")) for p in items}


@_malformed_refused
def sub_account_balances(raw: Any) -> list[SubAccountBalance]:
    """GET /sapi/v2/sub-account/futures/accountSummary?futuresType=1 (v1 is the unwrapped form)."""
    summary = raw.get("futureAccountSummaryResp", raw) if isinstance(raw, Mapping) else raw
    return [SubAccountBalance(_text(s, "email"), _dec(_get(s, "totalWalletBalance")), _dec(_get(s, "totalMarginBalance")))
            for s in _iter(_get(summary, "subAccountList"))]


def _iter(raw: Any) -> Iterable[Mapping[str, Any]]:
    if not isinstance(raw, list):
        raise PayloadError(f"expected a list, got {type(raw).__name__}")
    return raw
