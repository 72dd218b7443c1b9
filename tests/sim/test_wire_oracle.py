"""The simulator's wire, judged by Binance's own SDK models (binance-sdk-derivatives-trading-usds-futures).

Those models are generated from Binance's API specification with strict types (a price is a
string, an id an integer). Every payload the simulator sends must validate against its model,
and must not carry a field the model does not know: a field name we invented would pass our
own client and fail on the real exchange.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from tests.support.clients import sync_time
from tests.support.market_streams import market_socket
from tests.support.user_stream import user_stream
from tests.support.wire_oracle import assert_matches_model

async def test_rest_responses_match_binances_models(canary, master):
    assert_matches_model(await canary.futures_time(), "rest_api", "check_server_time_response")
    assert_matches_model(await canary.futures_change_leverage(symbol="BTCUSDT", leverage=10), "rest_api", "change_initial_leverage_response")
    for item in await canary.futures_symbol_config():
        assert_matches_model(item, "rest_api", "symbol_configuration_response_inner")
    order = await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01",
                                              newOrderRespType="RESULT")
    assert_matches_model(order, "rest_api", "new_order_response")
    await canary.futures_create_order(symbol="BTCUSDT", side="SELL", type="LIMIT", quantity="0.01", price="900000",
                                      timeInForce="GTC")
    resting = await canary.futures_get_open_orders(symbol="BTCUSDT")
    for item in resting:
        assert_matches_model(item, "rest_api", "current_all_open_orders_response_inner")
    assert_matches_model(await canary.futures_cancel_order(symbol="BTCUSDT", orderId=resting[0]["orderId"]),
          "rest_api", "cancel_order_response")
    assert_matches_model(await canary.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"]), "rest_api", "query_order_response")
    for item in await canary.futures_position_information():
        assert_matches_model(item, "rest_api", "position_information_v3_response_inner")
    for item in await canary.futures_account_trades(symbol="BTCUSDT"):
        assert_matches_model(item, "rest_api", "account_trade_list_response_inner")
    assert_matches_model(await canary.futures_account(), "rest_api", "account_information_v2_response",
                         {"assets": ("account_information_v2_response_assets_inner", True),
           "positions": ("account_information_v2_response_positions_inner", True)})
    for item in await master.futures_leverage_bracket():
        assert_matches_model(item, "rest_api", "notional_and_leverage_brackets_response1_inner",
                             {"brackets": ("notional_and_leverage_brackets_response1_inner_brackets_inner", True)})
    assert_matches_model(await master.futures_leverage_bracket(symbol="BTCUSDT"), "rest_api",
                         "notional_and_leverage_brackets_response2",
                         {"brackets": ("notional_and_leverage_brackets_response2_brackets_inner", True)})
    assert_matches_model(await canary.futures_mark_price(symbol="ETHUSDT"), "rest_api", "mark_price_response1")


async def test_user_stream_events_match_binances_models(sim, canary):
    async with user_stream(sim, canary) as stream:
        await canary.futures_change_leverage(symbol="BTCUSDT", leverage=20)
        assert_matches_model(await stream.next_of("ACCOUNT_CONFIG_UPDATE"), "websocket_streams",
                             "account_config_update", {"ac": ("account_config_update_ac", False)})
        price = Decimal((await canary.futures_mark_price(symbol="BTCUSDT"))["markPrice"])
        quantity = (1800 * 18 / price).quantize(Decimal("0.001"))  # 18x the canary's 1800 USDT
        await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity=str(quantity))
        assert_matches_model(await stream.next_of("ORDER_TRADE_UPDATE"), "websocket_streams", "order_trade_update",
                             {"o": ("order_trade_update_o", False)})
        assert_matches_model(await stream.next_of("ACCOUNT_UPDATE"), "websocket_streams", "account_update",
                             {"a": ("account_update_a", False)})
        # At 18x, a 5.5 % drop loses 99 % of the margin balance: far past the margin call.
        sim.set_price("BTCUSDT", (price * Decimal("0.945")).quantize(Decimal("0.1")))
        assert_matches_model(await stream.next_of("MARGIN_CALL"), "websocket_streams", "margin_call",
                             {"p": ("margin_call_p_inner", True)})
        assert sim.faults.expire_listen_key("canary")
        assert_matches_model(await stream.next_of("listenKeyExpired"), "websocket_streams", "listen_key_expired")


async def test_market_stream_payloads_match_binances_models(sim, clock):
    streams = {
        "btcusdt@markPrice": ("mark_price_stream_response", None),
        "ethusdt@markPrice@1s": ("mark_price_stream_response", None),
        "btcusdt@kline_1m": ("kline_candlestick_streams_response",
                             {"k": ("kline_candlestick_streams_response_k", False)}),
        "btcusdt_perpetual@continuousKline_1m": (
            "continuous_contract_kline_candlestick_streams_response",
            {"k": ("continuous_contract_kline_candlestick_streams_response_k", False)}),
        "btcusdt@bookTicker": ("individual_symbol_book_ticker_streams_response", None),
        "btcusdt@aggTrade": ("aggregate_trade_streams_response", None),
        "btcusdt@depth20": ("partial_book_depth_streams_response", None),
    }
    async with market_socket(sim, "stream?streams=" + "/".join([*streams, "!markPrice@arr"])) as socket:
        await asyncio.wait_for(sim.market_streams.subscribed("!markPrice@arr"), 5)
        clock.advance(3)
        for name, (module, nested) in streams.items():
            assert_matches_model(await socket.next_of(name), "websocket_streams", module, nested)
        for item in await socket.next_of("!markPrice@arr"):
            assert_matches_model(item, "websocket_streams", "mark_price_stream_for_all_market_response_inner")


async def test_funding_answers_and_events_match_binances_models(sim, clock, canary):
    await canary.futures_change_margin_type(symbol="ETHUSDT", marginType="ISOLATED")
    await canary.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.100")
    async with user_stream(sim, canary) as stream:
        clock.advance(8 * 3600)  # past the next funding time, wherever in its window the clock was
        update = await stream.next_of("ACCOUNT_UPDATE")
    assert update["a"]["m"] == "FUNDING_FEE" and [p["s"] for p in update["a"]["P"]] == ["ETHUSDT"]  # isolated
    assert_matches_model(update, "websocket_streams", "account_update", {"a": ("account_update_a", False)})
    await sync_time(canary)
    for item in await canary.futures_funding_rate(symbol="ETHUSDT"):
        assert_matches_model(item, "rest_api", "get_funding_rate_history_response_inner")
    for item in await canary.futures_income_history(incomeType="FUNDING_FEE"):
        assert_matches_model(item, "rest_api", "get_income_history_response_inner")
    assert_matches_model(await canary.futures_mark_price(symbol="ETHUSDT"), "rest_api", "mark_price_response1")


def test_the_oracle_refuses_an_invented_field_and_a_wrong_type():
    good = {"symbol": "BTCUSDT", "leverage": 5, "maxNotionalValue": "1000000"}
    assert_matches_model(good, "rest_api", "change_initial_leverage_response")
    with pytest.raises(AssertionError, match="unknown to Binance"):
        assert_matches_model({**good, "levrage": 5}, "rest_api", "change_initial_leverage_response")
    with pytest.raises(Exception, match="leverage"):
        assert_matches_model({**good, "leverage": "5"}, "rest_api", "change_initial_leverage_response")


async def test_force_orders_match_binances_model(sim, canary):
    await canary.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.100")
    sim.auto_deleverage("canary", "ETHUSDT")
    [adl] = await canary.futures_liquidation_orders()
    assert_matches_model(adl, "rest_api", "users_force_orders_response_inner")
