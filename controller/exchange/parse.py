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
from typing import Any, Literal, ParamSpec, TypeVar

import msgspec
import orjson

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


ZERO = Decimal(0)


# --- user-data stream ---------------------------------------------------------------------------
#
# A message is decoded in one pass by msgspec, straight into the Structs below: a tagged union on
# ``e``, each field checked for its type as it is read (a missing field, a number where text
# belongs, null for an id: a `PayloadError`), money into Decimal. Fields Binance adds are skipped.
# What msgspec cannot say (a finite Decimal, the fields only a trade carries) the events' builders
# check. A message the union does not hold (a kind the controller does not use, or one that does
# not validate) is read again as plain JSON by `stream_message`, which tells the two apart.

_STREAM_STRUCT = {"kw_only": True, "gc": False, "tag_field": "e"}


class _Order(msgspec.Struct, kw_only=True, gc=False):
    """ORDER_TRADE_UPDATE's ``o``; the trade's fields (``l``, ``L``, ``t``, ``T``, ``m``) only on a trade."""

    symbol: str = msgspec.field(name="s")
    order_id: int = msgspec.field(name="i")
    client_order_id: str = msgspec.field(name="c")
    side: str = msgspec.field(name="S")
    order_type: str = msgspec.field(name="o")
    execution_type: str = msgspec.field(name="x")
    status: str = msgspec.field(name="X")
    quantity: Decimal = msgspec.field(name="q")
    price: Decimal = msgspec.field(name="p")
    average_price: Decimal = msgspec.field(name="ap")
    filled_quantity: Decimal = msgspec.field(name="z")
    reduce_only: bool = msgspec.field(name="R")
    time_in_force: str | None = msgspec.field(name="f", default=None)
    last_quantity: Decimal | None = msgspec.field(name="l", default=None)
    last_price: Decimal | None = msgspec.field(name="L", default=None)
    trade_id: int | None = msgspec.field(name="t", default=None)
    trade_time: int | None = msgspec.field(name="T", default=None)
    maker: bool | None = msgspec.field(name="m", default=None)
    commission: Decimal = msgspec.field(name="n", default=ZERO)
    commission_asset: str | None = msgspec.field(name="N", default=None)
    realized_pnl: Decimal = msgspec.field(name="rp", default=ZERO)


class _OrderTradeUpdate(msgspec.Struct, tag="ORDER_TRADE_UPDATE", **_STREAM_STRUCT):
    event_time: int = msgspec.field(name="E")
    order: _Order = msgspec.field(name="o")

    def events(self, account: str, ts_init: float) -> list[ExchangeEvent]:
        o = self.order
        _finite(o.quantity, o.price, o.average_price, o.filled_quantity)
        update = OrderUpdate(account, o.symbol, o.order_id, o.client_order_id, o.side, o.order_type, o.execution_type,
                             o.status, o.quantity, o.price, o.average_price, o.filled_quantity, o.reduce_only,
                             self.event_time / 1000, ts_init, o.time_in_force or "GTC")
        if o.execution_type not in FILL_EXECUTIONS:
            return [update]
        for name, value in (("l", o.last_quantity), ("L", o.last_price), ("t", o.trade_id), ("T", o.trade_time),
                            ("m", o.maker)):
            if value is None:
                raise PayloadError(f"ORDER_TRADE_UPDATE: missing field {name!r}")
        quantity, price = o.last_quantity, o.last_price
        _finite(quantity, price, o.commission, o.realized_pnl)
        try:
            quote_quantity = price * quantity
        except ArithmeticError as exc:  # past Decimal's exponent limits: no trade Binance reports
            raise PayloadError(f"ORDER_TRADE_UPDATE: price x quantity is out of range ({type(exc).__name__})") from None
        return [update, Fill(account, o.symbol, o.trade_id, o.order_id, o.client_order_id, o.side, price, quantity,
                             quote_quantity, o.commission, o.commission_asset or "USDT", o.realized_pnl, o.maker,
                             o.trade_time / 1000, ts_init)]


class _Balance(msgspec.Struct, kw_only=True, gc=False):
    asset: str = msgspec.field(name="a")
    wallet_balance: Decimal = msgspec.field(name="wb")
    cross_wallet_balance: Decimal = msgspec.field(name="cw")
    change: Decimal | msgspec.UnsetType = msgspec.field(name="bc", default=msgspec.UNSET)


class _PositionChange(msgspec.Struct, kw_only=True, gc=False):
    symbol: str = msgspec.field(name="s")
    amount: Decimal = msgspec.field(name="pa")
    entry_price: Decimal = msgspec.field(name="ep")
    unrealized_pnl: Decimal = msgspec.field(name="up")
    margin_type: str = msgspec.field(name="mt")
    isolated_wallet: Decimal = msgspec.field(name="iw")
    # Binance always sends it (BOTH in one-way mode); absent, one-way is meant.
    side: Literal["BOTH", "LONG", "SHORT"] = msgspec.field(name="ps", default="BOTH")


class _AccountChanges(msgspec.Struct, kw_only=True, gc=False):
    reason: str = msgspec.field(name="m")
    balances: list[_Balance] = msgspec.field(name="B")
    positions: list[_PositionChange] = msgspec.field(name="P")


class _AccountUpdate(msgspec.Struct, tag="ACCOUNT_UPDATE", **_STREAM_STRUCT):
    event_time: int = msgspec.field(name="E")
    changes: _AccountChanges = msgspec.field(name="a")

    def events(self, account: str, ts_init: float) -> list[ExchangeEvent]:
        balances = []
        for b in self.changes.balances:
            change = None if b.change is msgspec.UNSET else b.change
            _finite(b.wallet_balance, b.cross_wallet_balance, change or ZERO)
            balances.append(Balance(b.asset, b.wallet_balance, b.cross_wallet_balance, change))
        positions = []
        for p in self.changes.positions:
            _finite(p.amount, p.entry_price, p.unrealized_pnl, p.isolated_wallet)
            positions.append(PositionChange(p.symbol, p.amount, p.entry_price, p.unrealized_pnl, p.margin_type.upper(),
                                            p.isolated_wallet, p.side))
        return [AccountUpdate(account, self.changes.reason, tuple(balances), tuple(positions), self.event_time / 1000,
                              ts_init)]


class _LeverageConfig(msgspec.Struct, kw_only=True, gc=False):
    symbol: str = msgspec.field(name="s")
    leverage: int = msgspec.field(name="l")


class _MultiAssetsConfig(msgspec.Struct, kw_only=True, gc=False):
    multi_assets: bool = msgspec.field(name="j")


class _AccountConfigUpdate(msgspec.Struct, tag="ACCOUNT_CONFIG_UPDATE", **_STREAM_STRUCT):
    event_time: int = msgspec.field(name="E")
    leverage: _LeverageConfig | None = msgspec.field(name="ac", default=None)
    multi_assets: _MultiAssetsConfig | None = msgspec.field(name="ai", default=None)

    def events(self, account: str, ts_init: float) -> list[ExchangeEvent]:
        if self.leverage is not None:
            return [LeverageChanged(account, self.leverage.symbol, self.leverage.leverage, self.event_time / 1000,
                                    ts_init)]
        if self.multi_assets is not None:  # "ai": the multi-assets mode changed
            return [MultiAssetsChanged(account, self.multi_assets.multi_assets, self.event_time / 1000, ts_init)]
        return []


class _MarginCallPosition(msgspec.Struct, kw_only=True, gc=False):
    symbol: str = msgspec.field(name="s")
    side: str = msgspec.field(name="ps")
    amount: Decimal = msgspec.field(name="pa")
    margin_type: str = msgspec.field(name="mt")
    mark_price: Decimal = msgspec.field(name="mp")
    unrealized_pnl: Decimal = msgspec.field(name="up")
    maintenance_margin: Decimal = msgspec.field(name="mm")


class _MarginCall(msgspec.Struct, tag="MARGIN_CALL", **_STREAM_STRUCT):
    event_time: int = msgspec.field(name="E")
    cross_wallet_balance: Decimal = msgspec.field(name="cw")
    positions: list[_MarginCallPosition] = msgspec.field(name="p")

    def events(self, account: str, ts_init: float) -> list[ExchangeEvent]:
        _finite(self.cross_wallet_balance)
        positions = []
        for p in self.positions:
            _finite(p.amount, p.mark_price, p.unrealized_pnl, p.maintenance_margin)
            positions.append(MarginCallPosition(p.symbol, p.side, p.amount, p.margin_type.upper(), p.mark_price,
                                                p.unrealized_pnl, p.maintenance_margin))
        return [MarginCall(account, self.cross_wallet_balance, tuple(positions), self.event_time / 1000, ts_init)]


class _ListenKeyExpired(msgspec.Struct, tag="listenKeyExpired", **_STREAM_STRUCT):
    """The listenKey ran out: the connection ends (it carries no event)."""

    event_time: int | float | None = msgspec.field(name="E", default=None)

    def events(self, account: str, ts_init: float) -> list[ExchangeEvent]:
        return []


class _Unused(msgspec.Struct, kw_only=True, gc=False):
    """A message of a kind the controller does not use (TRADE_LITE, STRATEGY_UPDATE, ...), or of a
    kind it uses that did not validate (``error``: why; its events are a `PayloadError`)."""

    kind: str
    event_time: int | float | None = None
    error: str | None = None

    def events(self, account: str, ts_init: float) -> list[ExchangeEvent]:
        if self.error is not None:
            raise PayloadError(self.error)
        return []


_Frame = _OrderTradeUpdate | _AccountUpdate | _AccountConfigUpdate | _MarginCall | _ListenKeyExpired
_FRAME_DECODER = msgspec.json.Decoder(_Frame)
for _kind in _Frame.__args__:
    _kind.kind = _kind.__struct_config__.tag  # a class attribute, not a field: read as ``message.kind``
_USED = frozenset(frame.kind for frame in _Frame.__args__)
StreamMessage = _Frame | _Unused
"""One user-data message read: its ``kind`` (``e``), ``event_time`` (``E``, milliseconds; None when it
has none) and ``events(account, ts_init)``, the typed events it carries (a `PayloadError` if it does
not parse)."""


def stream_message(text: str | bytes) -> StreamMessage:
    """Read one websocket message; `PayloadError` (or ValueError, RecursionError) if it is not a
    JSON object with a text ``e``. Whether its payload parses is told by its ``events``, so that a
    message is de-duplicated whether or not it does (a broken message repeated is counted once)."""
    try:
        return _FRAME_DECODER.decode(text)
    except (msgspec.MsgspecError, ValueError, RecursionError) as exc:  # read again to say what it is
        error = str(exc)
    raw = orjson.loads(text)
    kind = raw.get("e") if isinstance(raw, dict) else None
    if not isinstance(kind, str):
        raise PayloadError("not a JSON object with an event type 'e'")
    event_time = raw.get("E")
    return _Unused(kind=kind, event_time=event_time if isinstance(event_time, (int, float)) else None,
                   error=f"{kind}: {error}" if kind in _USED else None)


@_malformed_refused
def stream_events(raw: Mapping[str, Any], account: str, ts_init: float) -> list[ExchangeEvent]:
    """The typed events in one user-data message already read as JSON; [] for messages that
    carry none we use."""
    kind = _get(raw, "e")
    if kind not in _USED:
        return []  # e.g. TRADE_LITE, STRATEGY_UPDATE: documented, not used by the controller
    try:
        message = msgspec.convert(raw, _Frame)
    except msgspec.MsgspecError as exc:
        raise PayloadError(f"{kind}: {exc}") from None
    return message.events(account, ts_init)


FILL_EXECUTIONS = ("TRADE", "CALCULATED")
"""Execution types that carry a trade: an ordinary one, and a liquidation's ("CALCULATED")."""


def _finite(*numbers: Decimal) -> None:
    if all(map(Decimal.is_finite, numbers)):
        return
    number = next(number for number in numbers if not number.is_finite())  # NaN or infinity: no price Binance sends
    raise PayloadError(f"expected a finite decimal, got {number!r}")


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
