"""The calls strategies make besides placing and cancelling, through python-binance's clients:
the 24 h ticker, test orders, order modification, and every order of a symbol (sync and async)."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from binance import Client
from binance.exceptions import BinanceAPIException

from tests.support.wire_oracle import assert_matches_model
from tests.support.clients import sync_time
from tests.support.user_stream import user_stream

D = Decimal


async def test_ticker_24hr_follows_the_price_path_and_the_trades(sim, clock, canary):
    sim.set_price("BTCUSDT", D("63000"))
    clock.advance(600)
    sim.set_price("BTCUSDT", D("61000"))
    clock.advance(600)
    sim.set_price("BTCUSDT", D("62500"))
    await sync_time(canary)
    await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")

    ticker = await canary.futures_ticker(symbol="BTCUSDT")

    assert_matches_model(ticker, "rest_api", "ticker24hr_price_change_statistics_response1")
    assert (ticker["openPrice"], ticker["highPrice"], ticker["lowPrice"], ticker["lastPrice"]) == \
        ("62000.00", "63000.00", "61000.00", "62500.00")
    assert ticker["priceChange"] == "500.00" and ticker["priceChangePercent"] == "0.806"
    assert (ticker["volume"], ticker["lastQty"], ticker["count"]) == ("0.010", "0.010", 1)
    assert D(ticker["weightedAvgPrice"]) == D("62500.10")  # the one trade's price
    assert ticker["firstId"] == ticker["lastId"] > 0
    assert ticker["closeTime"] - ticker["openTime"] <= 24 * 3600 * 1000


async def test_ticker_24hr_forgets_what_is_older_than_a_day_and_lists_every_symbol(sim, clock, canary):
    sim.set_price("ETHUSDT", D("3300"))
    clock.advance(25 * 3600)
    sim.set_price("ETHUSDT", D("3100"))

    tickers = await canary.futures_ticker()
    [eth] = [t for t in tickers if t["symbol"] == "ETHUSDT"]

    assert {t["symbol"] for t in tickers} == set(sim.market.specs)
    for item in tickers:
        assert_matches_model(item, "rest_api", "ticker24hr_price_change_statistics_response2_inner")
    assert (eth["openPrice"], eth["highPrice"], eth["lastPrice"]) == ("3300.00", "3300.00", "3100.00")
    assert (eth["count"], eth["firstId"], eth["lastId"]) == (0, -1, -1)


async def test_test_order_validates_like_an_order_and_places_nothing(sim, canary):
    answer = await canary.futures_create_test_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                                    timeInForce="GTC", quantity="0.010", price="61000")
    with pytest.raises(BinanceAPIException) as tick:
        await canary.futures_create_test_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                               quantity="0.010", price="61000.05")
    with pytest.raises(BinanceAPIException) as margin:
        await canary.futures_create_test_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="1")

    assert answer == {}
    assert (tick.value.code, margin.value.code) == (-4014, -2019)
    assert await canary.futures_get_open_orders() == []
    assert await canary.futures_get_all_orders(symbol="BTCUSDT") == []


async def _resting_buy(client, quantity="0.010", price="61000", **extra) -> dict:
    return await client.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC",
                                             quantity=quantity, price=price, **extra)


async def test_modify_moves_a_resting_order_and_pushes_an_amendment(sim, canary):
    order = await _resting_buy(canary)
    async with user_stream(sim, canary) as stream:
        modified = await canary.futures_modify_order(symbol="BTCUSDT", orderId=order["orderId"], side="BUY",
                                                     quantity="0.020", price="60500")
        event = await stream.next_of("ORDER_TRADE_UPDATE")

    assert_matches_model(modified, "rest_api", "modify_order_response")
    assert_matches_model(event, "websocket_streams", "order_trade_update", {"o": ("order_trade_update_o", False)})
    assert (modified["orderId"], modified["status"], modified["price"], modified["origQty"]) == \
        (order["orderId"], "NEW", "60500.00", "0.020")
    assert (event["o"]["x"], event["o"]["X"], event["o"]["p"], event["o"]["q"]) == \
        ("AMENDMENT", "NEW", "60500.00", "0.020")
    [resting] = await canary.futures_get_open_orders(symbol="BTCUSDT")
    assert (resting["price"], resting["origQty"]) == ("60500.00", "0.020")


async def test_modify_to_a_crossing_price_trades_at_once(sim, canary):
    order = await _resting_buy(canary)
    await canary.futures_modify_order(symbol="BTCUSDT", origClientOrderId=order["clientOrderId"], side="BUY",
                                      quantity="0.010", price="62100")

    done = await canary.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])
    assert done["status"] == "FILLED" and D(done["avgPrice"]) == D("62000.10")


@pytest.mark.parametrize(("change", "code"), [
    (dict(quantity="0.010", price="61000"), -5027),       # nothing to change
    (dict(quantity="0.010", price="61000.05"), -4014),    # off the tick: refused, order kept
    (dict(quantity="0.0105", price="61000"), -1111),
    (dict(quantity="0.010", price="70000"), -4016),
])
async def test_modify_refusals_leave_the_order_as_it_was(sim, canary, change, code):
    order = await _resting_buy(canary)
    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_modify_order(symbol="BTCUSDT", orderId=order["orderId"], side="BUY", **change)

    assert (exc.value.code, exc.value.status_code) == (code, 400)
    [resting] = await canary.futures_get_open_orders(symbol="BTCUSDT")
    assert (resting["price"], resting["origQty"], resting["status"]) == ("61000.00", "0.010", "NEW")


async def test_modify_needs_an_open_order_and_both_quantity_and_price(sim, canary):
    order = await _resting_buy(canary)
    with pytest.raises(BinanceAPIException) as no_price:
        await canary.futures_modify_order(symbol="BTCUSDT", orderId=order["orderId"], side="BUY", quantity="0.02")
    await canary.futures_cancel_order(symbol="BTCUSDT", orderId=order["orderId"])
    with pytest.raises(BinanceAPIException) as closed:
        await canary.futures_modify_order(symbol="BTCUSDT", orderId=order["orderId"], side="BUY",
                                          quantity="0.020", price="61000")
    with pytest.raises(BinanceAPIException) as unknown:
        await canary.futures_modify_order(symbol="BTCUSDT", orderId=1, side="BUY", quantity="0.020", price="61000")

    assert (no_price.value.code, closed.value.code, unknown.value.code) == (-1102, -2013, -2013)


async def test_modify_to_at_most_the_filled_quantity_cancels_a_partial_fill(sim, master):
    order = await _resting_buy(master, quantity="5", price="61000")
    sim.set_price("BTCUSDT", D("61000"))
    partial = await master.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])
    assert partial["status"] == "PARTIALLY_FILLED"

    modified = await master.futures_modify_order(symbol="BTCUSDT", orderId=order["orderId"], side="BUY",
                                                 quantity=partial["executedQty"], price="61000")

    assert (modified["status"], modified["executedQty"]) == ("CANCELED", partial["executedQty"])


async def test_a_post_only_order_modified_to_take_is_cancelled(sim, canary):
    order = await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTX",
                                              quantity="0.010", price="61000")

    modified = await canary.futures_modify_order(symbol="BTCUSDT", orderId=order["orderId"], side="BUY",
                                                 quantity="0.010", price="62100")

    assert (modified["status"], modified["executedQty"]) == ("CANCELED", "0.000")


async def test_all_orders_reads_forward_from_an_order_id(sim, canary):
    ids = [(await _resting_buy(canary, price=str(61000 - i * 10)))["orderId"] for i in range(4)]

    recent = await canary.futures_get_all_orders(symbol="BTCUSDT", limit=2)
    forward = await canary.futures_get_all_orders(symbol="BTCUSDT", orderId=ids[1], limit=2)

    assert [o["orderId"] for o in recent] == ids[2:]
    assert [o["orderId"] for o in forward] == ids[1:3]
    for item in forward:
        assert_matches_model(item, "rest_api", "all_orders_response_inner")


async def test_all_orders_through_the_sync_client(sim, canary):
    """python-binance's blocking Client, run off the event loop the simulator serves on."""
    await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    keys = sim.accounts["canary"]

    def read() -> list[dict]:
        client = Client(keys.api_key, keys.api_secret, ping=False)  # its ping would go to api.binance.com
        client.FUTURES_URL = sim.rest_url
        try:
            client.timestamp_offset = client.futures_time()["serverTime"] - int(time.time() * 1000)
            return client.futures_get_all_orders(symbol="BTCUSDT")
        finally:
            client.close_connection()

    [order] = await asyncio.to_thread(read)
    assert (order["symbol"], order["status"], order["executedQty"]) == ("BTCUSDT", "FILLED", "0.010")
