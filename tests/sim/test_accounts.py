"""Account reads and configuration through python-binance: leverage, margin type, sub-accounts."""

from __future__ import annotations

from decimal import Decimal

import pytest
from binance.exceptions import BinanceAPIException

D = Decimal


async def test_set_leverage_answers_and_shows_in_symbol_config(sim, canary):
    answer = await canary.futures_change_leverage(symbol="BTCUSDT", leverage=7)
    [config] = await canary.futures_symbol_config(symbol="BTCUSDT")

    assert answer == {"leverage": 7, "maxNotionalValue": "230000000", "symbol": "BTCUSDT"}
    assert config == {"symbol": "BTCUSDT", "marginType": "CROSSED", "isAutoAddMargin": False,
                      "leverage": 7, "maxNotionalValue": "230000000"}


async def test_leverage_outside_the_brackets_is_4028(sim, canary):
    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_change_leverage(symbol="FILUSDT", leverage=50)  # FIL tops out at 25x
    assert (exc.value.code, exc.value.status_code) == (-4028, 400)
    assert exc.value.message == "Leverage 50 is not valid"


async def test_position_risk_v2_carries_leverage_and_margin_type(sim, canary):
    await canary.futures_change_leverage(symbol="ETHUSDT", leverage=12)
    await canary.futures_change_margin_type(symbol="ETHUSDT", marginType="ISOLATED")
    await canary.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.100")

    [v2] = await canary.futures_position_information(symbol="ETHUSDT", version=2)

    assert (v2["leverage"], v2["marginType"]) == ("12", "isolated")
    assert D(v2["isolatedWallet"]) == D("0.100") * D("3000.01") / 12
    assert D(v2["liquidationPrice"]) > 0


async def test_margin_type_cannot_change_under_a_position(sim, canary):
    await canary.futures_create_order(symbol="ETHUSDT", side="BUY", type="MARKET", quantity="0.100")
    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_change_margin_type(symbol="ETHUSDT", marginType="ISOLATED")
    assert exc.value.code == -4048


async def test_account_totals_follow_the_mark_price(sim, canary):
    await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    sim.set_price("BTCUSDT", D("63000"))

    account = await canary.futures_account()
    v3 = await canary.futures_account(version=3)
    [balance] = await canary.futures_account_balance()

    expected_upnl = D("0.010") * (D("63000") - D("62000.10"))
    assert D(account["totalUnrealizedProfit"]) == expected_upnl
    assert D(account["totalMarginBalance"]) == D(account["totalWalletBalance"]) + expected_upnl
    assert D(account["totalPositionInitialMargin"]) == D("630") / 20
    assert [p["symbol"] for p in v3["positions"]] == ["BTCUSDT"]
    assert balance["asset"] == "USDT" and balance["balance"] == account["totalWalletBalance"]


async def test_leverage_brackets_single_symbol_is_an_object(sim, canary):
    one = await canary.futures_leverage_bracket(symbol="BTCUSDT")
    every = await canary.futures_leverage_bracket()

    assert one["symbol"] == "BTCUSDT"
    assert one["brackets"][0] == {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000,
                                  "notionalFloor": 0, "maintMarginRatio": 0.004, "cum": 0.0}
    assert one["brackets"][1]["cum"] == 50.0
    assert len(every) == len(sim.market.specs) >= 20


async def test_exchange_info_lists_symbols_with_binance_filters(sim, canary):
    info = await canary.futures_exchange_info()
    btc = next(s for s in info["symbols"] if s["symbol"] == "BTCUSDT")
    filters = {f["filterType"]: f for f in btc["filters"]}

    assert filters["PRICE_FILTER"]["tickSize"] == "0.10"
    assert filters["LOT_SIZE"]["stepSize"] == "0.001"
    assert filters["MIN_NOTIONAL"] == {"filterType": "MIN_NOTIONAL", "notional": "100"}
    assert info["rateLimits"][0] == {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE",
                                     "intervalNum": 1, "limit": 2400}


async def test_master_reads_the_subaccount_futures_summary(sim, master, canary):
    await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")

    v2 = await master.get_subaccount_futures_summary(futuresType=1)
    detail = await master.get_subaccount_futures_details(email="canary@sim.invalid", futuresType=1)

    [sub] = v2["futureAccountSummaryResp"]["subAccountList"]
    assert sub["email"] == "canary@sim.invalid"
    assert D(sub["totalPositionInitialMargin"]) > 0
    assert detail["futureAccountResp"]["email"] == "canary@sim.invalid"


async def test_subaccount_key_cannot_read_the_summary(sim, canary):
    with pytest.raises(BinanceAPIException) as exc:
        await canary.get_subaccount_futures_summary(futuresType=1)
    assert exc.value.status_code == 401


async def test_the_other_reads_a_controller_uses_answer_in_binance_shape(sim, canary):
    order = await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")

    config = await canary.futures_account_config()
    income = await canary.futures_income_history(symbol="BTCUSDT")
    mark = await canary.futures_mark_price(symbol="BTCUSDT")
    book = await canary.futures_orderbook_ticker(symbol="BTCUSDT")
    orders = await canary.futures_get_all_orders(symbol="BTCUSDT")
    fees = await canary.futures_commission_rate(symbol="BTCUSDT")
    mode = await canary.futures_get_position_mode()

    assert config["dualSidePosition"] is False and config["multiAssetsMargin"] is False
    assert [row["incomeType"] for row in income] == ["COMMISSION"]
    assert D(mark["markPrice"]) == D("62000")
    assert D(book["bidPrice"]) < D(book["askPrice"])
    assert [o["orderId"] for o in orders] == [order["orderId"]]
    assert fees["takerCommissionRate"] == "0.000500"
    assert mode == {"dualSidePosition": False}


async def test_closing_the_listen_key_closes_its_stream(sim, canary):
    key = await canary.futures_stream_get_listen_key()

    assert await canary.futures_stream_close(key) == {}
    with pytest.raises(BinanceAPIException) as exc:
        await canary.futures_stream_close(key)
    assert exc.value.code == -1125


async def test_income_history_cut_by_its_limit_keeps_the_first_rows_of_a_window_and_the_last_without_one(sim, canary):
    # Binance: more rows between startTime and endTime than `limit` are returned from startTime on; with
    # neither time sent, the most recent `limit` rows are. A reader paging through a window relies on the first.
    for _ in range(3):
        await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    every = await canary.futures_income_history(symbol="BTCUSDT")
    assert len(every) == 3 and [r["tranId"] for r in every] == sorted(r["tranId"] for r in every)
    first = await canary.futures_income_history(symbol="BTCUSDT", startTime=every[0]["time"], limit=2)
    last = await canary.futures_income_history(symbol="BTCUSDT", limit=2)
    assert [r["tranId"] for r in first] == [r["tranId"] for r in every[:2]]
    assert [r["tranId"] for r in last] == [r["tranId"] for r in every[-2:]]
