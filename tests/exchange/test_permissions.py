"""Judging a key's rights: each right too wide is refused, and only what the environment needs passes."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controller.exchange.errors import ExchangeError
from controller.exchange.permissions import KeyRights, judge, key_rights

FUTURES_KEY = KeyRights(ipRestrict=False, enableReading=True, enableFutures=True, enableWithdrawals=False,
                        enableInternalTransfer=False, permitsUniversalTransfer=False, enableMargin=False,
                        enableSpotAndMarginTrading=False)


@pytest.mark.parametrize("kind", ["sim", "testnet"])
def test_a_futures_key_that_reads_may_trade_and_watch(kind):
    assert judge(FUTURES_KEY, kind=kind, trading=True) == []
    assert judge(FUTURES_KEY, kind=kind, trading=False) == []


@pytest.mark.parametrize(("right", "said"), [
    ("enableWithdrawals", "withdraw"),
    ("enableInternalTransfer", "transfer funds between the master and its sub-accounts"),
    ("permitsUniversalTransfer", "universal transfers"),
    ("enableMargin", "trade on margin"),
    ("enableSpotAndMarginTrading", "trade spot and margin"),
])
@pytest.mark.parametrize("kind", ["sim", "testnet", "live"])
def test_each_right_too_wide_is_refused_by_name(right, said, kind):
    key = replace(FUTURES_KEY, ipRestrict=True, **{right: True})

    problems = judge(key, kind=kind, trading=False)

    assert len(problems) == 1
    assert said in problems[0] and right in problems[0]


def test_live_refuses_a_key_without_an_ip_restriction_and_takes_one_with_it():
    [problem] = judge(FUTURES_KEY, kind="live", trading=True)

    assert "ipRestrict" in problem
    assert judge(replace(FUTURES_KEY, ipRestrict=True), kind="live", trading=True) == []


def test_placing_needs_futures_trading_watching_does_not():
    reader = replace(FUTURES_KEY, enableFutures=False)

    assert judge(reader, kind="testnet", trading=False) == []
    [problem] = judge(reader, kind="testnet", trading=True)
    assert "enableFutures" in problem


def test_a_key_that_cannot_read_is_refused():
    [problem] = judge(replace(FUTURES_KEY, enableReading=False), kind="sim", trading=False)

    assert "enableReading" in problem


def test_every_wide_right_is_listed_at_once():
    key = replace(FUTURES_KEY, enableWithdrawals=True, enableMargin=True)

    assert len(judge(key, kind="live", trading=True)) == 3  # two rights and the missing IP restriction


def test_an_answer_without_a_right_is_an_error_not_a_right_withheld():
    raw = {"ipRestrict": False, "enableReading": True, "enableFutures": True, "enableWithdrawals": False,
           "enableInternalTransfer": False, "permitsUniversalTransfer": False, "enableMargin": False,
           "enableSpotAndMarginTrading": False, "createTime": 1}

    assert key_rights(raw) == FUTURES_KEY
    with pytest.raises(ExchangeError, match="enableWithdrawals"):
        key_rights({k: v for k, v in raw.items() if k != "enableWithdrawals"})
    with pytest.raises(ExchangeError, match="enableMargin"):
        key_rights({**raw, "enableMargin": "false"})
    with pytest.raises(ExchangeError, match="not an object"):
        key_rights([raw])


async def test_the_client_reads_the_keys_rights_from_the_sapi_host(sim, canary):
    assert judge(await canary.api_restrictions(), kind="sim", trading=True) == []

    sim.set_api_rights("canary", permitsUniversalTransfer=True)

    assert (await canary.api_restrictions()).permitsUniversalTransfer is True


TRANSFER_KEY = replace(FUTURES_KEY, enableFutures=False, enableInternalTransfer=True)
"""A capital ramp's key: reading and internal transfers between the master and its sub-accounts."""


@pytest.mark.parametrize("kind", ["sim", "testnet"])
def test_a_transfer_key_may_transfer_internally_and_read(kind):
    assert judge(TRANSFER_KEY, kind=kind, purpose="transfer") == []


@pytest.mark.parametrize(("right", "said"), [
    ("enableWithdrawals", "withdraw"),
    ("permitsUniversalTransfer", "universal transfers"),
    ("enableMargin", "trade on margin"),
    ("enableSpotAndMarginTrading", "trade spot and margin"),
])
def test_a_transfer_key_with_any_other_right_too_wide_is_refused_by_name(right, said):
    problems = judge(replace(TRANSFER_KEY, **{right: True}), kind="sim", purpose="transfer")

    assert len(problems) == 1 and said in problems[0] and right in problems[0]


def test_a_transfer_key_that_cannot_transfer_is_refused_and_the_trading_key_is_not_one():
    (problem,) = judge(FUTURES_KEY, kind="sim", purpose="transfer")
    assert "enableInternalTransfer: false" in problem
    # The right a transfer key needs is still too wide for the trading key.
    assert judge(TRANSFER_KEY, kind="sim", trading=False) != []


def test_on_live_a_transfer_key_needs_an_ip_restriction():
    assert any("ipRestrict" in p for p in judge(TRANSFER_KEY, kind="live", purpose="transfer"))
    assert judge(replace(TRANSFER_KEY, ipRestrict=True), kind="live", purpose="transfer") == []
