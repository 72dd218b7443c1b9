"""The exchange client's call policy, proven on the simulator's wire with python-binance."""

from __future__ import annotations

from decimal import Decimal

import pytest

from controller.clock import SimulatedClock
from controller.exchange.errors import BudgetExhausted, NotApplied, RateLimited, Rejected, Retryable, Unauthorized
from controller.exchange.weights import WeightBudget
from tests.support.clients import binance_client
from tests.support.simulator import requests_to


async def test_set_leverage_returns_the_applied_leverage_and_the_exchange_keeps_it(canary):
    assert await canary.set_leverage("BTCUSDT", 7) == 7
    settings = {s.symbol: s for s in await canary.symbol_settings()}
    assert settings["BTCUSDT"].leverage == 7
    await canary.confirm_leverage("BTCUSDT", 7)


async def test_a_leverage_the_exchange_only_pretends_to_apply_is_caught_by_confirmation(sim, canary):
    await canary.set_leverage("ETHUSDT", 5)
    sim.faults.ignore_leverage("canary", "ETHUSDT")
    assert await canary.set_leverage("ETHUSDT", 9) == 9  # the response claims success
    with pytest.raises(NotApplied, match="applies leverage 5, expected 9"):
        await canary.confirm_leverage("ETHUSDT", 9)


async def test_business_refusals_surface_typed_and_are_never_retried(sim, canary):
    with pytest.raises(Rejected) as refused:
        await canary.set_leverage("BTCUSDT", 500)
    assert refused.value.code == -4028
    assert requests_to(sim, "POST", "/fapi/v1/leverage") == 1


async def test_transient_errors_are_retried_until_the_attempts_run_out(sim, canary):
    sim.faults.fail("GET /fapi/v1/symbolConfig", rate=1.0, code=-1001, status=500)
    with pytest.raises(Retryable):
        await canary.symbol_settings()
    assert requests_to(sim, "GET", "/fapi/v1/symbolConfig") == canary.retry.attempts


async def test_a_transient_error_followed_by_success_is_invisible_to_the_caller(sim, canary):
    sim.faults.fail("GET /fapi/v3/positionRisk", rate=0.5, code=-1001, status=503)
    for _ in range(5):
        assert isinstance(await canary.positions(), list)
    assert requests_to(sim, "GET", "/fapi/v3/positionRisk") > 5


async def test_a_retried_order_is_placed_once(sim, canary):
    await canary.set_leverage("BTCUSDT", 5)
    # The exchange executes the order, then answers 500: the client cannot know it went through.
    sim.faults.fail("POST /fapi/v1/order", rate=1.0, code=-1001, status=500, after=True)
    order = await canary.new_order(symbol="BTCUSDT", side="BUY", order_type="MARKET",
                                   quantity=Decimal("0.002"), client_order_id="cc-once-1")
    sim.faults.clear()
    assert order["clientOrderId"] == "cc-once-1"
    assert requests_to(sim, "POST", "/fapi/v1/order") == 1  # looked up, not resent
    assert requests_to(sim, "GET", "/fapi/v1/order") == 1
    trades = await canary.user_trades("BTCUSDT")
    assert len({t.order_id for t in trades}) == 1
    positions = {p.symbol: p.amount for p in await canary.positions()}
    assert positions["BTCUSDT"] == Decimal("0.002")


async def test_an_order_the_exchange_never_saw_is_resent_and_still_placed_at_most_once(sim, canary):
    sim.faults.fail("POST /fapi/v1/order", rate=1.0, code=-1001, status=503)
    with pytest.raises(Retryable):
        await canary.new_order(symbol="BTCUSDT", side="BUY", order_type="MARKET", quantity=Decimal("0.002"),
                               client_order_id="cc-never-1")
    assert requests_to(sim, "POST", "/fapi/v1/order") == canary.retry.attempts
    assert all(p.amount == 0 for p in await canary.positions("BTCUSDT"))
    sim.faults.clear()
    await canary.new_order(symbol="BTCUSDT", side="BUY", order_type="MARKET", quantity=Decimal("0.002"),
                           client_order_id="cc-never-1")
    assert [p.amount for p in await canary.positions("BTCUSDT")] == [Decimal("0.002")]


async def test_flatten_closes_the_position_with_a_reduce_only_order(canary):
    await canary.new_order(symbol="ETHUSDT", side="SELL", order_type="MARKET", quantity=Decimal("0.05"))
    [closing] = await canary.flatten("ETHUSDT")
    assert closing["reduceOnly"] is True and closing["side"] == "BUY"
    assert all(p.amount == 0 for p in await canary.positions("ETHUSDT"))
    assert await canary.flatten("ETHUSDT") == []


async def test_flatten_in_hedge_mode_closes_both_sides_by_position_side_without_reduce_only(sim, canary):
    # Binance refuses reduceOnly in hedge mode (-1106) and needs positionSide: each side is closed
    # by its own order (SELL LONG, BUY SHORT), each with a client id of its own.
    async with binance_client(sim, "canary") as bot:
        await bot.futures_change_position_mode(dualSidePosition="true")
        await bot.futures_create_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.010",
                                       positionSide="LONG")
        await bot.futures_create_order(symbol="BTCUSDT", side="SELL", type="MARKET", quantity="0.020",
                                       positionSide="SHORT")
    closing = await canary.flatten("BTCUSDT", client_order_id="rb1d2BTCUSDT")
    assert sorted((o["positionSide"], o["side"], o["reduceOnly"], Decimal(o["origQty"])) for o in closing) == [
        ("LONG", "SELL", False, Decimal("0.010")), ("SHORT", "BUY", False, Decimal("0.020"))]
    ids = [o["clientOrderId"] for o in closing]
    assert len(set(ids)) == 2 and all(i.startswith("rb1d2BTCUSDT") and len(i) <= 36 for i in ids)
    assert all(p.amount == 0 for p in await canary.positions("BTCUSDT"))
    assert await canary.flatten("BTCUSDT") == []


async def test_cancel_all_orders_leaves_no_open_order(canary):
    for price in ("1000", "1001"):
        await canary.new_order(symbol="ETHUSDT", side="BUY", order_type="LIMIT", quantity=Decimal("0.05"),
                               price=Decimal(price))
    assert len(await canary.open_orders("ETHUSDT")) == 2
    await canary.cancel_all_orders("ETHUSDT")
    assert await canary.open_orders("ETHUSDT") == []


async def test_clock_drift_is_resynchronised_once_and_the_call_succeeds(sim, clock, connect):
    drifting = SimulatedClock(clock.time(), speed=1.0)
    client = await connect("canary", client_clock=drifting)
    drifting.advance(120)  # our clock now runs two minutes ahead of the exchange's
    before = requests_to(sim, "GET", "/fapi/v1/time")
    assert isinstance(await client.account_snapshot(), object)
    assert requests_to(sim, "GET", "/fapi/v1/time") == before + 1
    assert any(r.code == -1021 for r in sim.requests)


async def test_after_a_429_no_request_is_sent_until_retry_after_has_passed(sim, clock, canary):
    sim.faults.rate_limit_storm(5)
    with pytest.raises(RateLimited) as limited:
        await canary.positions()
    assert 4 <= limited.value.retry_after <= 5
    sent = len(sim.requests)
    with pytest.raises(RateLimited, match="not sent"):
        await canary.open_orders()
    assert len(sim.requests) == sent
    clock.advance(5.5)
    assert await canary.open_orders() == []


async def test_the_weight_budget_refuses_calls_without_sending_them_and_recovers_next_minute(sim, clock, connect):
    budget = WeightBudget(clock, share=12 / 2400)  # 12 weight a minute
    client = await connect("canary", budget=budget)  # the time sync spends 1
    await client.positions()   # 5
    await client.positions()   # 5 -> 11 spent
    sent = len(sim.requests)
    with pytest.raises(BudgetExhausted):
        await client.positions()
    assert len(sim.requests) == sent
    assert budget.exchange_used >= 11  # the exchange's X-MBX-USED-WEIGHT-1M was read
    clock.advance(60)
    await client.positions()


async def test_a_wrong_secret_is_unauthorized(connect):
    client = await connect("canary", api_secret="not-the-secret")  # the time sync is unsigned
    with pytest.raises(Unauthorized) as refused:
        await client.account_snapshot()
    assert refused.value.code == -1022


async def test_reads_return_typed_snapshots(connect):
    master = await connect("master")
    account = await master.account_snapshot()
    assert account.total_wallet_balance == Decimal("98200") and account.margin_ratio == 0
    brackets = await master.leverage_brackets("BTCUSDT")
    assert brackets[0].symbol == "BTCUSDT" and brackets[0].initial_leverage >= 20
    subs = await master.sub_account_balances()
    assert [s.wallet_balance for s in subs] == [Decimal("1800")]


async def test_market_data_for_sizing_comes_typed(canary):
    filters = await canary.symbol_filters()
    btc = filters["BTCUSDT"]
    assert btc.step_size > 0 and btc.min_notional > 0
    assert btc.round_quantity(btc.step_size * Decimal("3.7")) == btc.step_size * 3
    prices = await canary.mark_prices()
    assert prices["BTCUSDT"] > 0 and (await canary.mark_prices("ETHUSDT")).keys() == {"ETHUSDT"}


async def test_a_slow_exchange_times_out_and_is_retried_as_transient(sim, connect):
    from controller.exchange.client import RetryPolicy

    client = await connect("canary", retry=RetryPolicy(attempts=3, initial_backoff=0.01, max_backoff=0.02,
                                                        request_timeout=0.2))
    sim.faults.add_latency(2.0, "GET /fapi/v1/openOrders")
    with pytest.raises(Retryable, match="TimeoutError"):
        await client.open_orders("BTCUSDT")
    sim.faults.clear()
    assert await client.open_orders("BTCUSDT") == []


async def test_sub_account_balances_are_read_page_by_page(sim, connect):
    from controller.sim import AccountSpec, Simulator

    many = (AccountSpec("master", Decimal("90000"), master=True),
            *(AccountSpec(f"sub{i}", Decimal(100 + i)) for i in range(25)))
    async with Simulator(clock=sim.clock, seed=3, accounts=many) as big:
        from controller.config.daemon import Endpoints
        from controller.exchange.client import ExchangeClient
        from controller.exchange.weights import WeightBudget

        acct = big.accounts["master"]
        async with ExchangeClient(account="master", api_key=acct.api_key, api_secret=acct.api_secret,
                                  endpoints=Endpoints(big.rest_url, big.ws_url, big.sapi_url), clock=sim.clock,
                                  budget=WeightBudget(sim.clock, share=1.0)) as master:
            balances = await master.sub_account_balances(page_size=10)
    assert len(balances) == 25 and sum(b.wallet_balance for b in balances) == sum(100 + i for i in range(25))
