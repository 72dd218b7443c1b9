"""Each fault knob, seen at the wire by python-binance (and switched through /sim/ too)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import aiohttp
import pytest
from binance.exceptions import BinanceAPIException

from tests.support.clients import sync_time
from tests.support.market_streams import market_socket
from tests.support.user_stream import user_stream

D = Decimal


async def test_latency_delays_only_the_chosen_endpoint(sim, canary):
    sim.faults.add_latency(0.3, "GET /fapi/v1/time")

    started = time.perf_counter()
    await canary.futures_time()
    slow = time.perf_counter() - started
    started = time.perf_counter()
    await canary.futures_exchange_info()
    fast = time.perf_counter() - started

    assert slow >= 0.3
    assert fast < 0.3


async def test_error_rate_fails_the_endpoint_with_the_chosen_code(sim, canary):
    sim.faults.fail("POST /fapi/v1/leverage", rate=1.0)

    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_change_leverage(symbol="BTCUSDT", leverage=5)
    [config] = await canary.futures_symbol_config(symbol="BTCUSDT")

    assert (exc.value.code, exc.value.status_code) == (-1001, 500)
    assert config["leverage"] == 20  # failed before it was carried out


async def test_error_after_processing_leaves_the_order_placed(sim, canary):
    sim.faults.fail("POST /fapi/v1/order", code=-1007, status=503, msg="Timeout waiting for response "
                    "from backend server. Send status unknown; execution status unknown.", after=True)

    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                                          newClientOrderId="retry-me")
    found = await canary.futures_get_order(symbol="BTCUSDT", origClientOrderId="retry-me")

    assert (exc.value.code, exc.value.status_code) == (-1007, 503)
    assert found["status"] == "FILLED"  # a blind retry would have doubled the position


async def test_rate_limit_storm_answers_429_until_retry_after(sim, clock, canary):
    sim.faults.rate_limit_storm(30)

    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_time()
    clock.advance(int(exc.value.response.headers["Retry-After"]))
    answer = await canary.futures_time()

    assert (exc.value.code, exc.value.status_code) == (-1003, 429)
    assert exc.value.response.headers["Retry-After"] == "30"
    assert "serverTime" in answer


async def test_dropped_stream_errors_then_python_binance_reconnects(sim, canary):
    async with user_stream(sim, canary) as stream:
        assert sim.faults.drop_stream("canary") == 1
        error = await stream.next()
        await asyncio.wait_for(sim.streams.connected("canary"), 10)  # python-binance waits 1-2 s
        await canary.futures_change_leverage(symbol="BTCUSDT", leverage=4)
        after = await stream.next_of("ACCOUNT_CONFIG_UPDATE")

    assert (error["e"], error["type"]) == ("error", "ConnectionClosedError")
    assert after["ac"] == {"s": "BTCUSDT", "l": 4}


async def test_a_ws_disconnect_cuts_market_data_connections_too_without_a_close_frame(sim, canary):
    # A network blip between a bot and Binance takes its price streams down with its user stream.
    async with user_stream(sim, canary) as stream, market_socket(sim, "ws/btcusdt@markPrice@1s") as prices:
        await asyncio.wait_for(sim.market_streams.subscribed("btcusdt@markPrice@1s"), 5)
        sim.faults.switch_on("ws_disconnect", 0, "canary")
        error = await stream.next()
        async with asyncio.timeout(5):
            cut = await prices.ws.receive()
            while cut.type == aiohttp.WSMsgType.TEXT:  # pushed before the cut
                cut = await prices.ws.receive()
        await asyncio.wait_for(sim.streams.connected("canary"), 10)  # python-binance reconnects in 1-2 s
    assert (error["e"], error["type"]) == ("error", "ConnectionClosedError")
    assert cut.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)  # no CLOSE frame: cut, not closed
    assert sim.market_streams.subscribers("btcusdt@markPrice@1s") == 0


async def test_stalled_stream_holds_events_until_resumed(sim, canary):
    async with user_stream(sim, canary) as stream:
        sim.faults.stall_stream("canary")
        await canary.futures_change_leverage(symbol="BTCUSDT", leverage=3)
        held = await stream.silent_for(0.3)
        sim.faults.stall_stream("canary", stalled=False)
        event = await stream.next()

    assert held
    assert event["ac"] == {"s": "BTCUSDT", "l": 3}


async def test_expire_listen_key_now(sim, canary):
    async with user_stream(sim, canary) as stream:
        key = stream.socket._listen_key
        assert sim.faults.expire_listen_key("canary")
        event = await stream.next()
        with pytest.raises(BinanceAPIException) as exc:
            await canary.futures_stream_keepalive(key)
        fresh = await canary.futures_stream_get_listen_key()

    assert event["e"] == "listenKeyExpired" and event["listenKey"] == key
    assert exc.value.code == -1125
    assert fresh != key


async def test_leverage_silently_not_applied(sim, canary):
    sim.faults.ignore_leverage("canary", "BTCUSDT")
    async with user_stream(sim, canary) as stream:
        answer = await canary.futures_change_leverage(symbol="BTCUSDT", leverage=5)
        await canary.futures_change_leverage(symbol="ETHUSDT", leverage=6)
        first_event = await stream.next()
    [config] = await canary.futures_symbol_config(symbol="BTCUSDT")

    assert answer["leverage"] == 5          # the answer claims success
    assert config["leverage"] == 20         # but nothing changed
    assert first_event["ac"] == {"s": "ETHUSDT", "l": 6}  # and no event for BTCUSDT


async def test_duplicated_events(sim, canary):
    sim.faults.duplicate_events("canary", copies=1)
    async with user_stream(sim, canary) as stream:
        await canary.futures_change_leverage(symbol="BTCUSDT", leverage=8)
        first, second = await stream.take(2)

    assert first == second and first["e"] == "ACCOUNT_CONFIG_UPDATE"


async def test_out_of_order_events(sim, canary):
    sim.faults.reorder_events("canary")
    async with user_stream(sim, canary) as stream:
        await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
        events = await stream.take(3)

    assert [e["e"] for e in events] == ["ACCOUNT_UPDATE", "ORDER_TRADE_UPDATE", "ORDER_TRADE_UPDATE"]
    assert [e["o"]["X"] for e in events[1:]] == ["FILLED", "NEW"]


async def test_admin_endpoints_set_and_clear_knobs(sim, canary):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sim.addresses.admin_url}/faults/rate-limit-storm", json={"seconds": 10}) as r:
            assert r.status == 200
        with pytest.raises(BinanceAPIException) as exc:
            await canary.futures_time()
        async with http.delete(f"{sim.addresses.admin_url}/faults") as r:
            cleared = await r.json()
        async with http.post(f"{sim.addresses.admin_url}/faults/no-such-knob", json={}) as r:
            unknown = r.status
        price = {"symbol": "BTCUSDT", "price": "61000"}
        async with http.post(f"{sim.addresses.admin_url}/price", json=price) as r:
            assert r.status == 200
        async with http.get(f"{sim.addresses.admin_url}/state") as r:
            state = await r.json()

    assert exc.value.status_code == 429
    assert cleared["storm_until"] == 0.0
    assert unknown == 404
    assert state["prices"]["BTCUSDT"] == "61000.00"
    assert state["accounts"]["canary"]["api_key"] == sim.accounts["canary"].api_key
    await sync_time(canary)
    assert (await canary.futures_symbol_ticker(symbol="BTCUSDT"))["price"] == "61000.00"


async def test_the_request_log_says_who_asked_what_without_signatures_and_pages_on(sim, canary):
    await sync_time(canary)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{sim.addresses.admin_url}/requests") as r:
            start = (await r.json())["next"]
        await canary.futures_change_leverage(symbol="BTCUSDT", leverage=7)
        await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                          quantity="0.005", price="30000", newClientOrderId="bot-a-1")
        async with http.get(f"{sim.addresses.admin_url}/requests", params={"since": start}) as r:
            page = await r.json()
        async with http.get(f"{sim.addresses.admin_url}/requests", params={"since": "-1"}) as r:
            refused = r.status

    changed = [(q["method"], q["path"], q["params"]) for q in page["requests"] if q["method"] != "GET"]
    assert [(m, p) for m, p, _ in changed] == [("POST", "/fapi/v1/leverage"), ("POST", "/fapi/v1/order")]
    assert changed[0][2] == {"symbol": "BTCUSDT", "leverage": "7"}
    assert changed[1][2]["newClientOrderId"] == "bot-a-1"
    assert not any({"signature", "timestamp"} & set(q["params"]) for q in page["requests"])
    assert {q["account"] for q in page["requests"] if q["method"] != "GET"} == {"canary"}
    assert page["next"] == start + len(page["requests"]) and page["lost"] == 0
    assert refused == 400
