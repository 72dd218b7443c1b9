"""One account's REST connection to Binance USD-M futures, over python-binance's AsyncClient.

Every call goes through `_call`, which owns the policy for each kind of failure:
transient errors are retried with exponential backoff and jitter (tenacity); -1021 re-syncs
the server-time offset and retries once; 429/418 block every request through the client's
`RequestGate` until Retry-After has passed (no request is sent before; the Site gives every
client of a host the same gate); business refusals surface at once as `Rejected`. Each call's
request weight is charged to the host's budget before sending. Only this package imports
python-binance.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import urlencode

from tenacity import RetryCallState, retry_if_exception_type, stop_after_attempt

from controller.clock import Backoff, Clock
from controller.config.daemon import Endpoints
from controller.exchange import parse
from controller.exchange.errors import (
    BudgetExhausted,
    ClockSkew,
    ExchangeError,
    NotApplied,
    RateLimited,
    Rejected,
    Retryable,
    classify,
)
from controller.exchange.events import (
    AccountSnapshot,
    AccountUpdate,
    Fill,
    LeverageBracket,
    OpenOrder,
    OrderUpdate,
    Position,
    SubAccountBalance,
    SymbolFilters,
    SymbolSettings,
)
from controller.exchange.permissions import KeyRights, key_rights
from controller.exchange.weights import PurposeBudget, WeightBudget, weight_of
from controller.logs import get_logger

log = get_logger(__name__)
T = TypeVar("T")

DUPLICATE_CLIENT_ORDER_ID = -4116
ORDER_DOES_NOT_EXIST = -2013
NO_NEED_TO_CHANGE_MARGIN_TYPE = -4046
CLIENT_ORDER_PREFIX = "cc-"  # orders the controller places (flattening) are recognisable
USER_AGENT = "canary-controller"
"""The controller's requests say who sends them: a bot may share the account's key."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    initial_backoff: float = 0.2
    max_backoff: float = 5.0
    request_timeout: float = 10.0

    def backoff(self, clock: Clock) -> Backoff:
        """The waits between attempts, jittered: clients that failed together do not retry together."""
        return Backoff(clock, initial=self.initial_backoff, maximum=self.max_backoff, jitter=True)


class RequestGate:
    """One exchange host's door: after a 429/418 that any client of the host saw, no request is
    sent by any of them, a client opened later included, until Retry-After (for a 418, the ban)
    has passed. ``on_refused`` is told why each request was held back ("rate_limited" during a
    429's back-off, "banned" during a 418, "budget" when the weight budget refused it)."""

    def __init__(self, clock: Clock, *, on_refused: Callable[[str], None] | None = None) -> None:
        self.clock = clock
        self.blocked_until = 0.0
        self.banned = False  # whether the block in force came from a 418
        self.on_refused = on_refused

    def block(self, retry_after: float, *, banned: bool = False) -> None:
        until = self.clock.time() + retry_after
        if until > self.blocked_until:
            self.blocked_until, self.banned = until, banned

    def seconds_left(self) -> float:
        """How long no request may leave; 0 when the door is open."""
        return max(0.0, self.blocked_until - self.clock.time())

    def check(self, what: str) -> None:
        remaining = self.seconds_left()
        if remaining > 0:
            why = "the exchange banned this IP" if self.banned else "the exchange asked us to back off"
            self.refused("banned" if self.banned else "rate_limited")
            raise RateLimited(f"{what} not sent: {why} for {remaining:.1f} s more", retry_after=remaining)

    def refused(self, reason: str) -> None:
        if self.on_refused is not None:
            self.on_refused(reason)


class ExchangeClient:
    """The calls rollback and verification need, for one account."""

    def __init__(self, *, account: str, api_key: str, api_secret: str, endpoints: Endpoints, clock: Clock,
                 budget: WeightBudget | PurposeBudget, gate: RequestGate | None = None,
                 retry: RetryPolicy | None = None) -> None:
        """``budget`` and ``gate``: the host's, shared with its other clients (a Site's); a client
        made alone gets a gate of its own."""
        from binance import AsyncClient

        self.account = account
        self.endpoints = endpoints
        self.clock = clock
        self.budget = budget
        self.gate = gate or RequestGate(clock)
        self.retry = retry or RetryPolicy()
        self._server_skew_ms = 0.0  # exchange time minus our Clock's time
        self._client = AsyncClient(api_key, api_secret)
        self._client.FUTURES_URL = endpoints.rest_url.rstrip("/")
        if endpoints.sapi_url:
            self._client.MARGIN_API_URL = endpoints.sapi_url.rstrip("/")
        self._client.REQUEST_TIMEOUT = self.retry.request_timeout
        self._client.session.headers["User-Agent"] = USER_AGENT

    @property
    def binance(self):
        """The underlying AsyncClient, for the user-data stream (same package)."""
        return self._client

    async def close(self) -> None:
        await self._client.close_connection()

    async def __aenter__(self) -> ExchangeClient:
        await self.sync_time()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    # --- the call policy ------------------------------------------------------------------------

    async def sync_time(self) -> float:
        """Measure the exchange's clock against ours; returns the skew in milliseconds."""
        started = self.clock.time()
        raw = await self._send("server time", "GET", "/fapi/v1/time", self._client.futures_time)
        midpoint_ms = (started + self.clock.time()) / 2 * 1000
        self._server_skew_ms = raw["serverTime"] - midpoint_ms
        return self._server_skew_ms

    def _stamp(self) -> None:
        # python-binance stamps requests with time.time() + timestamp_offset; steer it to our
        # Clock (which may be simulated and accelerated) plus the measured exchange skew.
        self._client.timestamp_offset = int((self.clock.time() - time.time()) * 1000 + self._server_skew_ms)

    async def _send(self, what: str, method: str, path: str, fn: Callable[..., Awaitable[T]], **params: Any) -> T:
        """One attempt: gate, budget, stamp, send, classify."""
        self.gate.check(what)
        try:
            self.budget.reserve(weight_of(method, path, params), what=what)
        except BudgetExhausted:
            self.gate.refused("budget")
            raise
        self._stamp()
        try:
            async with asyncio.timeout(self.retry.request_timeout):
                result = await fn(**params)
        except BaseException as exc:
            self._observe_weight()
            mapped = classify(exc)
            if mapped is None:
                raise
            if isinstance(mapped, RateLimited):
                self.gate.block(mapped.retry_after, banned=mapped.status == 418)
            raise mapped from None
        self._observe_weight()
        return result

    def _observe_weight(self) -> None:
        response = getattr(self._client, "response", None)
        if response is not None:
            self.budget.observe(response.headers.get("X-MBX-USED-WEIGHT-1M"))

    async def _call(self, what: str, method: str, path: str, fn: Callable[..., Awaitable[T]], *,
                    attempts: int | None = None, **params: Any) -> T:
        """Send with the retry policy: backoff for transient errors, one re-sync for clock skew."""
        resynced = False

        def log_retry(state: RetryCallState) -> None:
            log.warning("exchange_retry", account=self.account, call=what, attempt=state.attempt_number,
                        error=str(state.outcome.exception()))

        while True:
            retrying_transient = self.retry.backoff(self.clock).retrying(
                retry=retry_if_exception_type(Retryable), stop=stop_after_attempt(attempts or self.retry.attempts),
                before_sleep=log_retry, reraise=True)
            try:
                async for attempt in retrying_transient:
                    with attempt:
                        return await self._send(what, method, path, fn, **params)
            except ClockSkew:
                if resynced:
                    raise
                resynced = True
                skew = await self.sync_time()
                log.warning("exchange_time_resync", account=self.account, skew_ms=round(skew))
        raise AssertionError("unreachable")

    # --- calls the rollback needs ----------------------------------------------------------------

    async def set_leverage(self, symbol: str, leverage: int) -> int:
        """POST /fapi/v1/leverage, then check that the answer is the leverage we asked for."""
        raw = await self._call(f"set {symbol} leverage to {leverage}", "POST", "/fapi/v1/leverage",
                               self._client.futures_change_leverage, symbol=symbol, leverage=leverage)
        applied = int(raw["leverage"])
        if applied != leverage:
            raise NotApplied(f"{symbol}: asked the exchange for leverage {leverage}, it answered {applied}")
        return applied

    async def confirm_leverage(self, symbol: str, leverage: int) -> None:
        """Read the leverage back (GET /fapi/v1/symbolConfig): a response can say "applied"
        while the exchange's state did not change."""
        found = {s.symbol: s.leverage for s in await self.symbol_settings(symbol)}.get(symbol)
        if found != leverage:
            raise NotApplied(f"{symbol}: the exchange applies leverage {found}, expected {leverage}")

    async def set_margin_type(self, symbol: str, margin_type: str) -> None:
        """POST /fapi/v1/marginType; "no need to change" (-4046) means it already is."""
        try:
            await self._call(f"set {symbol} margin type to {margin_type}", "POST", "/fapi/v1/marginType",
                             self._client.futures_change_margin_type, symbol=symbol, marginType=margin_type)
        except Rejected as exc:
            if exc.code != NO_NEED_TO_CHANGE_MARGIN_TYPE:
                raise

    async def cancel_all_orders(self, symbol: str) -> None:
        await self._call(f"cancel all {symbol} orders", "DELETE", "/fapi/v1/allOpenOrders",
                         self._client.futures_cancel_all_open_orders, symbol=symbol)

    async def new_order(self, *, symbol: str, side: str, order_type: str, quantity: Decimal,
                        price: Decimal | None = None, reduce_only: bool = False,
                        position_side: str | None = None, client_order_id: str | None = None) -> dict[str, Any]:
        """Place an order at most once.

        Binance keeps ``newClientOrderId`` unique only among *open* orders, so resending after an
        ambiguous failure (timeout, 5xx) could double a market order that already filled. After
        such a failure the order is looked up by its client id first, and resent only if the
        exchange has never seen it.
        """
        client_order_id = client_order_id or f"{CLIENT_ORDER_PREFIX}{uuid.uuid4().hex[:24]}"
        params: dict[str, Any] = {"symbol": symbol, "side": side, "type": order_type, "quantity": str(quantity),
                                  "newClientOrderId": client_order_id}
        if price is not None:
            params.update(price=str(price), timeInForce="GTC")
        if reduce_only:
            params["reduceOnly"] = "true"
        if position_side is not None:  # hedge mode's LONG or SHORT; one-way mode sends none (BOTH)
            params["positionSide"] = position_side
        what = f"{side} {quantity} {symbol} {order_type} ({client_order_id})"
        backoff = self.retry.backoff(self.clock)
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return await self._call(what, "POST", "/fapi/v1/order", self._client.futures_create_order,
                                        attempts=1, **params)
            except Retryable as exc:
                existing = await self.find_order(symbol, client_order_id)
                if existing is not None:
                    return existing
                if attempt == self.retry.attempts:
                    raise
                log.warning("exchange_order_retry", account=self.account, order=what, attempt=attempt,
                            error=str(exc))
                await backoff.sleep()
            except Rejected as exc:
                if exc.code != DUPLICATE_CLIENT_ORDER_ID:
                    raise
                existing = await self.find_order(symbol, client_order_id)  # an earlier attempt's, still open
                if existing is None:
                    raise
                return existing
        raise AssertionError("unreachable")

    async def find_order(self, symbol: str, client_order_id: str) -> dict[str, Any] | None:
        """GET /fapi/v1/order by client id, in any state; None if the exchange never saw it."""
        try:
            return await self._call(f"look up order {client_order_id}", "GET", "/fapi/v1/order",
                                    self._client.futures_get_order, symbol=symbol, origClientOrderId=client_order_id)
        except Rejected as exc:
            if exc.code == ORDER_DOES_NOT_EXIST:
                return None
            raise

    async def flatten(self, symbol: str, *, client_order_id: str | None = None,
                      held: list[Position] | None = None) -> list[dict[str, Any]]:
        """Close every position the symbol holds with a market order each; the orders placed (none when flat).
        ``held``: the positions, read already (one read of every symbol for several flattens);
        else the symbol's are read.

        One-way mode (side BOTH) closes with reduceOnly. Hedge mode holds a LONG and a SHORT side and
        Binance refuses reduceOnly there (-1106) but needs positionSide: each side is closed by an
        order naming it (SELL LONG, BUY SHORT), which the exchange bounds by that side's position.
        A hedge side's order gets ``client_order_id`` with the side appended, so each is found again.
        """
        placed = []
        positions = await self.positions(symbol) if held is None else held
        for position in [p for p in positions if p.symbol == symbol and p.amount != 0]:
            if position.side == "BOTH":
                side = "SELL" if position.amount > 0 else "BUY"
                placed.append(await self.new_order(symbol=symbol, side=side, order_type="MARKET",
                                                   quantity=abs(position.amount), reduce_only=True,
                                                   client_order_id=client_order_id))
                continue
            suffix = f"-{position.side}"
            side_id = f"{client_order_id[:36 - len(suffix)]}{suffix}" if client_order_id else None
            placed.append(await self.new_order(symbol=symbol, side="SELL" if position.side == "LONG" else "BUY",
                                               order_type="MARKET", quantity=abs(position.amount),
                                               position_side=position.side, client_order_id=side_id))
        return placed

    # --- user-data stream listenKey ---------------------------------------------------------------

    async def create_listen_key(self) -> str:
        """POST /fapi/v1/listenKey: a key valid 60 minutes unless kept alive."""
        return await self._call("create listenKey", "POST", "/fapi/v1/listenKey",
                                self._client.futures_stream_get_listen_key)

    async def keepalive_listen_key(self, listen_key: str) -> None:
        await self._call("keep listenKey alive", "PUT", "/fapi/v1/listenKey",
                         self._client.futures_stream_keepalive, listenKey=listen_key)

    async def close_listen_key(self, listen_key: str) -> None:
        await self._call("close listenKey", "DELETE", "/fapi/v1/listenKey",
                         self._client.futures_stream_close, listenKey=listen_key)

    # --- reads verification needs ----------------------------------------------------------------

    async def positions(self, symbol: str | None = None) -> list[Position]:
        params = {"symbol": symbol} if symbol else {}
        raw = await self._call("read positions", "GET", "/fapi/v3/positionRisk",
                               self._client.futures_position_information, **params)
        return parse.positions(raw)

    async def symbol_settings(self, symbol: str | None = None) -> list[SymbolSettings]:
        params = {"symbol": symbol} if symbol else {}
        raw = await self._call("read symbol settings", "GET", "/fapi/v1/symbolConfig",
                               self._client.futures_symbol_config, **params)
        return parse.symbol_settings(raw)

    async def account_snapshot(self) -> AccountSnapshot:
        raw = await self._call("read account", "GET", "/fapi/v2/account", self._client.futures_account)
        return parse.account(raw, self.account, self.clock.time())

    async def open_orders(self, symbol: str | None = None) -> list[OpenOrder]:
        params = {"symbol": symbol} if symbol else {}
        raw = await self._call("read open orders", "GET", "/fapi/v1/openOrders",
                               self._client.futures_get_open_orders, **params)
        return parse.open_orders(raw)

    async def user_trades(self, symbol: str, *, from_id: int | None = None, start_time: float | None = None,
                          limit: int = 1000) -> list[Fill]:
        """GET /fapi/v1/userTrades from a trade id, or from a time (epoch seconds)."""
        params: dict[str, Any] = {"symbol": symbol, "limit": limit}
        if from_id is not None:
            params["fromId"] = from_id
        elif start_time is not None:
            params["startTime"] = int(start_time * 1000)
        raw = await self._call(f"read {symbol} trades", "GET", "/fapi/v1/userTrades",
                               self._client.futures_account_trades, **params)
        return parse.user_trades(raw, self.account, self.clock.time())

    async def transfers(self, *, start_time: float, end_time: float, limit: int = 1000) -> list[AccountUpdate]:
        """GET /fapi/v1/income of type TRANSFER between two times (epoch seconds, both inclusive;
        weight 30): capital moved in or out of the futures wallet, as ACCOUNT_UPDATEs."""
        raw = await self._call("read transfers", "GET", "/fapi/v1/income", self._client.futures_income_history,
                               incomeType="TRANSFER", startTime=int(start_time * 1000), endTime=int(end_time * 1000),
                               limit=limit)
        return parse.transfers(raw, self.account, self.clock.time())

    async def income(self, *, start_time: float, end_time: float, limit: int = 1000) -> parse.IncomeHistory:
        """GET /fapi/v1/income of every type between two times (epoch seconds, both inclusive;
        weight 30 for all symbols): what moved the wallet, and on which symbols."""
        raw = await self._call("read income", "GET", "/fapi/v1/income", self._client.futures_income_history,
                               startTime=int(start_time * 1000), endTime=int(end_time * 1000), limit=limit)
        return parse.income(raw, self.account, self.clock.time(), limit=limit)

    async def force_orders(self, *, start_time: float, limit: int = 100) -> list[OrderUpdate]:
        """GET /fapi/v1/forceOrders since ``start_time`` (epoch seconds): every liquidation and ADL
        order of the account, on any symbol (weight 50)."""
        raw = await self._call("read liquidation orders", "GET", "/fapi/v1/forceOrders",
                               self._client.futures_liquidation_orders, startTime=int(start_time * 1000), limit=limit)
        return parse.force_orders(raw, self.account, self.clock.time())

    async def leverage_brackets(self, symbol: str | None = None) -> list[LeverageBracket]:
        params = {"symbol": symbol} if symbol else {}
        raw = await self._call("read leverage brackets", "GET", "/fapi/v1/leverageBracket",
                               self._client.futures_leverage_bracket, **params)
        return parse.leverage_brackets(raw if isinstance(raw, list) else [raw])

    async def symbol_filters(self) -> dict[str, SymbolFilters]:
        raw = await self._call("read exchange info", "GET", "/fapi/v1/exchangeInfo", self._client.futures_exchange_info)
        return {f.symbol: f for f in parse.symbol_filters(raw)}

    async def mark_prices(self, symbol: str | None = None) -> dict[str, Decimal]:
        params = {"symbol": symbol} if symbol else {}
        raw = await self._call("read mark prices", "GET", "/fapi/v1/premiumIndex", self._client.futures_mark_price,
                               **params)
        return parse.mark_prices(raw)

    async def sub_account_balances(self, *, page_size: int = 20) -> list[SubAccountBalance]:
        """USD-M futures balances of every sub-account (a master key only), page by page."""
        if not self.endpoints.sapi_url:
            raise ExchangeError("sub-account balances need the SAPI base URL (endpoints.sapi_url)")
        balances: list[SubAccountBalance] = []
        for page in range(1, 1000):
            raw = await self._call("read sub-account balances", "GET", "/sapi/v2/sub-account/futures/accountSummary",
                                   self._client.get_subaccount_futures_summary, futuresType=1, page=page,
                                   limit=page_size)
            batch = parse.sub_account_balances(raw)
            balances.extend(batch)
            if len(batch) < page_size:
                break
        return balances

    async def internal_transfer(self, *, from_email: str, to_email: str, amount: Decimal) -> str:
        """POST /sapi/v1/sub-account/futures/internalTransfer (a master's key allowed internal transfers):
        ``amount`` USDT from one USD-M futures wallet to another; the exchange's transaction id.

        Sent once, never retried here: a transfer whose answer was lost may have happened, and only
        reading the accounts again (`controller.rollout.capital`) tells. Signed over the query exactly as
        sent (python-binance signs the emails unencoded and sends them encoded)."""
        if not self.endpoints.sapi_url:
            raise ExchangeError("sub-account transfers need the SAPI base URL (endpoints.sapi_url)")
        url = f"{self.endpoints.sapi_url.rstrip('/')}/v1/sub-account/futures/internalTransfer"

        async def send(**params: Any) -> Any:
            from binance.exceptions import BinanceAPIException

            timestamp = int(time.time() * 1000 + self._client.timestamp_offset)
            query = urlencode({**params, "timestamp": timestamp})
            signature = hmac.new(self._client.API_SECRET.encode(), query.encode(), hashlib.sha256).hexdigest()
            async with self._client.session.post(url, data=f"{query}&signature={signature}", headers={
                    "Content-Type": "application/x-www-form-urlencoded"}) as response:
                self._client.response = response
                text = await response.text()
                if response.status >= 300:
                    raise BinanceAPIException(response, response.status, text)
                return json.loads(text)

        raw = await self._call("transfer between sub-accounts", "POST", "/sapi/v1/sub-account/futures/internalTransfer",
                               send, attempts=1, fromEmail=from_email, toEmail=to_email, futuresType=1, asset="USDT",
                               amount=f"{amount:f}")
        if not isinstance(raw, dict) or raw.get("success") is not True:
            raise ExchangeError(f"the transfer was not confirmed: {str(raw)[:200]}")
        return str(raw.get("txnId", ""))

    async def api_restrictions(self) -> KeyRights:
        """GET /sapi/v1/account/apiRestrictions: what this account's key may do (on the SAPI host)."""
        if not self.endpoints.sapi_url:
            raise ExchangeError("a key's API restrictions need the SAPI base URL (endpoints.sapi_url)")
        raw = await self._call("read the key's API restrictions", "GET", "/sapi/v1/account/apiRestrictions",
                               self._client.get_account_api_permissions)
        return key_rights(raw)

    async def account_modes(self) -> dict[str, bool]:
        """GET /fapi/v1/accountConfig: the position mode (``dualSidePosition``: hedge) and the
        multi-assets margin mode, as the exchange applies them; an answer without them is an error."""
        raw = await self._call("read account modes", "GET", "/fapi/v1/accountConfig",
                               self._client.futures_account_config)
        modes = {name: raw.get(name) if isinstance(raw, dict) else None
                 for name in ("dualSidePosition", "multiAssetsMargin")}
        missing = [name for name, value in modes.items() if not isinstance(value, bool)]
        if missing:
            raise ExchangeError(f"the account config answer has no boolean {', '.join(missing)}")
        return modes
