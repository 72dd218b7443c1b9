"""Hedge mode through python-binance: a LONG and a SHORT position on one symbol, orders naming
their position side, and Binance's codes when the side does not match the account's mode."""

from __future__ import annotations

from decimal import Decimal

import pytest
from binance.exceptions import BinanceAPIException

from tests.support.wire_oracle import assert_matches_model
from tests.support.user_stream import user_stream

D = Decimal


@pytest.fixture
async def hedged(canary):
    await canary.futures_change_position_mode(dualSidePosition="true")
    return canary


async def test_a_position_side_must_match_the_mode(sim, canary):
    with pytest.raises(BinanceAPIException) as one_way:
        await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                                          positionSide="LONG")
    await canary.futures_change_position_mode(dualSidePosition="true")
    with pytest.raises(BinanceAPIException) as hedge:
        await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    with pytest.raises(BinanceAPIException) as reduce_only:
        await canary.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.010",
                                          positionSide="LONG", reduceOnly="true")
    with pytest.raises(BinanceAPIException) as nothing_to_close:
        await canary.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.010",
                                          positionSide="LONG")

    assert (one_way.value.code, hedge.value.code) == (-4061, -4061)
    assert (reduce_only.value.code, nothing_to_close.value.code) == (-1106, -2022)
    assert await canary.futures_get_all_orders(symbol="BTCUSDT") == []


async def test_long_and_short_positions_live_side_by_side(sim, hedged):
    long = await hedged.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                                             positionSide="LONG", newOrderRespType="RESULT")
    await hedged.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.020",
                                      positionSide="SHORT")

    positions = await hedged.futures_position_information(symbol="BTCUSDT")
    account = await hedged.futures_account()

    assert long["positionSide"] == "LONG"
    assert {(p["positionSide"], p["positionAmt"]) for p in positions} == {("LONG", "0.010"), ("SHORT", "-0.020")}
    for item in positions:
        assert_matches_model(item, "rest_api", "position_information_v3_response_inner")
    held = {(p["positionSide"], p["positionAmt"]) for p in account["positions"] if p["symbol"] == "BTCUSDT"}
    assert held == {("LONG", "0.010"), ("SHORT", "-0.020")}
    [trade] = await hedged.futures_account_trades(symbol="BTCUSDT", orderId=long["orderId"])
    assert trade["positionSide"] == "LONG"


async def test_closing_one_side_leaves_the_other_and_tells_the_stream(sim, hedged):
    await hedged.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                                      positionSide="LONG")
    await hedged.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.010",
                                      positionSide="SHORT")
    sim.set_price("BTCUSDT", D("63000"))
    async with user_stream(sim, hedged) as stream:
        # Asking to close more than the LONG holds closes the LONG only, as reduce-only does.
        closed = await hedged.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.020",
                                                   positionSide="LONG", newOrderRespType="RESULT")
        await stream.next_of("ORDER_TRADE_UPDATE")
        trade = await stream.next_of("ORDER_TRADE_UPDATE")
        update = await stream.next_of("ACCOUNT_UPDATE")

    assert (closed["status"], closed["executedQty"]) == ("EXPIRED", "0.010")
    assert_matches_model(trade, "websocket_streams", "order_trade_update", {"o": ("order_trade_update_o", False)})
    assert_matches_model(update, "websocket_streams", "account_update", {"a": ("account_update_a", False)})
    assert (trade["o"]["ps"], trade["o"]["S"], trade["o"]["R"]) == ("LONG", "SELL", False)
    assert D(trade["o"]["rp"]) == D("0.010") * (D("62999.90") - D("62000.10"))
    assert {(p["ps"], p["pa"]) for p in update["a"]["P"]} == {("LONG", "0.000"), ("SHORT", "-0.010")}
    [short] = await hedged.futures_position_information(symbol="BTCUSDT")
    assert (short["positionSide"], short["positionAmt"]) == ("SHORT", "-0.010")


async def test_the_mode_cannot_change_while_a_side_is_held(sim, hedged):
    await hedged.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.100",
                                      positionSide="SHORT")
    with pytest.raises(BinanceAPIException) as exc:
        await hedged.futures_change_position_mode(dualSidePosition="false")
    assert exc.value.code == -4068
