"""Conditional orders through python-binance (which sends them to Binance's Algo Order API): they
rest as NEW, trigger when the price crosses, and fill as market (or limit) orders, with
ALGO_UPDATE and ORDER_TRADE_UPDATE events on the user stream."""

from __future__ import annotations

from decimal import Decimal

import pytest
from binance.exceptions import BinanceAPIException

from tests.support.wire_oracle import assert_matches_model
from tests.support.user_stream import user_stream

D = Decimal
ALGO_UPDATE = {"o": ("algo_update_o", False)}
ORDER_UPDATE = {"o": ("order_trade_update_o", False)}


async def long_btc(client, quantity: str = "0.010") -> None:
    await client.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=quantity)


async def test_a_close_all_stop_rests_then_closes_the_position_when_the_price_falls(sim, canary):
    await long_btc(canary)
    stop = await canary.futures_create_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET", stopPrice="61000",
                                             closePosition="true", workingType="MARK_PRICE")
    [resting] = await canary.futures_get_open_orders(symbol="BTCUSDT", conditional=True)
    assert_matches_model(stop, "rest_api", "new_algo_order_response")
    assert_matches_model(resting, "rest_api", "current_all_algo_open_orders_response_inner")
    assert (stop["algoStatus"], stop["orderType"], stop["triggerPrice"], stop["closePosition"]) == \
        ("NEW", "STOP_MARKET", "61000.00", True)
    assert await canary.futures_get_open_orders(symbol="BTCUSDT") == []  # not in the book until triggered

    async with user_stream(sim, canary) as stream:
        sim.set_price("BTCUSDT", D("61050"))
        assert await stream.silent_for(0.1)
        sim.set_price("BTCUSDT", D("60990"))
        triggering = await stream.next_of("ALGO_UPDATE")
        new, trade = await stream.next_of("ORDER_TRADE_UPDATE"), await stream.next_of("ORDER_TRADE_UPDATE")
        triggered, finished = await stream.next_of("ALGO_UPDATE"), await stream.next_of("ALGO_UPDATE")

    for event in (triggering, triggered, finished):
        assert_matches_model(event, "websocket_streams", "algo_update", ALGO_UPDATE)
    assert_matches_model(trade, "websocket_streams", "order_trade_update", ORDER_UPDATE)
    assert [e["o"]["X"] for e in (triggering, triggered, finished)] == ["TRIGGERING", "TRIGGERED", "FINISHED"]
    assert (new["o"]["o"], new["o"]["ot"], new["o"]["S"], new["o"]["c"]) == \
        ("MARKET", "STOP_MARKET", "SELL", stop["clientAlgoId"])
    assert (trade["o"]["X"], trade["o"]["l"]) == ("FILLED", "0.010")
    assert finished["o"]["ai"] == str(trade["o"]["i"]) and finished["o"]["aq"] == "0.010"
    assert await canary.futures_position_information(symbol="BTCUSDT") == []
    queried = await canary.futures_get_order(symbol="BTCUSDT", algoId=stop["algoId"])
    assert_matches_model(queried, "rest_api", "query_algo_order_response")
    assert (queried["algoStatus"], queried["actualOrderId"]) == ("FINISHED", str(trade["o"]["i"]))


async def test_a_reduce_only_take_profit_buys_back_a_short_when_the_price_falls(sim, canary):
    await canary.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.200")
    await canary.futures_create_order(symbol="ETHUSDT", side="BUY", type="TAKE_PROFIT_MARKET", stopPrice="2900",
                                      quantity="0.100", reduceOnly="true")
    sim.set_price("ETHUSDT", D("2899"))

    [position] = await canary.futures_position_information(symbol="ETHUSDT")
    [algo] = await canary.futures_get_all_orders(symbol="ETHUSDT", conditional=True)
    assert position["positionAmt"] == "-0.100"
    assert_matches_model(algo, "rest_api", "query_all_algo_orders_response_inner")
    assert algo["algoStatus"] == "FINISHED" and algo["reduceOnly"] is True


async def test_a_trailing_stop_follows_the_high_and_triggers_on_the_callback(sim, canary):
    await long_btc(canary)
    trail = await canary.futures_create_order(symbol="BTCUSDT", side="SELL", type="TRAILING_STOP_MARKET",
                                              quantity="0.010", callbackRate="1", reduceOnly="true")
    assert (trail["activatePrice"], trail["callbackRate"]) == ("62000.00", "1")  # the current price
    for price in ("62500", "63000", "62500"):  # 1 % under the high is 62370
        sim.set_price("BTCUSDT", D(price))
    assert (await canary.futures_get_order(symbol="BTCUSDT", algoId=trail["algoId"]))["algoStatus"] == "NEW"

    sim.set_price("BTCUSDT", D("62360"))

    assert (await canary.futures_get_order(symbol="BTCUSDT", algoId=trail["algoId"]))["algoStatus"] == "FINISHED"
    assert await canary.futures_position_information(symbol="BTCUSDT") == []


async def test_a_stop_limit_places_a_resting_limit_order_and_finishes_when_it_fills(sim, canary):
    stop = await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="STOP", stopPrice="62500",
                                             price="62400", quantity="0.010", timeInForce="GTC")
    sim.set_price("BTCUSDT", D("62500"))  # triggers; 62400 is under the market: the limit rests
    triggered = await canary.futures_get_order(symbol="BTCUSDT", algoId=stop["algoId"])
    [limit] = await canary.futures_get_open_orders(symbol="BTCUSDT")
    assert triggered["algoStatus"] == "TRIGGERED" and triggered["actualOrderId"] == str(limit["orderId"])
    assert (limit["type"], limit["origType"], limit["price"]) == ("LIMIT", "STOP", "62400.00")

    sim.set_price("BTCUSDT", D("62390"))

    assert (await canary.futures_get_order(symbol="BTCUSDT", algoId=stop["algoId"]))["algoStatus"] == "FINISHED"
    [position] = await canary.futures_position_information(symbol="BTCUSDT")
    assert position["positionAmt"] == "0.010"


async def test_cancel_pushes_canceled_and_a_cancelled_order_never_triggers(sim, canary):
    await long_btc(canary)
    stop = await canary.futures_create_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET", stopPrice="61000",
                                             quantity="0.010", reduceOnly="true")
    async with user_stream(sim, canary) as stream:
        answer = await canary.futures_cancel_order(symbol="BTCUSDT", algoId=stop["algoId"])
        event = await stream.next_of("ALGO_UPDATE")
    sim.set_price("BTCUSDT", D("60000"))

    assert_matches_model(answer, "rest_api", "cancel_algo_order_response")
    assert event["o"]["X"] == "CANCELED" and event["o"]["aid"] == stop["algoId"]
    [position] = await canary.futures_position_information(symbol="BTCUSDT")
    assert position["positionAmt"] == "0.010"
    with pytest.raises(BinanceAPIException) as again:
        await canary.futures_cancel_order(symbol="BTCUSDT", algoId=stop["algoId"])
    assert again.value.code == -2011


@pytest.mark.parametrize(("params", "code"), [
    (dict(side="SELL", type="STOP_MARKET", stopPrice="62100", quantity="0.010"), -2021),  # already crossed
    (dict(side="SELL", type="TAKE_PROFIT_MARKET", stopPrice="61900", quantity="0.010"), -2021),
    (dict(side="SELL", type="STOP_MARKET", stopPrice="61000", quantity="0.010", closePosition="true"), -1106),
    (dict(side="SELL", type="STOP_MARKET", quantity="0.010"), -1102),                      # no trigger price
    (dict(side="SELL", type="STOP_MARKET", stopPrice="61000.05", quantity="0.010"), -4014),
    (dict(side="SELL", type="TRAILING_STOP_MARKET", quantity="0.010", callbackRate="20"), -1130),
    (dict(side="SELL", type="STOP_MARKET", stopPrice="61000", quantity="0.010", positionSide="LONG"), -4061),
])
async def test_invalid_conditional_orders_get_binance_codes(sim, canary, params, code):
    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_create_order(symbol="BTCUSDT", **params)
    assert (exc.value.code, exc.value.status_code) == (code, 400)
    assert await canary.futures_get_open_orders(symbol="BTCUSDT", conditional=True) == []


async def test_an_open_conditional_order_holds_the_position_mode_and_the_margin_type(sim, canary):
    await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="STOP_MARKET", stopPrice="63000",
                                      quantity="0.010")
    with pytest.raises(BinanceAPIException) as mode:
        await canary.futures_change_position_mode(dualSidePosition="true")
    with pytest.raises(BinanceAPIException) as margin:
        await canary.futures_change_margin_type(symbol="BTCUSDT", marginType="ISOLATED")
    assert (mode.value.code, margin.value.code) == (-4067, -4047)


async def test_a_hedge_mode_stop_closes_its_own_side_only(sim, canary):
    await canary.futures_change_position_mode(dualSidePosition="true")
    await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                                      positionSide="LONG")
    await canary.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.010",
                                      positionSide="SHORT")
    await canary.futures_create_order(symbol="BTCUSDT", side="SELL", type="STOP_MARKET", stopPrice="61000",
                                      closePosition="true", positionSide="LONG")
    async with user_stream(sim, canary) as stream:
        sim.set_price("BTCUSDT", D("60900"))
        update = await stream.next_of("ALGO_UPDATE")

    assert (update["o"]["ps"], update["o"]["X"]) == ("LONG", "TRIGGERING")
    [short] = await canary.futures_position_information(symbol="BTCUSDT")
    assert (short["positionSide"], short["positionAmt"]) == ("SHORT", "-0.010")
