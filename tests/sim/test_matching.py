"""Orders through python-binance: placement, fills, cancels, filters and margin, as Binance answers."""

from __future__ import annotations

from decimal import Decimal

import pytest
from binance.exceptions import BinanceAPIException

D = Decimal


async def test_market_order_fills_and_opens_a_position(sim, canary):
    order = await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                              quantity="0.010", newOrderRespType="RESULT")

    assert order["status"] == "FILLED"
    assert order["executedQty"] == "0.010"
    assert D(order["avgPrice"]) == D("62000.10")  # one tick through the mark price
    [position] = await canary.futures_position_information(symbol="BTCUSDT")
    assert position["positionAmt"] == "0.010"
    assert D(position["entryPrice"]) == D("62000.10")
    assert "leverage" not in position  # v3 carries no leverage: it lives in symbolConfig


async def test_market_order_answer_is_an_ack_by_default(sim, canary):
    order = await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")

    assert order["status"] == "NEW"
    assert order["executedQty"] == "0.000"
    queried = await canary.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])
    assert queried["status"] == "FILLED"


async def test_large_market_order_fills_in_several_trades(sim, master):
    order = await master.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                              quantity="5", newOrderRespType="RESULT")

    trades = await master.futures_account_trades(symbol="BTCUSDT", orderId=order["orderId"])
    assert len(trades) == 2
    assert sum(D(t["qty"]) for t in trades) == D("5")
    assert D(trades[1]["price"]) > D(trades[0]["price"])  # walked the book


async def test_limit_order_rests_until_the_price_reaches_it(sim, canary):
    order = await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT",
                                              timeInForce="GTC", quantity="0.010", price="61000")
    assert order["status"] == "NEW"
    resting = await canary.futures_get_open_orders(symbol="BTCUSDT")
    assert [o["orderId"] for o in resting] == [order["orderId"]]

    sim.set_price("BTCUSDT", D("60990"))

    filled = await canary.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])
    assert filled["status"] == "FILLED"
    assert D(filled["avgPrice"]) == D("61000")
    assert await canary.futures_get_open_orders(symbol="BTCUSDT") == []
    [trade] = await canary.futures_account_trades(symbol="BTCUSDT")
    assert trade["maker"] is True


async def test_resting_order_larger_than_a_level_fills_partially_tick_by_tick(sim, master):
    order = await master.futures_create_order(symbol="BTCUSDT", side="SELL", type="LIMIT",
                                              timeInForce="GTC", quantity="5", price="63000")

    sim.set_price("BTCUSDT", D("63000"))
    first = await master.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])
    sim.tick()
    second = await master.futures_get_order(symbol="BTCUSDT", orderId=order["orderId"])

    assert first["status"] == "PARTIALLY_FILLED"
    assert D("0") < D(first["executedQty"]) < D("5")
    assert second["status"] == "FILLED"


async def test_cancel_order_then_cancel_again_is_unknown(sim, canary):
    order = await canary.futures_create_order(symbol="ETHUSDT", side="SELL", type="LIMIT",
                                              timeInForce="GTC", quantity="0.100", price="3100")

    cancelled = await canary.futures_cancel_order(symbol="ETHUSDT", orderId=order["orderId"])
    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_cancel_order(symbol="ETHUSDT", orderId=order["orderId"])

    assert cancelled["status"] == "CANCELED"
    assert (exc.value.code, exc.value.status_code) == (-2011, 400)


async def test_cancel_all_open_orders_of_a_symbol(sim, canary):
    for price in ("2900", "2950"):
        await canary.futures_create_order(symbol="ETHUSDT", side="BUY", type="LIMIT",
                                          timeInForce="GTC", quantity="0.100", price=price)
    await canary.futures_create_order(symbol="SOLUSDT", side="BUY", type="LIMIT",
                                      timeInForce="GTC", quantity="1", price="140")

    answer = await canary.futures_cancel_all_open_orders(symbol="ETHUSDT")

    assert answer == {"code": 200, "msg": "The operation of cancel all open order is done."}
    assert await canary.futures_get_open_orders(symbol="ETHUSDT") == []
    assert len(await canary.futures_get_open_orders()) == 1


async def test_closing_a_position_realises_pnl_into_the_wallet(sim, canary):
    await canary.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.500")
    sim.set_price("ETHUSDT", D("3100"))
    await canary.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.500",
                                      reduceOnly="true")

    trades = await canary.futures_account_trades(symbol="ETHUSDT")
    account = await canary.futures_account()
    [position] = [p for p in account["positions"] if p["symbol"] == "ETHUSDT"]

    realized = D(trades[1]["realizedPnl"])
    fees = sum(D(t["commission"]) for t in trades)
    assert realized == D("0.500") * (D("3099.99") - D("3000.01"))
    assert D(account["totalWalletBalance"]) == D("1800") + realized - fees
    assert position["positionAmt"] == "0.000"


async def test_reduce_only_without_a_position_is_rejected(sim, canary):
    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET",
                                          quantity="0.010", reduceOnly=True)
    assert exc.value.code == -2022


async def test_reduce_only_market_order_stops_at_the_position(sim, canary):
    await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    order = await canary.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.020",
                                              reduceOnly="true", newOrderRespType="RESULT")

    assert (order["status"], order["executedQty"]) == ("EXPIRED", "0.010")
    assert (await canary.futures_position_information(symbol="BTCUSDT")) == []


async def test_client_order_id_is_unique_among_open_orders(sim, canary):
    params = dict(symbol="ETHUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.100",
                  price="2900", newClientOrderId="canary-1")
    first = await canary.futures_create_order(**params)
    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_create_order(**params)
    await canary.futures_cancel_order(symbol="ETHUSDT", origClientOrderId="canary-1")
    again = await canary.futures_create_order(**params)

    assert exc.value.code == -4116
    assert again["orderId"] != first["orderId"]


@pytest.mark.parametrize(("params", "code"), [
    (dict(symbol="NOPEUSDT", side="BUY", type="MARKET", quantity="1"), -1121),
    (dict(symbol="BTCUSDT", side="BUY", type="MARKET"), -1102),
    (dict(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="abc"), -1100),
    (dict(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.0015"), -1111),
    (dict(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001"), -4164),
    (dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.010",
          price="61000.05"), -4014),
    (dict(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="0.010",
          price="70000"), -4016),
    (dict(symbol="BTCUSDT", side="BUY", type="LIMIT", quantity="0.010", price="61000"), -1102),
    (dict(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="1"), -2019),
    (dict(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
          newClientOrderId="x" * 37), -4015),
    (dict(symbol="BTCUSDT", side="UP", type="MARKET", quantity="0.010"), -1117),
    (dict(symbol="BTCUSDT", side="BUY", type="ICEBERG", quantity="0.010"), -1116),
])
async def test_invalid_orders_get_binance_codes(sim, canary, params, code):
    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_create_order(**params)
    assert (exc.value.code, exc.value.status_code) == (code, 400)


async def test_post_only_order_that_would_take_is_rejected(sim, canary):
    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="GTX",
                                          quantity="0.010", price="62010")
    assert exc.value.code == -5022


async def test_ioc_limit_fills_what_it_can_and_expires_the_rest(sim, master):
    order = await master.futures_create_order(symbol="BTCUSDT", side="BUY", type="LIMIT", timeInForce="IOC",
                                              quantity="5", price="62000.10", newOrderRespType="RESULT")
    assert order["status"] == "EXPIRED"
    assert D("0") < D(order["executedQty"]) < D("5")


async def test_user_trades_from_id_reads_forward(sim, canary):
    for _ in range(3):
        await canary.futures_create_order(symbol="XRPUSDT", side="BUY", type="MARKET", quantity="20")
    trades = await canary.futures_account_trades(symbol="XRPUSDT")

    later = await canary.futures_account_trades(symbol="XRPUSDT", fromId=trades[1]["id"])

    assert [t["id"] for t in later] == [t["id"] for t in trades[1:]]
