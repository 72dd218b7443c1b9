"""The shipped exchange-side policies judged on the reference bot: a healthy release passes them,
each defect fails the policy that should catch it, with its evidence. Real simulator, real
exchange layer, the policy files exactly as shipped in policies/."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.observe.exchange import ExchangeObserver
from controller.verification import Verification
from tests.support.bot import MAJORS_ONLY, strategy, trading
from tests.support.checkout import REPO
from tests.support.exchange_observer import SNAPSHOT_EVERY
from tests.support.verdicts import Verdicts

SHIPPED = {f.stage: f for f in load_policies([REPO / "policies"]).values()}


@pytest.fixture
def volatility() -> float:
    return 1.0  # the bot's limit orders fill as prices move


@pytest.fixture
async def bot_client(bot_exchange):
    return await bot_exchange("canary")


async def judge(canary, bot_client, clock, config, stage, names, predicate):
    policies = [p for p in SHIPPED[stage].policies if p.name in names]
    assert len(policies) == len(names), "a policy named here is not shipped"
    judgement = Verdicts()
    verification = Verification(policies=policies, config=config, clock=clock, on_verdicts=judgement, tick=0.2)
    observer = ExchangeObserver(account="canary", client=canary, config=config, clock=clock,
                                sink=verification.sink, snapshot_every=SNAPSHOT_EVERY)
    async with trading(bot_client, clock, config):
        task = asyncio.create_task(verification.run([observer.run]), name="test-verification")
        try:
            await judgement.until(predicate, timeout=25.0)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return judgement.latest


def all_pass(names):
    return lambda latest: all(n in latest and latest[n].outcome is Outcome.PASS and latest[n].samples > 0
                              for n in names)


async def test_a_healthy_release_passes_the_exchange_side_canary_policies(canary, bot_client, clock):
    names = ("c-exchange-leverage-matches-config", "c-margin-type-matches-config", "c-fills-at-configured-leverage",
             "c-fills-sized-within-bucket", "c-margin-ratio-bounded")
    latest = await judge(canary, bot_client, clock, strategy(), "C", names, all_pass(names))
    assert latest["c-fills-sized-within-bucket"].value <= 1.02


async def test_a_wrong_leverage_fails_the_leverage_policies_of_every_stage(canary, bot_client, clock):
    config = strategy(wrong_leverage={"symbol": "BTCUSDT", "leverage": 20})
    for stage, name in (("A", "a-exchange-leverage-matches-config"), ("C", "c-exchange-leverage-matches-config")):
        latest = await judge(canary, bot_client, clock, config, stage, (name,),
                             lambda latest: name in latest and latest[name].outcome is Outcome.FAIL)
        verdict = latest[name]
        assert verdict.action == "rollback" and dict(verdict.group) == {"symbol": "BTCUSDT"}
        assert verdict.value == 1 and verdict.threshold == 0


async def test_oversized_orders_fail_the_fill_sizing_policy(canary, bot_client, clock):
    config = strategy(MAJORS_ONLY, oversized_orders=3)
    name = "c-fills-sized-within-bucket"
    latest = await judge(canary, bot_client, clock, config, "C", (name,),
                         lambda latest: name in latest and latest[name].outcome is Outcome.FAIL)
    assert latest[name].value > 1.02 and dict(latest[name].group) == {"bucket": "majors"}


async def test_a_stalled_exchange_is_nodata_and_holds_rather_than_passing(sim, canary, clock):
    name = "c-exchange-leverage-matches-config"
    config = strategy()
    for symbol, settings in config.symbols.items():  # the release is in place before the stage starts
        await canary.set_leverage(symbol, settings.leverage)
    policies = [p for p in SHIPPED["C"].policies if p.name == name]
    judgement = Verdicts()
    verification = Verification(policies=policies, config=config, clock=clock, on_verdicts=judgement, tick=0.2)
    observer = ExchangeObserver(account="canary", client=canary, config=config, clock=clock,
                                sink=verification.sink, snapshot_every=SNAPSHOT_EVERY)
    task = asyncio.create_task(verification.run([observer.run]), name="test-verification")
    try:
        await judgement.until(lambda latest: name in latest and latest[name].outcome is Outcome.PASS)
        sim.faults.fail(None, rate=1.0, code=-1001, status=503)   # the exchange stops answering
        sim.faults.drop_stream("canary")
        clock.advance(policies[0].on_nodata.stale_after + 1)
        await judgement.until(lambda latest: latest[name].outcome is Outcome.NODATA)
        assert latest_action(judgement, name) == "hold"
    finally:
        sim.faults.clear()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def latest_action(judgement, name):
    return judgement.latest[name].action
