"""GET /sapi/v1/account/apiRestrictions: each key's rights, least privilege unless a knob widens them."""

from __future__ import annotations

import aiohttp

from controller.sim.accounts import API_RIGHTS

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
