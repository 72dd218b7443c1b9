"""Canary against baseline on the same market: the previous release trades the master account,
the canary its sub-account, and the canary's exposure per symbol (normalised by capital) is
judged against the baseline's own, measured over the same window."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.observe.exchange import ExchangeObserver
from controller.sim.bot import Bot
from controller.verification import Verification
from tests.conftest import REPO
from tests.observe_exchange.conftest import SNAPSHOT_EVERY, strategy
from tests.observe_exchange.test_release_checks import FAST

EXPOSURE = next(p for f in load_policies([REPO / "policies"]).values() for p in f.policies
                if p.name == "c-exposure-like-baseline")
MAJORS = {"symbols": {"BTCUSDT": {"leverage": 5}, "ETHUSDT": {"leverage": 5}},
          "buckets": {"majors": {"allocation": "0.5", "symbols": ["BTCUSDT", "ETHUSDT"]}},
          "sizing": {"order_fraction": "0.5"}}


@pytest.fixture
def volatility() -> float:
    return 1.0


async def judge_against_baseline(connect, clock, canary_config, until):
    baseline_config = strategy(MAJORS)
    latest, changed = {}, asyncio.Event()

    def on_verdicts(verdicts):
        latest.update({v.policy: v for v in verdicts})
        changed.set()

    baseline = Verification(policies=[EXPOSURE], config=baseline_config, clock=clock, on_verdicts=lambda vs: None,
                            tick=0.2)
    canary = Verification(policies=[EXPOSURE], config=canary_config, clock=clock, on_verdicts=on_verdicts,
                          baseline=baseline, tick=0.2)
    bots, tasks = [], []
    for account, config, verification in (("master", baseline_config, baseline), ("canary", canary_config, canary)):
        bot = Bot(config=config, client=await connect(account), clock=clock, settings=FAST)
        bots.append(bot)
        tasks.append(asyncio.create_task(bot.run(), name=f"test-bot-{account}"))
        await bot.wait_for(lambda bot=bot: bot.iterations >= 1, timeout=10)
        observer = ExchangeObserver(account=account, client=await connect(account), config=config, clock=clock,
                                    sink=verification.sink, snapshot_every=SNAPSHOT_EVERY)
        tasks.append(asyncio.create_task(verification.run([observer.run]), name=f"test-verification-{account}"))
    try:
        async with asyncio.timeout(40):
            while not until(latest):
                changed.clear()
                await changed.wait()
    finally:
        for bot in bots:
            bot.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return latest


async def test_a_canary_trading_like_its_baseline_passes(connect, clock):
    latest = await judge_against_baseline(
        connect, clock, strategy(MAJORS),
        lambda latest: EXPOSURE.name in latest and latest[EXPOSURE.name].outcome is Outcome.PASS)
    verdict = latest[EXPOSURE.name]
    assert verdict.samples >= EXPOSURE.min_samples and verdict.threshold >= 0.05


async def test_a_canary_taking_three_times_its_baselines_exposure_is_held_for_a_person(connect, clock):
    stepping = {"started": False}

    def breaching_long_enough(latest):
        verdict = latest.get(EXPOSURE.name)
        if verdict is None:
            return False
        if verdict.breaching_since is not None and not stepping["started"]:
            stepping["started"] = True
            asyncio.get_running_loop().call_soon(clock.advance, 4.0)  # time moves on while it lasts (steps shorter than recvWindow)
        elif stepping["started"] and verdict.outcome is not Outcome.FAIL:
            asyncio.get_running_loop().call_soon(clock.advance, 4.0)
        return verdict.outcome is Outcome.FAIL

    latest = await judge_against_baseline(connect, clock, strategy(MAJORS, oversized_orders=3), breaching_long_enough)
    verdict = latest[EXPOSURE.name]
    assert verdict.action == "hold" and verdict.value > verdict.threshold
