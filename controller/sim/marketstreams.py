"""Market-data websockets: Binance's USD-M stream names and payloads, on the simulator's clock.

Raw streams at `/ws/<stream>`, combined ones at `/stream?streams=a/b` (each payload wrapped as
``{"stream": name, "data": payload}``), under the host's root or Binance's `/market/` and
`/public/` prefixes (python-binance 1.0.37 builds those); SUBSCRIBE, UNSUBSCRIBE,
LIST_SUBSCRIPTIONS and the `combined` property work on any connection. Streams:
`<symbol>@markPrice[@1s]`, `!markPrice@arr[@1s]`, `<symbol>@kline_<interval>`,
`<pair>_perpetual@continuousKline_<interval>` (the same candles), `<symbol>@bookTicker`,
`<symbol>@aggTrade`, `<symbol>@depth<5|10|20>[@100ms|@500ms]`.

Pushes happen on the simulator's ticks, so they follow its clock, accelerated or stepped: a
stream is due when the clock passes its next push time (3 s for markPrice, 1 s for @1s; the
faster ones at every tick); a jump of hours pushes each due stream once, at the new time. The
trade tape is synthetic: each tick a symbol with subscribers prints one aggregate trade at the
taker's best price of the synthetic book (one tick through the mark price), which is what its
klines are made of.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from aiohttp import WSCloseCode, WSMsgType, web

from controller.clock import Clock
from controller.sim.funding import FundingState
from controller.sim.market import Market, SymbolSpec

CONNECTION_TTL = 24 * 60 * 60.0  # Binance closes every stream connection 24 hours after it opened
MARK_PRICE_PLACES = 8  # Binance's mark price stream sends 8 decimals ("11794.15000000")

KLINE_INTERVALS: dict[str, int] = {
    "1m": 60, "3m": 180, "5m": 300, "15m": 900, "30m": 1800, "1h": 3600, "2h": 7200,
    "4h": 14400, "6h": 21600, "8h": 28800, "12h": 43200, "1d": 86400, "3d": 259200,
    "1w": 604800, "1M": 0,  # a calendar month
}
_WEEK_OFFSET = 4 * 86400  # 1970-01-01 was a Thursday; Binance's weekly candles open on Mondays

_MARK_ALL = re.compile(r"^!markPrice@arr(@1s)?$")
_CONTINUOUS = re.compile(r"^(?P<symbol>[a-z0-9]+)_perpetual@continuousKline_(?P<interval>\w+)$")
KLINES = ("kline", "continuousKline")
_PER_SYMBOL = re.compile(
    r"^(?P<symbol>[a-z0-9]+)@(?:(?P<mark>markPrice(?P<fast>@1s)?)|kline_(?P<interval>\w+)|(?P<book>bookTicker)"
    r"|(?P<agg>aggTrade)|depth(?P<levels>5|10|20)(?P<speed>@100ms|@500ms)?)$")


class UnknownStream(ValueError):
    """A stream name Binance would not serve."""


@dataclass(frozen=True)
class Stream:
    """One parsed stream name: what it pushes, for which symbol, how often (0: every tick)."""

    name: str
    kind: str             # markPrice | markPriceAll | kline | continuousKline | bookTicker | aggTrade | depth
    symbol: str | None    # upper case, as the payloads spell it
    every: float
    interval: str = ""
    levels: int = 0


def parse(name: str, market: Market) -> Stream:
    """A stream name as Binance spells it (symbols in lower case), or UnknownStream."""
    found = _MARK_ALL.match(name)
    if found:
        return Stream(name, "markPriceAll", None, 1.0 if found.group(1) else 3.0)
    found = _PER_SYMBOL.match(name) or _CONTINUOUS.match(name)
    if found is None:
        raise UnknownStream(f"unknown stream name {name!r}")
    kline = "continuousKline" if found.re is _CONTINUOUS else "kline"
    symbol = found.group("symbol").upper()
    if market.spec(symbol) is None:
        raise UnknownStream(f"unknown symbol in stream name {name!r}")
    if kline == "kline" and found.group("mark"):
        return Stream(name, "markPrice", symbol, 1.0 if found.group("fast") else 3.0)
    if found.group("interval") is not None:
        interval = found.group("interval")
        if interval not in KLINE_INTERVALS:
            raise UnknownStream(f"unknown kline interval in stream name {name!r}")
        return Stream(name, kline, symbol, 0.0, interval=interval)
    if found.group("book"):
        return Stream(name, "bookTicker", symbol, 0.0)
    if found.group("agg"):
        return Stream(name, "aggTrade", symbol, 0.0)
    # Partial depth: 250 ms by default, 100 ms or 500 ms when asked; all faster than a tick but 500 ms.
    return Stream(name, "depth", symbol, 0.5 if found.group("speed") == "@500ms" else 0.0,
                  levels=int(found.group("levels")))


def kline_bounds(interval: str, now: float) -> tuple[float, float]:
    """The [open, close) of the ``interval`` candle holding ``now``, in seconds."""
    seconds = KLINE_INTERVALS[interval]
    if seconds == 0:
        day = datetime.fromtimestamp(now, tz=UTC)
        start = datetime(day.year, day.month, 1, tzinfo=UTC)
        end = datetime(day.year + day.month // 12, day.month % 12 + 1, 1, tzinfo=UTC)
        return start.timestamp(), end.timestamp()
    offset = _WEEK_OFFSET if interval == "1w" else 0
    start = (now - offset) // seconds * seconds + offset
    return start, start + seconds


@dataclass(frozen=True)
class Trade:
    """One synthetic aggregate trade of the tape."""

    agg_id: int
    trade_id: int
    price: Decimal
    qty: Decimal
    buyer_maker: bool
    time_ms: int


@dataclass
class Candle:
    symbol: str
    interval: str
    open_ms: int
    close_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    first_id: int
    last_id: int
    volume: Decimal = Decimal(0)
    quote: Decimal = Decimal(0)
    taker_volume: Decimal = Decimal(0)
    taker_quote: Decimal = Decimal(0)
    trades: int = 0

    def add(self, trade: Trade) -> None:
        self.high, self.low, self.close = max(self.high, trade.price), min(self.low, trade.price), trade.price
        self.last_id = trade.trade_id
        self.volume += trade.qty
        self.quote += trade.qty * trade.price
        if not trade.buyer_maker:  # the taker bought
            self.taker_volume += trade.qty
            self.taker_quote += trade.qty * trade.price
        self.trades += 1


@dataclass(eq=False)
class _Listener:
    ws: web.WebSocketResponse
    combined: bool
    opened_at: float
    transport: asyncio.BaseTransport | None = None
    streams: set[str] = field(default_factory=set)
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)


class MarketStreams:
    """Open market-data websockets, their subscriptions, the synthetic tape and the klines."""

    def __init__(self, clock: Clock, market: Market, funding: Callable[[str], FundingState], *,
                 seed: int = 0) -> None:
        self.clock = clock
        self.market = market
        self.funding = funding
        self._rng = random.Random(f"tape-{seed}")
        self._listeners: set[_Listener] = set()
        self._streams: dict[str, Stream] = {}
        self._due: dict[str, float] = {}          # stream name -> clock time of its next push
        self._candles: dict[tuple[str, str], Candle] = {}
        self._last_update: dict[str, int] = {}    # depth stream name -> its last "u"
        self._agg_ids: dict[str, int] = {}
        self._trade_ids: dict[str, int] = {}
        self._update_id = 1_000_000_000
        self._changed = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    # -- subscriptions -------------------------------------------------------------------------

    def subscribers(self, name: str) -> int:
        return sum(1 for listener in self._listeners if name in listener.streams)

    async def subscribed(self, name: str, count: int = 1) -> None:
        """Wait until ``count`` connections listen to stream ``name`` (bound it with a timeout)."""
        while self.subscribers(name) < count:
            await self._changed.wait()

    def _subscribe(self, listener: _Listener, names: list[str]) -> None:
        parsed = [parse(name, self.market) for name in names]  # all or none
        for stream in parsed:
            self._streams[stream.name] = stream
            listener.streams.add(stream.name)
        self._notify()

    def _unsubscribe(self, listener: _Listener, names: list[str]) -> None:
        listener.streams.difference_update(names)
        self._forget_unused()
        self._notify()

    def _forget_unused(self) -> None:
        used = set().union(*(listener.streams for listener in self._listeners))
        for name in [n for n in self._streams if n not in used]:
            del self._streams[name]
            self._due.pop(name, None)
            self._last_update.pop(name, None)
        symbols_intervals = {(s.symbol, s.interval) for s in self._streams.values() if s.kind in KLINES}
        for key in [k for k in self._candles if k not in symbols_intervals]:
            del self._candles[key]

    # -- time ----------------------------------------------------------------------------------

    def on_tick(self) -> None:
        """Close connections 24 h old, print the tape, then push every stream due at the clock's time."""
        now = self.clock.time()
        for listener in [lsn for lsn in self._listeners if now - lsn.opened_at >= CONNECTION_TTL]:
            self._listeners.discard(listener)
            self._spawn(listener.ws.close(code=WSCloseCode.OK, message=b"24h connection limit"))
        if not self._streams:
            return
        now_ms = int(now * 1000)
        self._update_id += 1
        taped = {s.symbol for s in self._streams.values() if s.kind in ("aggTrade", *KLINES)}
        trades = {symbol: self._print(symbol, now_ms) for symbol in sorted(taped) if symbol}
        closed = self._roll_candles(now, trades)
        for name, stream in list(self._streams.items()):
            ended = closed.get((stream.symbol, stream.interval)) if stream.kind in KLINES else None
            if ended is not None:
                self._push(name, _kline(stream, self.market.specs[ended.symbol], ended, now_ms, final=True))
            if stream.every and self._due.get(name, 0.0) > now:
                continue
            if stream.every:
                self._due[name] = (now // stream.every + 1) * stream.every
            payload = self._render(stream, now_ms, trades)
            if payload is not None:
                self._push(name, payload)

    def _print(self, symbol: str, now_ms: int) -> Trade:
        spec = self.market.specs[symbol]
        taker_buys = self._rng.random() < 0.5
        qty = max(spec.step, spec.round_qty_down(self.market.level_qty(symbol) * Decimal(
            repr(self._rng.uniform(0.001, 0.05)))))
        self._agg_ids[symbol] = self._agg_ids.get(symbol, 500_000_000) + 1
        self._trade_ids[symbol] = self._trade_ids.get(symbol, 2_000_000_000) + 1
        price = self.market.best(symbol, "BUY" if taker_buys else "SELL")
        return Trade(self._agg_ids[symbol], self._trade_ids[symbol], price, qty, not taker_buys, now_ms)

    def _roll_candles(self, now: float, trades: dict[str, Trade]) -> dict[tuple[str, str], Candle]:
        """Close the candles whose interval ended, open the current ones, add this tick's trade;
        returns the closed candles by (symbol, interval)."""
        closed: dict[tuple[str, str], Candle] = {}
        for key in {(s.symbol, s.interval) for s in self._streams.values() if s.kind in KLINES}:
            symbol, interval = key
            trade = trades[symbol]
            candle = self._candles.get(key)
            if candle is not None and candle.close_ms < trade.time_ms:
                closed[key] = candle
                candle = None
            if candle is None:
                start, end = kline_bounds(interval, now)
                candle = Candle(symbol, interval, int(start * 1000), int(end * 1000) - 1, trade.price,
                                trade.price, trade.price, trade.price, trade.trade_id, trade.trade_id)
                self._candles[key] = candle
            candle.add(trade)
        return closed

    # -- payloads ------------------------------------------------------------------------------

    def _render(self, stream: Stream, now_ms: int, trades: dict[str, Trade]) -> dict | list | None:
        if stream.kind == "markPriceAll":
            return [self._mark(spec, now_ms) for spec in self.market.specs.values()]
        assert stream.symbol is not None
        spec = self.market.specs[stream.symbol]
        if stream.kind == "markPrice":
            return self._mark(spec, now_ms)
        if stream.kind in KLINES:
            return _kline(stream, spec, self._candles[(spec.symbol, stream.interval)], now_ms, final=False)
        if stream.kind == "aggTrade":
            return _agg_trade(spec, trades[spec.symbol], now_ms)
        if stream.kind == "bookTicker":
            return self._book_ticker(spec, now_ms)
        return self._depth(stream, spec, now_ms)

    def _mark(self, spec: SymbolSpec, now_ms: int) -> dict:
        mark = self.market.price(spec.symbol)
        funding = self.funding(spec.symbol)
        return {"e": "markPriceUpdate", "E": now_ms, "s": spec.symbol,
                "p": _fmt(mark, MARK_PRICE_PLACES), "i": _fmt(funding.index, MARK_PRICE_PLACES),
                "P": _fmt(mark, MARK_PRICE_PLACES), "r": _fmt(funding.rate, 8), "T": funding.next_time_ms}

    def _book_ticker(self, spec: SymbolSpec, now_ms: int) -> dict:
        level = _qty(spec, self.market.level_qty(spec.symbol))
        return {"e": "bookTicker", "u": self._update_id, "E": now_ms, "T": now_ms, "s": spec.symbol,
                "b": _price(spec, self.market.best(spec.symbol, "SELL")), "B": level,
                "a": _price(spec, self.market.best(spec.symbol, "BUY")), "A": level}

    def _depth(self, stream: Stream, spec: SymbolSpec, now_ms: int) -> dict:
        """The synthetic book's top levels: one `level_gap` apart from the best, `level_qty` each."""
        gap, level = self.market.level_gap(spec.symbol), _qty(spec, self.market.level_qty(spec.symbol))
        bid, ask = self.market.best(spec.symbol, "SELL"), self.market.best(spec.symbol, "BUY")
        bids = [[_price(spec, bid - gap * k), level] for k in range(stream.levels) if bid - gap * k > 0]
        asks = [[_price(spec, ask + gap * k), level] for k in range(stream.levels)]
        previous = self._last_update.get(stream.name, self._update_id - 1)
        self._last_update[stream.name] = self._update_id
        return {"e": "depthUpdate", "E": now_ms, "T": now_ms, "s": spec.symbol, "U": previous + 1,
                "u": self._update_id, "pu": previous, "b": bids, "a": asks}

    # -- delivery ------------------------------------------------------------------------------

    def _push(self, name: str, payload: dict | list) -> None:
        raw = json.dumps(payload, separators=(",", ":"))
        wrapped = None
        for listener in self._listeners:
            if name not in listener.streams:
                continue
            if listener.combined:
                wrapped = wrapped or json.dumps({"stream": name, "data": payload}, separators=(",", ":"))
                listener.queue.put_nowait(wrapped)
            else:
                listener.queue.put_nowait(raw)

    # -- websocket -----------------------------------------------------------------------------

    async def handle(self, request: web.Request, names: list[str], *, combined: bool) -> web.StreamResponse:
        """One market-data connection listening to ``names`` (more may come by SUBSCRIBE)."""
        listener = _Listener(web.WebSocketResponse(), combined, self.clock.time(), request.transport)
        try:
            self._subscribe(listener, [n for n in names if n])
        except UnknownStream as exc:
            # Guessed: Binance refuses the upgrade of a URL naming a stream it does not serve.
            return web.json_response({"code": -1121, "msg": f"Invalid stream: {exc}"}, status=400)
        self._listeners.add(listener)  # before the handshake ends, so no push can slip past it
        self._notify()
        sender: asyncio.Task | None = None
        try:
            await listener.ws.prepare(request)
            sender = asyncio.create_task(self._send(listener), name="sim-marketstream")
            async for message in listener.ws:
                if message.type == WSMsgType.TEXT:
                    reply = self._command(listener, message.data)
                    if reply is not None:
                        listener.queue.put_nowait(json.dumps(reply, separators=(",", ":")))
        finally:
            self._listeners.discard(listener)
            self._forget_unused()
            self._notify()
            if sender is not None:
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sender
        return listener.ws

    def _command(self, listener: _Listener, text: str) -> dict | None:
        """SUBSCRIBE, UNSUBSCRIBE, LIST_SUBSCRIPTIONS, SET_PROPERTY and GET_PROPERTY (`combined`)."""
        try:
            request = json.loads(text)
        except ValueError:
            return {"error": {"code": 3, "msg": "Invalid JSON: expected value"}, "id": None}
        if not isinstance(request, dict):
            return {"error": {"code": 2, "msg": "Invalid request: expected an object"}, "id": None}
        ident, method, params = request.get("id"), request.get("method"), request.get("params", [])
        if not isinstance(params, list):
            return {"error": {"code": 1, "msg": "Invalid value type: expected an array of params"}, "id": ident}
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not all(isinstance(p, str) for p in params):
                return {"error": {"code": 2, "msg": "Invalid request: stream names must be strings"}, "id": ident}
            if method == "UNSUBSCRIBE":
                self._unsubscribe(listener, params)
                return {"result": None, "id": ident}
            try:
                self._subscribe(listener, params)
            except UnknownStream as exc:
                return {"error": {"code": 2, "msg": f"Invalid request: {exc}"}, "id": ident}
            return {"result": None, "id": ident}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(listener.streams), "id": ident}
        if method == "SET_PROPERTY" and len(params) == 2 and params[0] == "combined":
            if not isinstance(params[1], bool):
                return {"error": {"code": 1, "msg": "Invalid value type: expected Boolean"}, "id": ident}
            listener.combined = params[1]
            return {"result": None, "id": ident}
        if method == "GET_PROPERTY" and params == ["combined"]:
            return {"result": listener.combined, "id": ident}
        return {"error": {"code": 2, "msg": f"Invalid request: unknown method or property {method!r}"}, "id": ident}

    def drop_all(self) -> int:
        """Cut every market-data connection without a close frame (a network failure); returns how many."""
        dropped = 0
        for listener in list(self._listeners):
            if listener.transport is not None:
                listener.transport.abort()
                dropped += 1
        return dropped

    async def close_all(self, timeout: float = 2.0) -> None:
        listeners = list(self._listeners)
        self._listeners.clear()
        closing = [lsn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for lsn in listeners]
        if closing:
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), timeout)
        for task in list(self._tasks):
            task.cancel()

    async def _send(self, listener: _Listener) -> None:
        while True:
            text = await listener.queue.get()
            try:
                await listener.ws.send_str(text)
            except ConnectionError:  # the client went away mid-send: its handler cleans up
                return

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _fmt(d: Decimal, places: int) -> str:
    return f"{d:.{places}f}"


def _price(spec: SymbolSpec, d: Decimal) -> str:
    return _fmt(d, spec.price_precision)


def _qty(spec: SymbolSpec, d: Decimal) -> str:
    return _fmt(d, spec.qty_precision)


def _agg_trade(spec: SymbolSpec, trade: Trade, now_ms: int) -> dict:
    qty = _qty(spec, trade.qty)
    return {"e": "aggTrade", "E": now_ms, "s": spec.symbol, "a": trade.agg_id, "p": _price(spec, trade.price),
            "q": qty, "nq": qty, "f": trade.trade_id, "l": trade.trade_id, "T": trade.time_ms,
            "m": trade.buyer_maker}


def _kline(stream: Stream, spec: SymbolSpec, candle: Candle, now_ms: int, *, final: bool) -> dict:
    body = {"t": candle.open_ms, "T": candle.close_ms, "s": spec.symbol, "i": candle.interval,
            "f": candle.first_id, "L": candle.last_id, "o": _price(spec, candle.open),
            "c": _price(spec, candle.close), "h": _price(spec, candle.high), "l": _price(spec, candle.low),
            "v": _qty(spec, candle.volume), "n": candle.trades, "x": final,
            "q": _fmt(candle.quote, 8), "V": _qty(spec, candle.taker_volume),
            "Q": _fmt(candle.taker_quote, 8), "B": "0"}
    if stream.kind == "continuousKline":  # a pair's perpetual contract: no symbol in the candle
        del body["s"]
        return {"e": "continuous_kline", "E": now_ms, "ps": spec.pair, "ct": "PERPETUAL", "k": body}
    return {"e": "kline", "E": now_ms, "s": spec.symbol, "k": body}
