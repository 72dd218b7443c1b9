"""Market-data streams: Binance's names and URLs, through python-binance's socket manager and a
plain websocket client, pushed as the simulator's clock passes (stepped or running)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import aiohttp
import pytest
from binance import BinanceSocketManager

from controller.sim.marketstreams import kline_bounds
from tests.support.clients import binance_client
from tests.support.clocks import make_clock
from tests.support.market_streams import market_socket
from tests.support.simulator import make_sim


@pytest.fixture
async def stepped():
    """A simulator whose clock moves only when the test advances it."""
    async with make_sim(clock=make_clock(0)) as simulator:
        yield simulator


async def test_a_raw_stream_pushes_only_as_the_stepped_clock_passes(stepped):
    async with market_socket(stepped, "ws/btcusdt@markPrice") as socket:
        await asyncio.wait_for(stepped.market_streams.subscribed("btcusdt@markPrice"), 5)
        assert await socket.silent_for(0.3)  # no wall-clock pushes on a stepped clock
        stepped.clock.advance(1)
        first = await socket.next()
        assert first["e"] == "markPriceUpdate" and first["s"] == "BTCUSDT"
        assert Decimal(first["p"]) == stepped.market.price("BTCUSDT")
        stepped.clock.advance(1)  # the 3 s stream is not due again before 3 s of clock
        assert await socket.silent_for(0.3)
        stepped.set_price("BTCUSDT", Decimal("61000"))
        stepped.clock.advance(2)
        second = await socket.next()
        assert Decimal(second["p"]) == Decimal("61000")
        assert second["E"] - first["E"] == 3000


async def test_combined_streams_are_wrapped_and_follow_the_mark_price(stepped):
    names = ["btcusdt@aggTrade", "btcusdt@bookTicker", "btcusdt@depth5@100ms", "btcusdt@kline_1m",
             "!markPrice@arr@1s"]
    async with market_socket(stepped, "stream?streams=" + "/".join(names)) as socket:
        await asyncio.wait_for(stepped.market_streams.subscribed(names[-1]), 5)
        stepped.set_price("ETHUSDT", Decimal("3100"))
        stepped.clock.advance(1)
        got = {name: await socket.next_of(name) for name in names}
    mark, tick = stepped.market.price("BTCUSDT"), Decimal("0.1")
    trade = got["btcusdt@aggTrade"]
    assert abs(Decimal(trade["p"]) - mark) == tick and Decimal(trade["q"]) > 0
    book = got["btcusdt@bookTicker"]
    assert Decimal(book["b"]) == mark - tick and Decimal(book["a"]) == mark + tick
    depth = got["btcusdt@depth5@100ms"]
    assert len(depth["b"]) == len(depth["a"]) == 5
    assert [Decimal(p) for p, _ in depth["b"]] == sorted((Decimal(p) for p, _ in depth["b"]), reverse=True)
    assert Decimal(depth["b"][0][0]) < mark < Decimal(depth["a"][0][0])
    candle = got["btcusdt@kline_1m"]["k"]
    assert candle["c"] == trade["p"] and candle["x"] is False and candle["n"] == 1
    everything = {item["s"]: item for item in got["!markPrice@arr@1s"]}
    assert Decimal(everything["ETHUSDT"]["p"]) == Decimal("3100")
    assert set(everything) == set(stepped.market.specs)


async def test_a_kline_closes_when_its_minute_ends(stepped):
    async with market_socket(stepped, "ws/btcusdt@kline_1m") as socket:
        await asyncio.wait_for(stepped.market_streams.subscribed("btcusdt@kline_1m"), 5)
        stepped.clock.advance(1)
        opened = (await socket.next())["k"]
        start, end = kline_bounds("1m", stepped.clock.time())
        assert (opened["t"], opened["T"]) == (int(start * 1000), int(end * 1000) - 1)
        stepped.clock.advance(end - stepped.clock.time())
        closed = (await socket.next())["k"]
        following = (await socket.next())["k"]
    assert closed["x"] is True and closed["t"] == opened["t"] and closed["n"] >= 1
    assert following["x"] is False and following["t"] == opened["T"] + 1


async def test_subscribe_list_and_unsubscribe_on_one_connection(stepped):
    async with market_socket(stepped, "ws") as socket:
        await socket.send({"method": "SUBSCRIBE", "params": ["ethusdt@aggTrade", "ethusdt@markPrice@1s"], "id": 1})
        assert await socket.next() == {"result": None, "id": 1}
        await socket.send({"method": "LIST_SUBSCRIPTIONS", "id": 2})
        assert await socket.next() == {"result": ["ethusdt@aggTrade", "ethusdt@markPrice@1s"], "id": 2}
        await socket.send({"method": "UNSUBSCRIBE", "params": ["ethusdt@aggTrade"], "id": 3})
        assert await socket.next() == {"result": None, "id": 3}
        stepped.clock.advance(1)
        assert (await socket.next())["e"] == "markPriceUpdate"  # raw: not wrapped
        await socket.send({"method": "SUBSCRIBE", "params": ["ethusdt@nonsense"], "id": 4})
        refused = await socket.next()
    assert refused["id"] == 4 and refused["error"]["code"] == 2 and "ethusdt@nonsense" in refused["error"]["msg"]


@pytest.mark.parametrize("path", ["ws/btcusdt@markprice", "ws/BTCUSDT@markPrice", "ws/nosuchusdt@aggTrade",
                                  "stream?streams=btcusdt@kline_7m", "market/stream?streams=btcusdt@depth7"])
async def test_a_url_naming_a_stream_binance_does_not_serve_is_refused(stepped, path):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(stepped.ws_url + path)
    assert refused.value.status == 400


async def test_python_binance_socket_manager_streams_on_a_running_clock(sim, clock):
    async with binance_client(sim) as client:
        manager = BinanceSocketManager(client)
        manager.FSTREAM_URL = sim.ws_url  # python-binance adds Binance's market/ and public/ paths
        sockets = [manager.symbol_mark_price_socket("BTCUSDT", fast=True),
                   manager.futures_depth_socket("BTCUSDT", depth="10"),
                   manager.aggtrade_futures_socket("BTCUSDT"),
                   manager.futures_multiplex_socket(["btcusdt@kline_5m", "btcusdt@bookTicker"])]
        for socket in sockets:
            socket.TIMEOUT = 0.05  # python-binance polls with this; its default makes closing take 10 s
        async with sockets[0] as mark, sockets[1] as depth, sockets[2] as trades, sockets[3] as multiplex:
            await asyncio.wait_for(sim.market_streams.subscribed("btcusdt@bookTicker"), 5)
            sim.set_price("BTCUSDT", Decimal("60500"))
            clock.advance(3)
            marked = await asyncio.wait_for(mark.recv(), 5)
            levels = await asyncio.wait_for(depth.recv(), 5)
            trade = await asyncio.wait_for(trades.recv(), 5)
            both = {}
            while len(both) < 2:
                message = await asyncio.wait_for(multiplex.recv(), 5)
                both[message["stream"]] = message["data"]
    assert marked["stream"] == "btcusdt@markPrice@1s" and Decimal(marked["data"]["p"]) == Decimal("60500")
    assert len(levels["data"]["b"]) == 10 and Decimal(levels["data"]["a"][0][0]) == Decimal("60500.1")
    assert trade["data"]["e"] == "aggTrade" and Decimal(trade["data"]["p"]) in (Decimal("60499.9"), Decimal("60500.1"))
    assert both["btcusdt@kline_5m"]["k"]["i"] == "5m" and Decimal(both["btcusdt@bookTicker"]["b"]) == Decimal("60499.9")


async def test_a_connection_is_closed_24_hours_after_it_opened(stepped):
    async with market_socket(stepped, "ws/btcusdt@markPrice") as socket:
        await asyncio.wait_for(stepped.market_streams.subscribed("btcusdt@markPrice"), 5)
        stepped.clock.advance(24 * 3600 - 1)
        assert (await socket.next())["e"] == "markPriceUpdate"
        stepped.clock.advance(1)
        closing = await asyncio.wait_for(socket.ws.receive(), 5)
    assert closing.type == aiohttp.WSMsgType.CLOSE


async def test_python_binance_kline_socket_gets_the_perpetual_s_continuous_klines(sim, clock):
    async with binance_client(sim) as client:
        socket = BinanceSocketManager(client)
        socket.FSTREAM_URL = sim.ws_url
        klines = socket.kline_futures_socket("BTCUSDT", "1m")  # market/ws/btcusdt_perpetual@continuousKline_1m
        klines.TIMEOUT = 0.05
        async with klines:
            await asyncio.wait_for(sim.market_streams.subscribed("btcusdt_perpetual@continuousKline_1m"), 5)
            sim.set_price("BTCUSDT", Decimal("60000"))
            clock.advance(1)
            candle = await asyncio.wait_for(klines.recv(), 5)
    assert candle["e"] == "continuous_kline" and candle["ps"] == "BTCUSDT" and candle["ct"] == "PERPETUAL"
    assert abs(Decimal(candle["k"]["c"]) - Decimal("60000")) == Decimal("0.1") and candle["k"]["i"] == "1m"


async def test_a_symbol_s_kline_and_its_perpetual_s_continuous_kline_are_one_candle(stepped):
    names = ["btcusdt@kline_1m", "btcusdt_perpetual@continuousKline_1m"]
    async with market_socket(stepped, "stream?streams=" + "/".join(names)) as socket:
        await asyncio.wait_for(stepped.market_streams.subscribed(names[0]), 5)
        for _ in range(2):  # two ticks, each awaited: a second advance before the first tick would make one
            stepped.clock.advance(1)
            candles = [(await socket.next_of(name))["k"] for name in names]
    assert candles[0]["n"] == candles[1]["n"] == 2  # each tick's trade counted once
    assert {k: v for k, v in candles[0].items() if k != "s"} == candles[1]
