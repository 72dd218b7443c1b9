"""One account's user-data stream: typed events, never a missed fill or leverage change.

The life of a connection: create a listenKey, open the websocket, reconcile over REST (trades
since the last seen trade id, leverage per symbol), then pump events. A listenKey is kept
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
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal

import aiohttp
import orjson

from controller.canonical import sha256_hex
from controller.clock import Backoff
from controller.exchange.client import ExchangeClient
from controller.exchange.errors import ExchangeError
from controller.exchange.events import AccountUpdate, ExchangeEvent, Fill, LeverageChanged, StreamStatus
from controller.exchange.parse import PayloadError, stream_events
from controller.logs import get_logger

log = get_logger(__name__)

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


@dataclass
class StreamSettings:
    keepalive_every: float = KEEPALIVE_EVERY
    rotate_after: float = ROTATE_AFTER
    reconcile_every: float = RECONCILE_EVERY
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    healthy_after: float = 60.0  # a connection that lasted this long resets the backoff
    dedupe_window: int = 20_000


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
                    await self.client.keepalive_listen_key(key)
                    next_keepalive = now + self.settings.keepalive_every
                if now >= next_reconcile:
                    await self.reconcile(full=False)
                    next_reconcile = now + self.settings.reconcile_every
                await self.clock.sleep(max(0.0, min(next_keepalive, next_reconcile, rotate_at) - self.clock.time()))
        except (ExchangeError, PayloadError, aiohttp.ClientError) as exc:
            self.stats.last_error = f"{type(exc).__name__}: {exc}"
            log.warning("user_stream_housekeeping_failed", account=self.client.account, error=str(exc))
            await ws.close(message=b"housekeeping failed")

    async def _missed_transfers(self) -> None:
        """Capital moved in or out while the socket was down: the income rows of type TRANSFER from
        the last event it delivered until this connection opened (what came after, it delivers).
        The first connection has no gap: whoever consumes the stream reads the wallet at its start."""
        if self._connected_at is None:
            return
        if self._heard_to is None:  # the first connection: nothing was missed, events start here
            self._heard_to = self._connected_at
            return
        if self._connected_at <= self._heard_to:
            return
        for update in await self.client.transfers(start_time=self._heard_to + 0.001, end_time=self._connected_at):
            self.stats.reconciled_transfers += 1
            self._accept(update)

    # --- events -------------------------------------------------------------------------------------

    def handle_text(self, text: str) -> str | None:
        """Parse one websocket message and emit its events; returns the message's event type."""
        self.stats.last_message_at = self.clock.time()
        try:
            raw = orjson.loads(text)  # several times json.loads's speed: every frame of every account comes here
            kind = raw.get("e") if isinstance(raw, dict) else None
            if not isinstance(kind, str):
                raise PayloadError("not a JSON object with an event type 'e'")
            if not self._seen_messages.add(sha256_hex(text)):
                self.stats.duplicates_dropped += 1
                return kind
            if kind == "listenKeyExpired":
                return kind
            events = stream_events(raw, self.client.account, self.clock.time())
            if isinstance(raw.get("E"), (int, float)):
                self._heard_to = max(self._heard_to or 0.0, raw["E"] / 1000)
        except (ValueError, PayloadError, RecursionError) as exc:  # RecursionError: JSON nested past the stack
            self.stats.parse_failures += 1
            log.error("user_stream_unparsable", account=self.client.account, error=str(exc), raw=text[:2000])
            return None
        for event in events:
            self._accept(event)
        return kind

    def _accept(self, event: ExchangeEvent) -> None:
        if isinstance(event, Fill):
            if not self._seen_fills.add(event.key):
                self.stats.duplicates_dropped += 1
                return
            self._last_trade_id[event.symbol] = max(self._last_trade_id.get(event.symbol, 0), event.trade_id)
        elif isinstance(event, LeverageChanged):
            self._leverage[event.symbol] = event.leverage
        elif isinstance(event, AccountUpdate):
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

        After a (re)connect (``full``) every symbol's trades are read. The periodic check is
        cheap whatever the symbol count: one positions read, and trades only for symbols whose
        position the stream has not explained (a silently stalled socket shows up there).
        """
        now = self.clock.time()
        settings = {s.symbol: s for s in await self.client.symbol_settings()}
        for symbol in self.symbols:
            current = settings.get(symbol)
            if current is not None and self._leverage.get(symbol) != current.leverage:
                self._accept(LeverageChanged(self.client.account, symbol, current.leverage, now, now))
        positions = {(p.symbol, p.side): p.amount for p in await self.client.positions()}
        keys = set(positions) | set(self._position)
        unexplained = [s for s in self.symbols
                       if any(positions.get(k, 0) != self._position.get(k, 0) for k in keys if k[0] == s)]
        for symbol in self.symbols if full else unexplained:
            last = self._last_trade_id.get(symbol)
            if last is not None:
                fills = await self.client.user_trades(symbol, from_id=last + 1)
            else:
                fills = await self.client.user_trades(symbol, start_time=self.since)
            for fill in sorted(fills, key=lambda f: f.trade_id):
                if fill.key not in self._seen_fills:
                    self.stats.reconciled_fills += 1
                self._accept(fill)
        self._position.update({k: positions.get(k, 0) for k in keys if k[0] in self.symbols})
        if full:
            start = self._liquidations_read_to if self._liquidations_read_to is not None else self.since
            if start is not None:
                for update in await self.client.force_orders(start_time=start):
                    if update.liquidation is not None:
                        self.stats.reconciled_liquidations += 1
                        self._accept(update)
            self._liquidations_read_to = now
            await self._missed_transfers()
