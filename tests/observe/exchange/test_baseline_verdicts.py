"""Canary against baseline on the same market: the previous release trades the master account,
the canary its sub-account, and the canary's exposure per symbol (normalised by capital) is
judged against the baseline's own, measured over the same window."""

from __future__ import annotations

import asyncio

import pytest

from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.observe.exchange import ExchangeObserver
from reference_bot import Bot
from controller.verification import Verification
from tests.support.bot import FAST, bot_strategy, strategy
from tests.support.checkout import REPO
from tests.support.exchange_observer import SNAPSHOT_EVERY

EXPOSURE = next(p for f in load_policies([REPO / "policies"]).values() for p in f.policies
                if p.name == "c-exposure-like-baseline")
MAJORS = {"symbols": {"BTCUSDT": {"leverage": 5}, "ETHUSDT": {"leverage": 5}},
          "buckets": {"majors": {"allocation": "0.5", "symbols": ["BTCUSDT", "ETHUSDT"]}},
          "sizing": {"order_fraction": "0.5"}}


@pytest.fixture
def volatility() -> float:
    return 1.0


async def judge_against_baseline(connect, bot_exchange, clock, canary_config, until):
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
        bot = Bot(config=bot_strategy(config), exchange=await bot_exchange(account), clock=clock, settings=FAST)
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


async def test_a_canary_trading_like_its_baseline_passes(connect, bot_exchange, clock):
    latest = await judge_against_baseline(
        connect, bot_exchange, clock, strategy(MAJORS),
        lambda latest: EXPOSURE.name in latest and latest[EXPOSURE.name].outcome is Outcome.PASS)
    verdict = latest[EXPOSURE.name]
    assert verdict.samples >= EXPOSURE.min_samples and verdict.threshold >= 0.05


async def test_a_canary_taking_three_times_its_baselines_exposure_is_held_for_a_person(connect, bot_exchange, clock):
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

    latest = await judge_against_baseline(connect, bot_exchange, clock, strategy(MAJORS, oversized_orders=3), breaching_long_enough)
    verdict = latest[EXPOSURE.name]
    assert verdict.action == "hold" and verdict.value > verdict.threshold


LATENCY = next(p for f in load_policies([REPO / "policies"]).values() for p in f.policies
               if p.name == "c-signal-latency-like-baseline")


async def rank_against_baseline(connect, bot_exchange, clock, canary_config, until, afterwards=None):
    """Both releases' real /metrics scraped; the canary's latencies ranked against the baseline's.
    Once ``until`` holds, the bots stop (their /metrics stay up) and ``afterwards`` runs."""
    from controller.observe.metrics import MetricsScraper
    from reference_bot.metrics import MetricsServer

    latest, changed = {}, asyncio.Event()

    def on_verdicts(verdicts):
        latest.update({v.policy: v for v in verdicts})
        changed.set()

    baseline_config = strategy(MAJORS)
    baseline = Verification(policies=[LATENCY], config=baseline_config, clock=clock, on_verdicts=lambda vs: None,
                            tick=0.2)
    canary = Verification(policies=[LATENCY], config=canary_config, clock=clock, on_verdicts=on_verdicts,
                          baseline=baseline, tick=0.2)
    bots, servers, tasks = [], [], []
    for account, config, verification in (("master", baseline_config, baseline), ("canary", canary_config, canary)):
        bot = Bot(config=bot_strategy(config), exchange=await bot_exchange(account), clock=clock, settings=FAST)
        server = MetricsServer(bot.metrics)
        port = await server.start("127.0.0.1", 0)
        bots.append(bot)
        servers.append(server)
        tasks.append(asyncio.create_task(bot.run(), name=f"test-bot-{account}"))
        scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics", clock=clock, interval=0.2,
                                 sink=lambda item, v=verification: (v.sink(item), changed.set()))
        tasks.append(asyncio.create_task(verification.run([scraper.run]), name=f"test-verification-{account}"))
    try:
        async with asyncio.timeout(60):
            while not until(latest):
                changed.clear()
                await changed.wait()
        for bot in bots:
            bot.stop()
        if afterwards is not None:
            async with asyncio.timeout(60):
                await afterwards(latest, changed, canary)
    except TimeoutError:
        pytest.fail(f"the rank test never got there: {latest.get(LATENCY.name)}")
    finally:
        for bot in bots:
            bot.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for server in servers:
            await server.stop()
    return latest


def hurried(clock, done, step=0.1):
    """Wrap a wait condition so that simulated time moves on by ``step`` at every verdict that does
    not meet it: samples accumulate and ``for`` durations run out in a fraction of the real time.
    Steps stay far below the exchange's 5 s recvWindow, and small: a jump during a signal's path
    adds to the latency the bot measures."""
    def check(latest):
        if done(latest):
            return True
        asyncio.get_running_loop().call_soon(clock.advance, step)
        return False
    return check


async def test_a_canary_with_a_slower_signal_path_than_its_baseline_is_held_by_the_rank_test(connect, bot_exchange, clock):
    async def outlast_for(latest, changed, verification):
        # The distributions are frozen (the bots have stopped): move time past the policy's
        # `for` in steps shorter than the scrapes' staleness bound, each once scraped and judged.
        while latest[LATENCY.name].outcome is not Outcome.FAIL:
            clock.advance(30.0)
            target = clock.time()
            while verification.last_read.get("bot", 0) < target or latest[LATENCY.name].at < target:
                changed.clear()
                await changed.wait()

    latest = await rank_against_baseline(
        connect, bot_exchange, clock, strategy(MAJORS, slow_signal_seconds="0.3"),
        hurried(clock, lambda latest: LATENCY.name in latest and latest[LATENCY.name].breaching_since is not None),
        afterwards=outlast_for)
    verdict = latest[LATENCY.name]
    assert verdict.action == "hold" and verdict.value >= 0.6 and verdict.samples >= 50


async def test_a_canary_as_fast_as_its_baseline_passes_the_rank_test(connect, bot_exchange, clock):
    latest = await rank_against_baseline(
        connect, bot_exchange, clock, strategy(MAJORS),
        hurried(clock, lambda latest: LATENCY.name in latest and latest[LATENCY.name].outcome is Outcome.PASS))
    assert latest[LATENCY.name].samples >= 50
