"""The account's user-data stream: order, position and leverage events, as they happen.

The websocket is aiohttp's, opened on python-binance's futures URL form
(``{ws_url}/private/ws?listenKey=KEY``). python-binance's own socket manager is not used: it
keeps the listenKey alive and reconnects on wall-clock timers, while the exchange expires the
key on its own clock, which on the simulator can run hundreds of times faster. Here the key is
kept alive and a lost connection retried (exponential pause with jitter) on the bot's clock.

Nothing here has to be exact: the bot reconciles its books over REST on its own schedule, so
an event the stream misses is found there.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from reference_bot.errors import ExchangeError
from reference_bot.exchange import FuturesAccount
from reference_bot.payloads import Event, PayloadError, StreamEvent, stream_events

log = logging.getLogger("reference_bot")


@dataclass(frozen=True)
class StreamSettings:
    keepalive_every: float = 30 * 60  # Binance expires a listenKey 60 minutes after its last keepalive
    pause_initial: float = 0.5
    pause_max: float = 30.0
    healthy_after: float = 60.0       # a connection that lasted this long resets the pause


class UserStream:
    """Feeds ``sink`` the account's events until cancelled; `StreamEvent` on each (dis)connection."""

    def __init__(self, exchange: FuturesAccount, sink: Callable[[Event], None],
                 settings: StreamSettings | None = None) -> None:
        self.exchange = exchange
        self.clock = exchange.clock
        self.sink = sink
        self.settings = settings or StreamSettings()
        self._random = random.Random()
        self._up = False

    async def run(self) -> None:
        failures = 0
        # Its own session (the REST one sends the API key on every request), traced the same way.
        async with aiohttp.ClientSession(trace_configs=self.exchange.trace_configs) as session:
            while True:
                opened = self.clock.time()
                reason = "cancelled"
                try:
                    reason = await self._connection(session)
                    # A connection ended at once (a bad key, a refusing proxy) must not become a
                    # reconnect storm: only one that lasted resets the pause.
                    failures = 0 if self.clock.time() - opened >= self.settings.healthy_after else failures + 1
                except (aiohttp.ClientError, ExchangeError, asyncio.TimeoutError, ConnectionError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                    failures += 1
                finally:
                    if self._up:
                        self._up = False
                        self.sink(StreamEvent(False, reason))
                log.warning("user_stream_disconnected account=%s reason=%s", self.exchange.account, reason)
                if failures:
                    ceiling = min(self.settings.pause_max, self.settings.pause_initial * 2 ** (failures - 1))
                    await self.clock.sleep(self._random.uniform(ceiling / 2, ceiling))

    async def _connection(self, session: aiohttp.ClientSession) -> str:
        """One connection's life; returns why it ended."""
        key = await self.exchange.create_listen_key()
        url = f"{self.exchange.access.endpoints.ws_url.rstrip('/')}/private/ws?listenKey={key}"
        async with session.ws_connect(url, heartbeat=30) as ws:
            self._up = True
            self.sink(StreamEvent(True, "connected"))
            log.info("user_stream_connected account=%s", self.exchange.account)
            keepalive = asyncio.create_task(self._keep_alive(key, ws), name=f"bot-listen-key-{self.exchange.account}")
            try:
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.ERROR:
                        return f"websocket error: {ws.exception()}"
                    if message.type == aiohttp.WSMsgType.TEXT and self._handle(message.data) == "listenKeyExpired":
                        return "listenKeyExpired"
                return f"closed by the exchange (code {ws.close_code})"
            finally:
                keepalive.cancel()

    async def _keep_alive(self, key: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Every ``keepalive_every`` of the bot's clock; a failure closes the socket (and reconnects)."""
        try:
            while True:
                await self.clock.sleep(self.settings.keepalive_every)
                await self.exchange.keepalive_listen_key(key)
        except ExchangeError as exc:
            log.warning("user_stream_keepalive_failed account=%s error=%s", self.exchange.account, exc)
            await ws.close(message=b"keepalive failed")

    def _handle(self, text: str) -> str | None:
        """Parse one message and hand its events on; returns its event type."""
        try:
            raw = json.loads(text)
            kind = raw.get("e") if isinstance(raw, dict) else None
            if kind is None:
                raise PayloadError("not a JSON object with an event type 'e'")
            events = stream_events(raw)
        except (ValueError, PayloadError) as exc:
            log.error("user_stream_unparsable account=%s error=%s raw=%s", self.exchange.account, exc, text[:500])
            return None
        for event in events:
            self.sink(event)
        return kind
