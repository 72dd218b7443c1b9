"""The exchange closing positions itself, and the account-wide modes, seen through python-binance:
an isolated position liquidated at its liquidation price, an ADL, the position mode and the
multi-assets mode changed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from binance.exceptions import BinanceAPIException

from tests.support.user_stream import user_stream

D = Decimal


async def isolated_long(canary, symbol: str = "BTCUSDT", quantity: str = "0.010", leverage: int = 20) -> dict:
    await canary.futures_change_margin_type(symbol=symbol, marginType="ISOLATED")
    await canary.futures_change_leverage(symbol=symbol, leverage=leverage)
    await canary.futures_create_order(symbol=symbol, side="BUY", type="MARKET", quantity=quantity)
    [position] = await canary.futures_position_information(symbol=symbol)
    return position


async def held(canary, symbol: str) -> Decimal:
    """The position's amount (positionRisk lists only symbols with a position or open orders)."""
    return sum((D(p["positionAmt"]) for p in await canary.futures_position_information(symbol=symbol)), D(0))


async def test_an_isolated_position_is_liquidated_at_its_liquidation_price(sim, canary):
    position = await isolated_long(canary)
    liquidation = D(position["liquidationPrice"])
    assert D(0) < liquidation < D(position["entryPrice"])
    async with user_stream(sim, canary) as stream:
        sim.set_price("BTCUSDT", liquidation - 10)  # the mark passes it
        new = await stream.next_of("ORDER_TRADE_UPDATE")
        trade = await stream.next_of("ORDER_TRADE_UPDATE")
        account = await stream.next_of("ACCOUNT_UPDATE")

    assert new["o"]["o"] == "LIQUIDATION" and new["o"]["c"].startswith("autoclose-") and new["o"]["X"] == "NEW"
    assert (trade["o"]["x"], trade["o"]["X"], trade["o"]["S"]) == ("CALCULATED", "FILLED", "SELL")
    assert D(trade["o"]["L"]) == sim.market.specs["BTCUSDT"].round_price(liquidation)
    assert trade["o"]["l"] == "0.010" and trade["o"]["t"] > 0
    assert [(p["s"], D(p["pa"])) for p in account["a"]["P"]] == [("BTCUSDT", D(0))]
    assert await held(canary, "BTCUSDT") == 0


async def test_a_cross_position_is_not_liquidated_by_the_isolated_rule(sim, canary):
    await canary.futures_change_leverage(symbol="BTCUSDT", leverage=20)
    await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    sim.set_price("BTCUSDT", D("59500"))
    assert await held(canary, "BTCUSDT") == D("0.010")


async def test_adl_closes_the_position_at_the_mark_with_the_adl_client_id(sim, canary):
    await canary.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.100")
    async with user_stream(sim, canary) as stream:
        sim.auto_deleverage("canary", "ETHUSDT")
        new = await stream.next_of("ORDER_TRADE_UPDATE")
        trade = await stream.next_of("ORDER_TRADE_UPDATE")

    assert new["o"]["c"] == trade["o"]["c"] == "adl_autoclose"
    assert (trade["o"]["x"], trade["o"]["X"], trade["o"]["S"], trade["o"]["l"]) == ("CALCULATED", "FILLED", "BUY",
                                                                                     "0.100")
    assert await held(canary, "ETHUSDT") == 0
    with pytest.raises(ValueError, match="no ETHUSDT position"):
        sim.auto_deleverage("canary", "ETHUSDT")


async def test_the_position_mode_is_changed_and_read_back_but_not_with_a_position(sim, canary):
    await canary.futures_change_position_mode(dualSidePosition=True)
    assert (await canary.futures_get_position_mode())["dualSidePosition"] is True
    assert (await canary.futures_account_config())["dualSidePosition"] is True
    with pytest.raises(BinanceAPIException) as unchanged:
        await canary.futures_change_position_mode(dualSidePosition=True)
    assert unchanged.value.code == -4059
    await canary.futures_change_position_mode(dualSidePosition=False)
    await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    with pytest.raises(BinanceAPIException) as held:
        await canary.futures_change_position_mode(dualSidePosition=True)
    assert held.value.code == -4068


async def test_the_multi_assets_mode_change_is_pushed_as_account_config_update(sim, canary):
    async with user_stream(sim, canary) as stream:
        await canary.futures_change_multi_assets_mode(multiAssetsMargin=True)
        event = await stream.next_of("ACCOUNT_CONFIG_UPDATE")

    assert event["ai"] == {"j": True}
    assert (await canary.futures_get_multi_assets_mode())["multiAssetsMargin"] is True
    assert (await canary.futures_account_config())["multiAssetsMargin"] is True
    with pytest.raises(BinanceAPIException) as unchanged:
        await canary.futures_change_multi_assets_mode(multiAssetsMargin=True)
    assert unchanged.value.code == -4171


async def test_force_orders_list_the_liquidation_and_the_adl_by_type_and_symbol(sim, canary):
    position = await isolated_long(canary)
    await canary.futures_create_order(symbol="ETHUSDT", side="SELL", type="MARKET", quantity="0.100")
    await canary.futures_create_order(symbol="SOLUSDT", side="BUY", type="MARKET", quantity="1")  # not closed
    sim.set_price("BTCUSDT", D(position["liquidationPrice"]) - 10)
    sim.auto_deleverage("canary", "ETHUSDT")

    both = await canary.futures_liquidation_orders()
    assert sorted((o["symbol"], o["clientOrderId"].split("-")[0], o["status"]) for o in both) == [
        ("BTCUSDT", "autoclose", "FILLED"), ("ETHUSDT", "adl_autoclose", "FILLED")]
    [liquidation] = await canary.futures_liquidation_orders(autoCloseType="LIQUIDATION")
    assert liquidation["symbol"] == "BTCUSDT" and liquidation["type"] == "LIQUIDATION"
    [adl] = await canary.futures_liquidation_orders(symbol="ETHUSDT")
    assert adl["clientOrderId"] == "adl_autoclose"
    assert await canary.futures_liquidation_orders(symbol="SOLUSDT") == []
    with pytest.raises(BinanceAPIException) as refused:
        await canary.futures_liquidation_orders(autoCloseType="MARGIN_CALL")
    assert refused.value.code == -1130
