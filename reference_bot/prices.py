"""Streamed mark prices: the bot's streaming mode (``bot: stream_prices: true`` in its strategy).

One combined socket of python-binance's socket manager carries `<symbol>@markPrice@1s` for every
traded symbol. A price counts as fresh for `max_age` seconds of the bot's clock after it arrived
(not after its event time: the exchange's clock may be skewed from the bot's); the bot trades
only on fresh prices and reads them over REST when the stream has none (a connection still
opening, lost, or silent), so a dead stream slows the bot, never misleads it.
python-binance reconnects a lost socket itself; a socket it gives up on is opened again here
after a pause on the bot's clock.

The socket is closed here, not by python-binance's own exit (`async with`): that one asks its
read loop to end and polls every 0.1 s of wall time until the loop notices, which it does only
when its socket next has a message or its 10 s receive timeout passes. A stopping bot (SIGTERM)
would wait up to 10 s on a quiet stream; closing the websocket first ends the read loop at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation

from binance.exceptions import BinanceWebsocketClosed, ReadLoopClosed
from binance.ws.constants import WSListenerState
from binance.ws.reconnecting_websocket import ReconnectingWebsocket

from reference_bot.clock import Clock
from reference_bot.config import BotSettings
from reference_bot.exchange import FuturesAccount

log = logging.getLogger("reference_bot")

REOPEN_PAUSE = 1.0
CLOSE_TURNS = 100  # event loop turns the read loop gets to end once its websocket is closed


class MarkPriceFeed:
    """The latest streamed mark price of each symbol, with the clock time it arrived at."""

    def __init__(self, exchange: FuturesAccount, symbols: Iterable[str], *,
                 max_age: float = BotSettings.price_max_age) -> None:
        self.exchange = exchange
        self.clock: Clock = exchange.clock
        self.symbols = sorted(symbols)
        self.max_age = max_age
        self._marks: dict[str, tuple[Decimal, float]] = {}
        self._arrived = asyncio.Event()

    def fresh(self) -> dict[str, Decimal] | None:
        """Every symbol's price if each is fresh, else None (the caller reads them over REST)."""
        now = self.clock.time()
        marks = {}
        for symbol in self.symbols:
            known = self._marks.get(symbol)
            if known is None or now - known[1] > self.max_age:
                return None
            marks[symbol] = known[0]
        return marks

    async def wait_fresh(self) -> None:
        """Until every symbol has a fresh price (bound it with a timeout)."""
        while self.fresh() is None:
            self._arrived.clear()
            await self._arrived.wait()

    async def run(self) -> None:
        """Listen until cancelled, reopening a socket python-binance gave up on."""
        streams = [f"{symbol.lower()}@markPrice@1s" for symbol in self.symbols]
        while True:
            socket = self.exchange.market_socket(streams)
            try:
                await socket.connect()
                try:
                    while True:
                        self._handle(await socket.recv())
                finally:
                    await close_promptly(socket)
            except (ReadLoopClosed, BinanceWebsocketClosed, OSError) as exc:
                log.warning("mark_price_stream_lost error=%s", exc)
            await self.clock.sleep(REOPEN_PAUSE)

    def _handle(self, message: dict) -> None:
        data = message.get("data") if isinstance(message, dict) else None
        if not isinstance(data, dict) or data.get("e") != "markPriceUpdate":
            if isinstance(message, dict) and message.get("e") == "error":
                log.warning("mark_price_stream_error type=%s message=%s", message.get("type"), message.get("m"))
            return
        try:
            symbol, price = data["s"], Decimal(data["p"])
        except (KeyError, TypeError, ValueError, InvalidOperation):
            log.error("mark_price_unparsable raw=%s", str(message)[:500])
            return
        if symbol in self.symbols and price > 0:
            self._marks[symbol] = (price, self.clock.time())
            self._arrived.set()


async def close_promptly(socket: ReconnectingWebsocket) -> None:
    """Close python-binance's ``socket`` without its exit's wall-clock wait (see the module's
    docstring): the read loop is told to end and its websocket closed, which ends the loop's
    pending receive at once; python-binance's exit then finds no read loop left to wait for."""
    socket.ws_state = WSListenerState.EXITING
    library_log = logging.getLogger("binance.ws.reconnecting_websocket")
    quiet = _ClosedByUs()
    library_log.addFilter(quiet)
    try:
        if socket.ws is not None:
            await socket.ws.close()  # the close handshake: bounded by the socket's 0.1 s close_timeout
        for _ in range(CLOSE_TURNS):
            if not socket._handle_read_loop:  # python-binance's mark of a running read loop
                break
            await asyncio.sleep(0)
    finally:
        library_log.removeFilter(quiet)
    await socket.__aexit__(None, None, None)


class _ClosedByUs(logging.Filter):
    """Drops python-binance's error record of the close this bot made (it logs every
    ConnectionClosedOK as an error)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("ConnectionClosedOK")
