"""The shipped ``c-`` and ``d-pnl-like-baseline`` end to end: the canary's PnL over its capital
against the baseline release's, on the same market at the same time.

The previous release trades the master account (98 200 USDT), the canary its sub-account
(1 800), both observed on the exchange (``pnl_ratio``: wallet plus unrealised PnL less the
starting capital, over that capital). Prices stand still, so a release's PnL is what its
trading costs (fees, the spread); the policies hold a canary whose PnL grew less than the
baseline's by a point of capital beyond three standard errors of the difference. The policies are used as shipped (30 snapshots before a
verdict, a breach must last an hour), and both runs follow one schedule, which `Steps` moves
the shared clock through while both bots trade: fifteen minutes of trading a step a second (the
defect's run stops early, once its canary is clearly behind), then an hour and more in
one-minute steps, each snapshotted afresh and judged.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager

import pytest

from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.observe.exchange import ExchangeObserver
from reference_bot import Bot, BotSettings
from controller.verification import Verification
from tests.observe.exchange.stepping import Steps
from tests.support.bot import bot_strategy, strategy
from tests.support.checkout import REPO
from tests.support.verdicts import Verdicts

SHIPPED = {p.name: p for f in load_policies([REPO / "policies"]).values() for p in f.policies}
PNL = ("c-pnl-like-baseline", "d-pnl-like-baseline")
FOR = SHIPPED[PNL[0]].for_
# Ten times leverage and small orders: a bucket has room for three times their size, so a
# release sizing them three times as large trades (and pays) more, not just fills up sooner.
MAJORS = {"symbols": {"BTCUSDT": {"leverage": 10}, "ETHUSDT": {"leverage": 10}},
          "buckets": {"majors": {"allocation": "0.5", "symbols": ["BTCUSDT", "ETHUSDT"]}},
          "sizing": {"order_fraction": "0.1"}}
TRADE_STEP = 1.0      # one iteration of each bot, one snapshot of each account
TRADE_FOR = 900.0     # at most: a release three times oversized is half a point behind in half that
HOURLY_STEP = 60.0    # through the policies' hour, both bots trading (snapshots go stale after 10 min)
TRADING = BotSettings(interval=TRADE_STEP, order_ttl=TRADE_STEP, reconcile_every=10.0, seed=3, shutdown_timeout=3,
                      stream_timeout=5)


@pytest.fixture
def volatility() -> float:
    return 0.0  # the conftest's default, stated: PnL is what trading costs, not where prices went


@asynccontextmanager
async def against_baseline(connect, bot_exchange, clock, canary_config):
    """The baseline release on the master account and ``canary_config`` on the canary, each
    observed into its own verification; the canary's judged against the baseline's."""
    judged = Verdicts()
    baseline_config = strategy(MAJORS)
    baseline = Verification(policies=[SHIPPED[n] for n in PNL], config=baseline_config, clock=clock,
                            on_verdicts=lambda verdicts: None, tick=0.1)
    canary = Verification(policies=[SHIPPED[n] for n in PNL], config=canary_config, clock=clock, on_verdicts=judged,
                          baseline=baseline, tick=0.1)
    bots, tasks = [], []
    try:
        for account, config, verification in (("master", baseline_config, baseline), ("canary", canary_config, canary)):
            bot = Bot(config=bot_strategy(config), exchange=await bot_exchange(account), clock=clock, settings=TRADING)
            bots.append(bot)
            tasks.append(asyncio.create_task(bot.run(), name=f"test-bot-{account}"))
            await bot.wait_for(lambda bot=bot: bot.iterations >= 1)
            observer = ExchangeObserver(account=account, client=await connect(account), config=config, clock=clock,
                                        sink=judged.feeding(verification), snapshot_every=TRADE_STEP)
            tasks.append(asyncio.create_task(verification.run([observer.run]), name=f"test-verification-{account}"))
        yield judged, canary, baseline
    finally:
        for bot in bots:
            bot.stop()
        await asyncio.gather(*tasks[::2], return_exceptions=True)  # the bots, stopping
        for task in tasks[1::2]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def growth(verification, policy, now) -> float:
    """How much a release's PnL ratio grew over the policy's window, as its verification saw it."""
    (window,) = verification.evaluator.windows(policy, (), now).values()
    return window.last()[1] - window.first()[1]


def clearly_behind(latest) -> bool:
    """The canary's PnL half a point below the policies' threshold: far past any dip back."""
    return all(n in latest and latest[n].threshold is not None and latest[n].value < latest[n].threshold - 0.005
               for n in PNL)


async def trade_then_judge_hourly(steps, judged, canary, baseline, *, trade_until=None) -> list:
    """Trading a step a second for ``TRADE_FOR`` (or until ``trade_until(latest)``, at most that
    long), then one-minute steps, each read afresh on both accounts and judged after the read:
    for the policies' hour and half an hour more (the lag's spread settles once the one-minute steps
    outnumber the trading ones), or until both fail. Returns every verdict pair
    of the hourly part."""
    clock = steps.clock
    started = clock.time()

    def traded(latest) -> bool:
        return clock.time() >= started + TRADE_FOR or (trade_until is not None and trade_until(latest))

    await steps.until(judged, traded, step=TRADE_STEP, bound=TRADE_FOR + 60)
    hourly, judged_hourly = clock.time(), []
    while clock.time() < hourly + FOR + 30 * HOURLY_STEP and not all(judged.outcome(n) is Outcome.FAIL for n in PNL):
        read = await steps.read_after(judged, HOURLY_STEP, reads=[(canary, "exchange"), (baseline, "exchange")])
        await steps.until(judged, lambda latest: all(latest[n].at >= read for n in PNL), step=0.1, bound=60)
        judged_hourly.append(tuple(judged.latest[n] for n in PNL))
    return judged_hourly


async def test_a_canary_trading_like_its_baseline_earns_like_it_all_along(connect, bot_exchange, clock, monkeypatch):
    steps = Steps(clock, monkeypatch)
    async with against_baseline(connect, bot_exchange, clock, strategy(MAJORS)) as (judged, canary, baseline):
        hourly = await trade_then_judge_hourly(steps, judged, canary, baseline)  # trades as long as the defect may
    assert len(hourly) >= FOR / HOURLY_STEP
    assert all(v.outcome is Outcome.PASS and v.breaching_since is None for pair in hourly for v in pair), hourly
    for verdict in hourly[-1]:
        assert verdict.samples >= SHIPPED[verdict.policy].min_samples, verdict
        grown = {side: growth(verification, verdict.policy, verdict.at)
                 for side, verification in (("canary", canary), ("baseline", baseline))}
        assert grown["canary"] < 0 and grown["baseline"] < 0, grown            # both paid to trade
        assert abs(grown["canary"] - grown["baseline"]) < 0.005, grown         # much the same


async def test_a_canary_paying_more_than_its_baseline_to_trade_is_held_once_it_has_lagged_for_an_hour(
        connect, bot_exchange, clock, monkeypatch):
    steps = Steps(clock, monkeypatch)
    config = strategy(MAJORS, oversized_orders=3)
    async with against_baseline(connect, bot_exchange, clock, config) as (judged, canary, baseline):
        await trade_then_judge_hourly(steps, judged, canary, baseline, trade_until=clearly_behind)
    for name in PNL:
        verdict = judged.latest[name]
        assert verdict.outcome is Outcome.FAIL and verdict.action == "hold", verdict
        assert verdict.value < verdict.threshold < 0 and verdict.samples >= SHIPPED[name].min_samples, verdict
        assert verdict.at - verdict.breaching_since >= FOR, verdict
