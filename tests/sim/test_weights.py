"""Request weight: the X-MBX-USED-WEIGHT-1M header, 429 with Retry-After, 418 for those who keep going."""

from __future__ import annotations

import pytest
from binance.exceptions import BinanceAPIException

from tests.support.clients import binance_client
from tests.support.clocks import make_clock
from tests.support.simulator import make_sim


@pytest.fixture
async def small_sim():
    async with make_sim(clock=make_clock(speed=1.0), seed=3, volatility=0, weight_limit=12) as simulator:
        yield simulator


async def test_each_answer_carries_the_used_weight(sim, canary):
    await canary.futures_exchange_info()                 # weight 1 (binance_client's time sync: 1)
    first = int(canary.response.headers["X-MBX-USED-WEIGHT-1M"])
    await canary.futures_account()                       # weight 5
    second = int(canary.response.headers["X-MBX-USED-WEIGHT-1M"])

    assert (first, second) == (2, 7)


async def test_each_request_is_recorded_with_the_weight_it_was_charged(sim, canary):
    await canary.futures_account()                       # weight 5
    assert (sim.requests[-1].path, sim.requests[-1].weight) == ("/fapi/v2/account", 5)


async def test_a_request_refused_over_the_limit_is_recorded_as_charging_nothing(small_sim):
    async with binance_client(small_sim) as client:              # weight 1
        await client.futures_account()                           # 6
        await client.futures_account()                           # 11
        with pytest.raises(BinanceAPIException):
            await client.futures_account()                       # would be 16 > 12
    assert [(r.status, r.weight) for r in small_sim.requests][-3:] == [(200, 5), (200, 5), (429, 0)]


async def test_new_orders_carry_order_counts(sim, canary):
    await canary.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010")
    assert canary.response.headers["X-MBX-ORDER-COUNT-1M"] == "1"
    assert canary.response.headers["X-MBX-ORDER-COUNT-10S"] == "1"


async def test_over_the_limit_answers_429_with_retry_after(small_sim):
    async with binance_client(small_sim) as client:              # weight 1
        await client.futures_account()                           # 6
        await client.futures_account()                           # 11
        with pytest.raises(BinanceAPIException) as exc:
            await client.futures_account()                       # would be 16 > 12

    assert (exc.value.code, exc.value.status_code) == (-1003, 429)
    assert 1 <= int(exc.value.response.headers["Retry-After"]) <= 60
    assert exc.value.response.headers["X-MBX-USED-WEIGHT-1M"] == "11"


async def test_the_limit_resets_with_the_minute(small_sim):
    async with binance_client(small_sim) as client:
        await client.futures_account()
        await client.futures_account()
        with pytest.raises(BinanceAPIException) as exc:
            await client.futures_account()
        small_sim.clock.advance(int(exc.value.response.headers["Retry-After"]))
        info = await client.futures_exchange_info()

    assert info["symbols"]
    assert client.response.headers["X-MBX-USED-WEIGHT-1M"] == "1"


async def test_ignoring_retry_after_earns_a_418_ban(small_sim):
    statuses = []
    async with binance_client(small_sim) as client:
        for _ in range(12 + small_sim.limiters["fapi"].ban_after):
            try:
                await client.futures_time()
                statuses.append(200)
            except BinanceAPIException as exc:
                statuses.append(exc.status_code)
                retry_after = exc.response.headers["Retry-After"]

    assert statuses[:11] == [200] * 11                           # plus binance_client's sync: 12
    assert statuses[11:-1] == [429] * (len(statuses) - 12)
    assert statuses[-1] == 418
    assert retry_after == "120"

