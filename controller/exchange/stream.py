"""One account's user-data stream: typed events, never a missed fill or leverage change.

The life of a connection: create a listenKey, open the websocket, reconcile over REST (leverage
per symbol; one income read over the gap, then trades since the last seen trade id only for the
symbols that traded in it, so that a reconnect costs the same at 2 symbols or 100), then pump
events. A read the request-weight budget cannot pay for waits for the budget's next minute on
the same connection; until the reconcile is done the stream does not report itself connected. A listenKey is kept
alive every 30 minutes; the connection is rotated before Binance's 24 h cut; `listenKeyExpired`,
a close or an error ends the connection and a new one follows after an exponential backoff
with jitter. A periodic REST check (positions, then trades only where the stream left a
position unexplained) also catches a stream that stalls silently.
Duplicates (the same message twice, or a fill seen by both stream and REST) are dropped; a
message that does not parse is logged with its raw text and counted, and the stream goes on.

The websocket itself is aiohttp's: python-binance's socket manager reconnects on its own
wall-clock schedule, gives up after five attempts and reports disconnects only as queue
messages, while the controller must reconnect on its own Clock and reconcile every time.
The URL is the one python-binance builds (``{FSTREAM_URL}private/ws?listenKey=KEY``).
"""

from __future__ import annotations

import asyncio
from hashlib import sha256
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TypeVar

import aiohttp

from controller.clock import Backoff
from controller.exchange.client import ExchangeClient
from controller.exchange.errors import BudgetExhausted, ExchangeError
from controller.exchange.events import AccountUpdate, ExchangeEvent, Fill, LeverageChanged, StreamStatus
from controller.exchange.parse import PayloadError, stream_message
from controller.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

KEEPALIVE_EVERY = 30 * 60
ROTATE_AFTER = 23 * 3600 + 30 * 60  # Binance cuts a connection at 24 h; leave before it does
RECONCILE_EVERY = 5 * 60


class BoundedSet:
    """Remembers the last ``size`` keys: duplicate detection in bounded memory."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._keys: OrderedDict[object, None] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def add(self, key: object) -> bool:
        """True if ``key`` is new."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return True


@dataclass
class StreamStats:
    connects: int = 0
    disconnects: int = 0
    parse_failures: int = 0
    duplicates_dropped: int = 0
    reconciled_fills: int = 0
    reconciled_liquidations: int = 0
    reconciled_transfers: int = 0
    events: int = 0
    connected: bool = False
    last_message_at: float | None = None
    last_error: str | None = None
    reconnect_at: float | None = None  # when the current backoff ends
    budget_waits: int = 0  # reads that waited for the request-weight budget
    budget_wait_s: float = 0.0  # Clock seconds spent so


@dataclass
class StreamSettings:
    keepalive_every: float = KEEPALIVE_EVERY
    rotate_after: float = ROTATE_AFTER
    reconcile_every: float = RECONCILE_EVERY
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    healthy_after: float = 60.0  # a connection that lasted this long resets the backoff
    dedupe_window: int = 20_000
    gap_overlap: float = 60.0  # a (re)connect's income read starts this long before the last event heard
    budget_wait_max: float = 300.0  # what one reconcile may wait for the request-weight budget, in all


@dataclass
class UserStream:
    """Feeds ``sink`` with typed events for ``symbols`` of one account until cancelled."""

    client: ExchangeClient
    symbols: Iterable[str]
    sink: Callable[[ExchangeEvent], None]
    settings: StreamSettings = field(default_factory=StreamSettings)
    stats: StreamStats = field(default_factory=StreamStats)
    since: float | None = None  # fills before this time (epoch s) are history, not events

    def __post_init__(self) -> None:
        self.symbols = tuple(self.symbols)
        self.clock = self.client.clock
        self._seen_messages = BoundedSet(self.settings.dedupe_window)
        self._seen_fills = BoundedSet(self.settings.dedupe_window)
        self._last_trade_id: dict[str, int] = {}
        self._leverage: dict[str, int] = {}
        # (symbol, position side) -> amount, as the stream last reported it (hedge mode: two per symbol)
        self._position: dict[tuple[str, str], Decimal] = {}
        self._liquidations_read_to: float | None = None  # forceOrders are read from here on a (re)connect
        self._heard_to: float | None = None  # the exchange time of the last event the socket delivered
        self._connected_at: float | None = None  # when the current connection opened
        self._budget_waited = 0.0  # by the current reconcile (or keep-alive)

    async def run(self) -> None:
        # Jittered, so that the streams of many accounts cut at once do not come back at once.
        backoff = Backoff(self.clock, initial=self.settings.backoff_initial, maximum=self.settings.backoff_max,
                          jitter=True)
        async with aiohttp.ClientSession() as session:
            while True:
                reason = "closed"
                opened = self.clock.time()
                try:
                    reason = await self._connection(session)
                    # A connection the exchange ends at once (a bad key, a refusing proxy) must
                    # not become a reconnect storm: only one that lasted resets the backoff.
                    failed = self.clock.time() - opened < self.settings.healthy_after
                except (aiohttp.ClientError, ExchangeError, PayloadError, asyncio.TimeoutError, ConnectionError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    failed = True
                    self.stats.last_error = reason
                finally:
                    if self.stats.connected:
                        self.stats.connected = False
                        self.stats.disconnects += 1
                        self._emit(StreamStatus(self.client.account, False, reason, self.clock.time(), self.clock.time()))
                log.warning("user_stream_disconnected", account=self.client.account, reason=reason)
                if not failed:
                    backoff.reset()
                    continue
                delay = backoff.next()
                self.stats.reconnect_at = self.clock.time() + delay
                await self.clock.sleep(delay)

    async def _connection(self, session: aiohttp.ClientSession) -> str:
        """One connection's life; returns why it ended."""
        key = await self.client.create_listen_key()
        url = f"{self.client.endpoints.ws_url.rstrip('/')}/private/ws?listenKey={key}"
        async with session.ws_connect(url, heartbeat=30, autoping=True) as ws:
            self._connected_at = self.clock.time()
            # Connected first, reconciled second: whatever happens during the REST calls
            # arrives on the socket and is de-duplicated against what REST returned.
            await self.reconcile()
            self.stats.connects += 1
            self.stats.connected = True
            opened = self.clock.time()
            self._emit(StreamStatus(self.client.account, True, "connected", opened, opened))
            log.info("user_stream_connected", account=self.client.account, symbols=len(self.symbols))
            async with asyncio.TaskGroup() as tasks:
                housekeeping = tasks.create_task(self._housekeeping(key, ws, opened), name=f"stream-housekeeping-{self.client.account}")
                try:
                    return await self._pump(ws)
                finally:
                    housekeeping.cancel()

    async def _pump(self, ws: aiohttp.ClientWebSocketResponse) -> str:
        async for message in ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                if message.type == aiohttp.WSMsgType.ERROR:
                    return f"websocket error: {ws.exception()}"
                continue
            if self.handle_text(message.data) == "listenKeyExpired":
                return "listenKeyExpired"
        return f"closed by the exchange (code {ws.close_code})"

    async def _housekeeping(self, key: str, ws: aiohttp.ClientWebSocketResponse, opened: float) -> None:
        """Keep the key alive, reconcile periodically, rotate before 24 h; on the stream's Clock.
        Any failure closes the socket, which ends the connection and starts a new one."""
        next_keepalive = opened + self.settings.keepalive_every
        next_reconcile = opened + self.settings.reconcile_every
        rotate_at = opened + self.settings.rotate_after
        try:
            while True:
                now = self.clock.time()
                if now >= rotate_at:
                    log.info("user_stream_rotating", account=self.client.account)
                    await ws.close(message=b"rotating before the 24 h limit")
                    return
                if now >= next_keepalive:
                    self._budget_waited = 0.0
                    await self._paid(lambda: self.client.keepalive_listen_key(key))
                    next_keepalive = now + self.settings.keepalive_every
                if now >= next_reconcile:
                    await self.reconcile(full=False)
                    next_reconcile = now + self.settings.reconcile_every
                await self.clock.sleep(max(0.0, min(next_keepalive, next_reconcile, rotate_at) - self.clock.time()))
        except (ExchangeError, PayloadError, aiohttp.ClientError) as exc:
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("user_stream_housekeeping_failed", account=self.client.account, error=str(exc))
            await ws.close(message=b"housekeeping failed")

    # --- events -------------------------------------------------------------------------------------

    def handle_text(self, text: str) -> str | None:
        """Parse one websocket message and emit its events; returns the message's event type."""
        now = self.clock.time()
        self.stats.last_message_at = now
        try:
            message = stream_message(text)  # one typed decode (msgspec): every frame of every account comes here
            if not self._seen_messages.add(sha256(text.encode()).digest()):
                self.stats.duplicates_dropped += 1
                return message.kind
            if message.kind == "listenKeyExpired":
                return message.kind
            events = message.events(self.client.account, now)
            if message.event_time is not None:
                self._heard_to = max(self._heard_to or 0.0, message.event_time / 1000)
        except (ValueError, PayloadError, RecursionError) as exc:  # RecursionError: JSON nested past the stack
            self.stats.parse_failures += 1
            log.error("user_stream_unparsable", account=self.client.account, error=str(exc), raw=text[:2000])
            return None
        for event in events:
            self._accept(event)
        return message.kind

    def _accept(self, event: ExchangeEvent) -> None:
        kind = type(event)  # the events are final classes: one lookup, not a chain of isinstance calls
        if kind is Fill:
            if not self._seen_fills.add(event.key):
                self.stats.duplicates_dropped += 1
                return
            self._last_trade_id[event.symbol] = max(self._last_trade_id.get(event.symbol, 0), event.trade_id)
        elif kind is LeverageChanged:
            self._leverage[event.symbol] = event.leverage
        elif kind is AccountUpdate:
            self._position.update({(p.symbol, p.side): p.amount for p in event.positions})
        self._emit(event)

    def _emit(self, event: ExchangeEvent) -> None:
        self.stats.events += 1
        try:
            self.sink(event)
        except Exception:  # a consumer's bug must not end the stream
            log.exception("user_stream_sink_failed", account=self.client.account, event=type(event).__name__)

    # --- reconciliation ------------------------------------------------------------------------------

    async def reconcile(self, *, full: bool = True) -> None:
        """Fetch over REST what the stream may have missed: each symbol's leverage (emitted when
        it differs from the last known), fills since the last trade id, and (``full``) the
        exchange's liquidation and ADL orders on any symbol since the last such read (the placement
        at the first): a liquidation while the stream was down must still reach the policies, and
        their consumer counts each order once whichever way it came.

        The cost does not grow with the symbol count, so that a (re)connect fits the observing
        budget at 100 symbols: after a (re)connect (``full``) one income read over the gap names the
        symbols that traded in it (and the transfers it missed), and trades are read for those and
        for positions the stream has not explained. The periodic check reads positions, then trades
        only where the stream left a position unexplained (a silently stalled socket shows up there).
        A read the budget cannot pay for now waits for it (see `_paid`).
        """
        now = self.clock.time()
        self._budget_waited = 0.0
        settings = {s.symbol: s for s in await self._paid(self.client.symbol_settings)}
        for symbol in self.symbols:
            current = settings.get(symbol)
            if current is not None and self._leverage.get(symbol) != current.leverage:
                self._accept(LeverageChanged(self.client.account, symbol, current.leverage, now, now))
        positions = {(p.symbol, p.side): p.amount for p in await self._paid(self.client.positions)}
        keys = set(positions) | set(self._position)
        unexplained = [s for s in self.symbols
                       if any(positions.get(k, 0) != self._position.get(k, 0) for k in keys if k[0] == s)]
        for symbol in await self._traded_in_gap(now, unexplained) if full else unexplained:
            last = self._last_trade_id.get(symbol)
            if last is not None:
                fills = await self._paid(lambda: self.client.user_trades(symbol, from_id=last + 1))
            else:
                fills = await self._paid(lambda: self.client.user_trades(symbol, start_time=self.since))
            for fill in sorted(fills, key=lambda f: f.trade_id):
                if fill.key not in self._seen_fills:
                    self.stats.reconciled_fills += 1
                self._accept(fill)
        self._position.update({k: positions.get(k, 0) for k in keys if k[0] in self.symbols})
        if full:
            start = self._liquidations_read_to if self._liquidations_read_to is not None else self.since
            if start is not None:
                for update in await self._paid(lambda: self.client.force_orders(start_time=start)):
                    if update.liquidation is not None:
                        self.stats.reconciled_liquidations += 1
                        self._accept(update)
            self._liquidations_read_to = now

    async def _traded_in_gap(self, now: float, unexplained: list[str]) -> list[str]:
        """The symbols whose trades a (re)connect reads: those the account's income history lists
        from the last event the socket delivered (less `StreamSettings.gap_overlap`; the stream's
        start at the first connection) until now, and on a reconnect those in ``unexplained`` (at
        the first, every position held is, and the income read covers them). Every symbol when
        the gap has no start or the read was cut off at its limit: a fill is never left unread.

        Capital moved in or out while the socket was down comes from the same read: the TRANSFER
        rows up to this connection's opening (what came after, the socket delivers). The first
        connection has no such gap: whoever consumes the stream reads the wallet at its start."""
        heard_to = self._heard_to
        if heard_to is None and self._connected_at is not None:
            self._heard_to = self._connected_at  # the first connection: events start here
        start = heard_to - self.settings.gap_overlap if heard_to is not None else self.since
        if start is not None and self.since is not None:
            start = max(start, self.since)  # fills before the stream's start are history, not events
        if start is None:
            return list(self.symbols)
        history = await self._paid(lambda: self.client.income(start_time=start, end_time=now))
        if heard_to is not None and self._connected_at is not None:
            for update in history.transfers:
                if heard_to < update.ts_event <= self._connected_at:
                    self.stats.reconciled_transfers += 1
                    self._accept(update)
        if not history.complete:
            log.warning("user_stream_gap_income_cut_off", account=self.client.account, start=start, end=now)
            return list(self.symbols)
        if heard_to is None:  # the stream has explained no position yet: the income read alone tells
            unexplained = []
        return [s for s in self.symbols if s in history.symbols or s in unexplained]

    async def _paid(self, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``; when the request-weight budget cannot pay for it now, wait for the budget
        (logged and counted as a delay) rather than fail: a failed reconcile drops the connection
        and a new one spends the same weight again, forever. Waits at most
        `StreamSettings.budget_wait_max` per reconcile, then the refusal stands."""
        while True:
            try:
                return await read()
            except BudgetExhausted as exc:
                if self._budget_waited + exc.retry_after > self.settings.budget_wait_max:
                    raise
                self._budget_waited += exc.retry_after
                self.stats.budget_waits += 1
                self.stats.budget_wait_s += exc.retry_after
                log.warning("user_stream_budget_wait", account=self.client.account, delay_s=round(exc.retry_after, 3),
                            error=str(exc))
                await self.clock.sleep(exc.retry_after)
