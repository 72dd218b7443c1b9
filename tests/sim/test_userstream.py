"""The user-data websocket, read through python-binance's BinanceSocketManager.futures_user_socket()."""

from __future__ import annotations

from decimal import Decimal

import pytest
from binance.exceptions import BinanceAPIException

from tests.support.clients import sync_time
from tests.support.user_stream import user_stream

D = Decimal


async def test_market_order_pushes_new_trade_and_account_update(sim, canary):
    async with user_stream(sim, canary) as stream:
        order = await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                                  quantity="0.010", newClientOrderId="c-1")
        new, trade, account = await stream.take(3)

    assert new["e"] == "ORDER_TRADE_UPDATE"
    assert (new["o"]["x"], new["o"]["X"], new["o"]["c"]) == ("NEW", "NEW", "c-1")
    assert new["o"]["i"] == order["orderId"]
    assert (trade["o"]["x"], trade["o"]["X"], trade["o"]["l"], trade["o"]["L"]) == \
        ("TRADE", "FILLED", "0.010", "62000.10")
    assert trade["o"]["t"] > 0 and trade["o"]["N"] == "USDT" and D(trade["o"]["n"]) > 0
    assert account["e"] == "ACCOUNT_UPDATE" and account["a"]["m"] == "ORDER"
    [position] = account["a"]["P"]
    assert (position["s"], position["pa"], position["mt"]) == ("BTCUSDT", "0.010", "cross")
    assert position["ps"] == "BOTH"
    assert D(account["a"]["B"][0]["wb"]) < D("2000")


async def test_leverage_change_pushes_account_config_update(sim, canary):
    async with user_stream(sim, canary) as stream:
        await canary.futures_change_leverage(symbol="ETHUSDT", leverage=9)
        event = await stream.next()

    assert event["e"] == "ACCOUNT_CONFIG_UPDATE"
    assert event["ac"] == {"s": "ETHUSDT", "l": 9}


async def test_cancel_pushes_canceled(sim, canary):
    order = await canary.futures_create_order(symbol="ETHUSDT", side="BUY", type="LIMIT",
                                              timeInForce="GTC", quantity="0.100", price="2900")
    async with user_stream(sim, canary) as stream:
        await canary.futures_cancel_order(symbol="ETHUSDT", orderId=order["orderId"])
        event = await stream.next()

    assert (event["o"]["x"], event["o"]["X"], event["o"]["i"]) == ("CANCELED", "CANCELED", order["orderId"])


async def test_resting_order_fills_partially_on_the_stream(sim, master):
    async with user_stream(sim, master) as stream:
        await master.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                          quantity="5", price="61000")
        await stream.next_of("ORDER_TRADE_UPDATE")
        sim.set_price("BTCUSDT", D("61000"))
        partial = await stream.next_of("ORDER_TRADE_UPDATE")
        sim.tick()
        filled = await stream.next_of("ORDER_TRADE_UPDATE")

    assert (partial["o"]["X"], partial["o"]["m"]) == ("PARTIALLY_FILLED", True)
    assert filled["o"]["X"] == "FILLED" and filled["o"]["z"] == "5.000"


async def test_events_go_only_to_their_own_account(sim, canary, master):
    async with user_stream(sim, canary) as stream:
        await master.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
        assert await stream.silent_for(0.2)


async def test_margin_call_when_the_margin_ratio_runs_high(sim, canary):
    await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.500")
    async with user_stream(sim, canary) as stream:
        sim.set_price("BTCUSDT", D("58250"))
        call = await stream.next_of("MARGIN_CALL")

    [position] = call["p"]
    assert (position["s"], position["pa"], position["mt"]) == ("BTCUSDT", "0.500", "CROSSED")
    assert D(position["up"]) < 0 and D(position["mm"]) > 0 and D(call["cw"]) > 0


async def test_listen_key_expires_after_an_hour_without_keepalive(sim, clock, canary):
    async with user_stream(sim, canary) as stream:
        key = stream.socket._listen_key
        clock.advance(3601)
        expired = await stream.next()
        await sync_time(canary)
        await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
        silent = await stream.silent_for(0.2)

    assert expired == {"e": "listenKeyExpired", "E": expired["E"], "listenKey": key}
    assert silent  # no more events after listenKeyExpired
    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_stream_keepalive(key)
    assert exc.value.code == -1125


async def test_listen_key_is_reused_while_alive_and_kept_alive(sim, clock, canary):
    first = await canary.futures_stream_get_listen_key()
    clock.advance(50 * 60)
    kept = await canary.futures_stream_keepalive(first)
    clock.advance(50 * 60)
    again = await canary.futures_stream_get_listen_key()

    assert kept == {"listenKey": first}
    assert again == first


async def test_connection_is_closed_after_24_hours(sim, clock, canary):
    async with user_stream(sim, canary, reconnect=False) as stream:
        for _ in range(48):
            clock.advance(1800)
            await canary.futures_stream_keepalive(stream.socket._listen_key)  # no signature needed
        closed = await stream.next_of("error")

    assert closed["type"] in ("ConnectionClosedOK", "BinanceWebsocketClosed")
