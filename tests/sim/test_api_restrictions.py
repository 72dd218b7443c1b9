"""GET /sapi/v1/account/apiRestrictions: each key's rights, least privilege unless a knob widens them."""

from __future__ import annotations

import aiohttp
import pytest
from binance.exceptions import BinanceAPIException

from controller.sim.accounts import API_RIGHTS
from tests.support.clients import binance_client

FIELDS = {"ipRestrict", "createTime", "enableWithdrawals", "enableInternalTransfer", "permitsUniversalTransfer",
          "enableVanillaOptions", "enableReading", "enableFutures", "enableMargin", "enableSpotAndMarginTrading",
          "tradingAuthorityExpirationTime"}


async def test_every_key_starts_as_a_futures_key_that_reads_and_nothing_more(sim, canary, master):
    for client in (canary, master):
        rights = await client.get_account_api_permissions()

        assert set(rights) == FIELDS
        assert {name for name in API_RIGHTS if rights[name]} == {"enableReading", "enableFutures"}


async def test_the_knob_widens_one_key_only(sim, canary, master):
    sim.set_api_rights("canary", enableWithdrawals=True, ipRestrict=True)

    assert (await canary.get_account_api_permissions())["enableWithdrawals"] is True
    assert (await canary.get_account_api_permissions())["ipRestrict"] is True
    assert (await master.get_account_api_permissions())["enableWithdrawals"] is False


async def test_the_admin_api_sets_rights_and_refuses_unknown_ones(sim, canary):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sim.addresses.admin_url}/api-rights",
                             json={"account": "canary", "enableMargin": True}) as response:
            assert response.status == 200
        async with http.post(f"{sim.addresses.admin_url}/api-rights",
                             json={"account": "canary", "enableEverything": True}) as response:
            refused = await response.json()
            assert response.status == 400
        async with http.post(f"{sim.addresses.admin_url}/api-rights",
                             json={"account": "canary", "enableFutures": "yes"}) as response:
            assert response.status == 400

    rights = await canary.get_account_api_permissions()
    assert "enableEverything" in refused["error"]
    assert (rights["enableMargin"], rights["enableFutures"]) == (True, True)  # the refused calls changed nothing


async def test_each_account_has_a_read_only_key_that_says_so(sim, canary):
    key = sim.accounts["canary"].key("read-only")
    async with binance_client(sim, "canary", api_key=key.key, api_secret=key.secret) as read_only:
        rights = await read_only.get_account_api_permissions()

    assert {name for name in API_RIGHTS if rights[name]} == {"enableReading"}
    assert (await canary.get_account_api_permissions())["enableFutures"] is True  # the trading key is unchanged


async def test_a_key_without_futures_trading_is_refused_every_order_endpoint_as_binance_does(sim):
    key = sim.accounts["canary"].key("read-only")
    async with binance_client(sim, "canary", api_key=key.key, api_secret=key.secret) as read_only:
        calls = {
            "new order": read_only.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.001"),
            "test order": read_only.futures_create_test_order(symbol="BTCUSDT", side="BUY", type="MARKET",
                                                              quantity="0.001"),
            "modify": read_only.futures_modify_order(symbol="BTCUSDT", orderId=1, side="BUY", quantity="0.001",
                                                     price="60000"),
            "cancel": read_only.futures_cancel_order(symbol="BTCUSDT", orderId=1),
            "cancel all": read_only.futures_cancel_all_open_orders(symbol="BTCUSDT"),
            "leverage": read_only.futures_change_leverage(symbol="BTCUSDT", leverage=3),
            "margin type": read_only.futures_change_margin_type(symbol="BTCUSDT", marginType="ISOLATED"),
            "position mode": read_only.futures_change_position_mode(dualSidePosition="true"),
            "multi-assets": read_only.futures_change_multi_assets_mode(multiAssetsMargin="true"),
        }
        refused = {}
        for name, call in calls.items():
            with pytest.raises(BinanceAPIException) as caught:
                await call
            refused[name] = (caught.value.status_code, caught.value.code, caught.value.message)
        balance = await read_only.futures_account_balance()  # reads still work
        positions = await read_only.futures_position_information()

    assert set(refused.values()) == {(401, -2015, "Invalid API-key, IP, or permissions for action, request ip: "
                                                   "127.0.0.1")}
    assert balance and isinstance(positions, list)
    assert sim.engine.open_orders(sim.accounts["canary"]) == []
    orders = [r for r in sim.requests if r.path == "/fapi/v1/order" and r.account == "canary"]
    assert orders and {(r.key, r.status, r.code) for r in orders} == {("read-only", 401, -2015)}


async def test_the_admin_api_sets_the_read_only_keys_rights(sim, canary):
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sim.addresses.admin_url}/api-rights",
                             json={"account": "canary", "key": "read-only", "enableFutures": True}) as response:
            assert response.status == 200
        async with http.post(f"{sim.addresses.admin_url}/api-rights",
                             json={"account": "canary", "key": "admin", "enableFutures": True}) as response:
            assert response.status == 400
            refused = await response.json()

    assert sim.accounts["canary"].key("read-only").rights["enableFutures"] is True
    assert "no 'admin' key" in refused["error"]
