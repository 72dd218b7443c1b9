"""The bot's connection to Binance USD-M futures, on python-binance's AsyncClient.

`FuturesAccount` is the handful of calls the bot makes, for one account, with typed answers
(`reference_bot.payloads`) and one policy per kind of failure: transient errors are tried
again after an exponential pause on the bot's clock; -1021 (timestamp outside recvWindow)
re-measures the exchange's clock and tries once more; 429/418 hold every request until
Retry-After has passed; refusals surface at once as `Rejected`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import BinanceAPIException, BinanceRequestException

from reference_bot import payloads
from reference_bot.access import ExchangeAccess
from reference_bot.clock import Clock
from reference_bot.errors import ExchangeError, NotApplied, RateLimited, Rejected, Transient, Unauthorized
from reference_bot.payloads import OpenOrder, PayloadError, Position, TradingRules

log = logging.getLogger("reference_bot")
T = TypeVar("T")

# Binance error codes (https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code)
TIMESTAMP_OUTSIDE = -1021
TRANSIENT_CODES = {-1000, -1001, -1006, -1007}
UNAUTHORIZED_CODES = {-1002, -1022, -2014, -2015}
ORDER_DOES_NOT_EXIST = -2013
NO_NEED_TO_CHANGE_MARGIN_TYPE = -4046
DUPLICATE_CLIENT_ORDER_ID = -4116
EVERY_OPEN_ORDER_WEIGHT = 40
"""The request weight of GET /fapi/v1/openOrders without a symbol; with one, 1."""


@dataclass(frozen=True)
class Retries:
    attempts: int = 3
    initial_pause: float = 0.2
    max_pause: float = 5.0
    request_timeout: float = 10.0


class ClockedClient(AsyncClient):
    """python-binance's AsyncClient, stamping signed requests with the bot's clock.

    python-binance stamps a signed request with ``time.time() + timestamp_offset``; the offset
    is set here from the bot's clock (which may run faster than real time) and the measured
    skew of the exchange's clock, in the same synchronous step that stamps the request.
    """

    def __init__(self, access: ExchangeAccess, clock: Clock, *, session_params: dict[str, Any] | None = None) -> None:
        super().__init__(access.api_key, access.api_secret, session_params=session_params)
        self.clock = clock
        self.skew_ms = 0.0  # the exchange's clock minus ours
        self.FUTURES_URL = access.endpoints.rest_url.rstrip("/")
        if access.endpoints.sapi_url:
            self.MARGIN_API_URL = access.endpoints.sapi_url.rstrip("/")

    def _get_request_kwargs(self, method, signed: bool, force_params: bool = False, **kwargs):
        self.timestamp_offset = (self.clock.time() - time.time()) * 1000 + self.skew_ms
        return super()._get_request_kwargs(method, signed, force_params, **kwargs)


def classify(exc: BaseException) -> ExchangeError | None:
    """python-binance's and aiohttp's exceptions as the bot's; None for anything else."""
    if isinstance(exc, ExchangeError):
        return exc
    if isinstance(exc, BinanceAPIException):
        status, code = exc.status_code, exc.code
        text = f"HTTP {status} code {code}: {exc.message}"
        if status in (418, 429):
            headers = getattr(getattr(exc, "response", None), "headers", None) or {}
            try:
                retry_after = max(0.0, float(headers.get("Retry-After", "")))
            except ValueError:
                retry_after = 60.0  # Binance always sends it; a minute is its weight window
            return RateLimited(text, retry_after=retry_after, code=code)
        if status >= 500 or code in TRANSIENT_CODES or code == TIMESTAMP_OUTSIDE:
            return Transient(text, code=code)
        if status == 401 or code in UNAUTHORIZED_CODES:
            return Unauthorized(text, code=code)
        return Rejected(text, code=code)
    if isinstance(exc, BinanceRequestException):  # a body that is not JSON: a proxy or a 5xx page
        return Transient(f"invalid response: {exc.message[:200]}")
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)):
        return Transient(f"{type(exc).__name__}: {exc}")
    return None


class FuturesAccount:
    """The calls the bot makes on one account (its name only labels logs and errors)."""

    def __init__(self, access: ExchangeAccess, *, clock: Clock, account: str = "bot",
                 retries: Retries | None = None, trace_configs: Sequence[aiohttp.TraceConfig] = ()) -> None:
        self.access = access
        self.account = account
        self.clock = clock
        self.retries = retries or Retries()
        self.trace_configs = list(trace_configs)
        self._client = ClockedClient(access, clock, session_params={"trace_configs": self.trace_configs})
        self._client.REQUEST_TIMEOUT = self.retries.request_timeout
        self._blocked_until = 0.0
        self._random = random.Random()

    async def close(self) -> None:
        await self._client.close_connection()

    # --- the call policy --------------------------------------------------------------------------

    async def sync_time(self) -> None:
        """Measure the exchange's clock against ours (the midpoint of the question)."""
        asked = self.clock.time()
        raw = await self._send("read the server time", self._client.futures_time)
        self._client.skew_ms = raw["serverTime"] - (asked + self.clock.time()) / 2 * 1000

    async def _send(self, what: str, call: Callable[..., Awaitable[T]], **params: Any) -> T:
        """One attempt, unless a rate limit holds every request back."""
        held = self._blocked_until - self.clock.time()
        if held > 0:
            raise RateLimited(f"{what}: not sent, the exchange asked for a pause of {held:.1f} s more",
                              retry_after=held)
        try:
            async with asyncio.timeout(self.retries.request_timeout):
                return await call(**params)
        except Exception as exc:
            mapped = classify(exc)
            if mapped is None:
                raise
            if isinstance(mapped, RateLimited):
                self._blocked_until = max(self._blocked_until, self.clock.time() + mapped.retry_after)
            raise type(mapped)(f"{what}: {mapped}", **_details(mapped)) from None

    async def _call(self, what: str, call: Callable[..., Awaitable[T]], *, attempts: int | None = None,
                    **params: Any) -> T:
        """Send; after a transient failure, pause (doubling, with jitter) and send again."""
        attempts = attempts or self.retries.attempts
        resynced = False
        for attempt in range(1, attempts + 1):
            try:
                return await self._send(what, call, **params)
            except Transient as exc:
                if exc.code == TIMESTAMP_OUTSIDE and not resynced:
                    resynced = True
                    await self.sync_time()
                elif attempt == attempts:
                    raise
                else:
                    ceiling = min(self.retries.max_pause, self.retries.initial_pause * 2 ** (attempt - 1))
                    log.warning("exchange_retry account=%s call=%r attempt=%d error=%s", self.account, what,
                                attempt, exc)
                    await self.clock.sleep(self._random.uniform(ceiling / 2, ceiling))
        raise AssertionError("unreachable")

    async def _read(self, what: str, parse: Callable[[Any], T], call: Callable[..., Awaitable[Any]],
                    **params: Any) -> T:
        """`_call`, and the answer through ``parse``: an answer that is not as documented is an
        `ExchangeError` like any other failed call, never a crash."""
        raw = await self._call(what, call, **params)
        try:
            return parse(raw)
        except PayloadError as exc:
            raise ExchangeError(f"{what}: unexpected answer: {exc}") from None

    # --- start-up ---------------------------------------------------------------------------------

    async def trading_rules(self) -> dict[str, TradingRules]:
        return await self._read("read the trading rules", payloads.trading_rules, self._client.futures_exchange_info)

    async def set_margin_type(self, symbol: str, margin_type: str) -> None:
        """"No need to change" (-4046) means it already is."""
        try:
            await self._call(f"set {symbol} margin type to {margin_type}", self._client.futures_change_margin_type,
                             symbol=symbol, marginType=margin_type)
        except Rejected as exc:
            if exc.code != NO_NEED_TO_CHANGE_MARGIN_TYPE:
                raise

    async def set_leverage(self, symbol: str, leverage: int) -> None:
        answered = await self._read(f"set {symbol} leverage to {leverage}", payloads.leverage,
                                    self._client.futures_change_leverage, symbol=symbol, leverage=leverage)
        if answered != leverage:
            raise NotApplied(f"{symbol}: asked for leverage {leverage}, the exchange answered {answered}")

    # --- reads ------------------------------------------------------------------------------------

    def market_socket(self, streams: list[str]):
        """python-binance's combined socket of market-data ``streams`` on this exchange's stream host."""
        manager = BinanceSocketManager(self._client)
        manager.FSTREAM_URL = self.access.endpoints.ws_url.rstrip("/") + "/"
        return manager.futures_multiplex_socket(streams)

    async def mark_prices(self) -> dict[str, Decimal]:
        return await self._read("read mark prices", payloads.mark_prices, self._client.futures_mark_price)

    async def leverages(self) -> dict[str, int]:
        return await self._read("read symbol settings", payloads.leverages, self._client.futures_symbol_config)

    async def positions(self) -> dict[str, Position]:
        return await self._read("read positions", payloads.positions, self._client.futures_position_information)

    async def open_orders(self, symbol: str) -> list[OpenOrder]:
        return await self._read(f"read {symbol} open orders", payloads.open_orders,
                                self._client.futures_get_open_orders, symbol=symbol)

    async def open_orders_of(self, symbols: Sequence[str]) -> dict[str, list[OpenOrder]]:
        """Each of ``symbols``' open orders: a read per symbol, or one read of every open order once
        that weighs no more (`EVERY_OPEN_ORDER_WEIGHT` symbols or more), in one round trip."""
        if len(symbols) < EVERY_OPEN_ORDER_WEIGHT:
            return {symbol: await self.open_orders(symbol) for symbol in symbols}
        found: dict[str, list[OpenOrder]] = {symbol: [] for symbol in symbols}
        for order in await self._read("read every open order", payloads.open_orders,
                                      self._client.futures_get_open_orders):
            if order.symbol in found:
                found[order.symbol].append(order)
        return found

    async def wallet_balance(self) -> Decimal:
        return await self._read("read the account", payloads.wallet_balance, self._client.futures_account)

    async def order_status(self, symbol: str, client_order_id: str) -> str | None:
        """The order's status in any state; None if the exchange never saw it."""
        found = await self._find_order(symbol, client_order_id)
        if found is None:
            return None
        try:
            return payloads.order_status(found)
        except PayloadError as exc:
            raise ExchangeError(f"look up order {client_order_id}: unexpected answer: {exc}") from None

    async def _find_order(self, symbol: str, client_order_id: str) -> Any:
        try:
            return await self._call(f"look up order {client_order_id}", self._client.futures_get_order,
                                    symbol=symbol, origClientOrderId=client_order_id)
        except Rejected as exc:
            if exc.code == ORDER_DOES_NOT_EXIST:
                return None
            raise

    # --- orders -----------------------------------------------------------------------------------

    async def new_order(self, *, symbol: str, side: str, order_type: str, quantity: Decimal, client_order_id: str,
                        price: Decimal | None = None, reduce_only: bool = False) -> int:
        """Place an order at most once; returns the exchange's order id.

        Binance keeps client order ids unique only among open orders, so after an ambiguous
        failure (a timeout, a 5xx) the order is looked up first and sent again only if the
        exchange never saw it: a market order that filled must not fill twice.
        """
        params: dict[str, Any] = {"symbol": symbol, "side": side, "type": order_type, "quantity": str(quantity),
                                  "newClientOrderId": client_order_id}
        if price is not None:
            params.update(price=str(price), timeInForce="GTC")
        if reduce_only:
            params["reduceOnly"] = "true"
        what = f"{side} {quantity} {symbol} {order_type} ({client_order_id})"
        for attempt in range(1, self.retries.attempts + 1):
            try:
                answer = await self._send(what, self._client.futures_create_order, **params)
            except Transient as exc:
                with contextlib.suppress(Transient):
                    found = await self._find_order(symbol, client_order_id)
                    if found is not None:
                        return self._order_id(what, found)
                if attempt == self.retries.attempts:
                    raise
                log.warning("exchange_order_retry account=%s order=%r attempt=%d error=%s", self.account, what,
                            attempt, exc)
                await self.clock.sleep(min(self.retries.max_pause, self.retries.initial_pause * 2 ** (attempt - 1)))
                continue
            except Rejected as exc:
                found = await self._find_order(symbol, client_order_id) \
                    if exc.code == DUPLICATE_CLIENT_ORDER_ID else None  # an earlier attempt's, still open
                if found is None:
                    raise
                answer = found
            return self._order_id(what, answer)
        raise AssertionError("unreachable")

    @staticmethod
    def _order_id(what: str, answer: Any) -> int:
        try:
            return payloads.order_id(answer)
        except PayloadError as exc:
            raise ExchangeError(f"{what}: unexpected answer: {exc}") from None

    async def cancel_all_orders(self, symbol: str) -> None:
        await self._call(f"cancel all {symbol} orders", self._client.futures_cancel_all_open_orders, symbol=symbol)

    # --- the user-data stream's key ---------------------------------------------------------------

    async def create_listen_key(self) -> str:
        return await self._call("create a listenKey", self._client.futures_stream_get_listen_key)

    async def keepalive_listen_key(self, listen_key: str) -> None:
        await self._call("keep the listenKey alive", self._client.futures_stream_keepalive, listenKey=listen_key)


def _details(error: ExchangeError) -> dict[str, Any]:
    if isinstance(error, RateLimited):
        return {"retry_after": error.retry_after, "code": error.code}
    return {"code": error.code}
