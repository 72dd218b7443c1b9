"""Every shipped bot- and exchange-side policy of stages A to D, judged at once on one run of
the reference bot: the exchange's view (stream + snapshots, with the master key for the
capital share) and the bot's real /metrics, into one verification. A healthy release passes
every policy a short run can judge; each defect fails, in every stage, the policies that
should catch it."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.observe.exchange import ExchangeObserver
from controller.observe.metrics import MetricsScraper
from reference_bot import Bot
from reference_bot.metrics import MetricsServer
from controller.verification import Verification
from tests.support.bot import FAST, bot_strategy, strategy
from tests.support.checkout import REPO
from tests.support.exchange_observer import SNAPSHOT_EVERY

# The trading stages' files: the shadow file's policies (no order, no fill) judge a release that may
# not trade, in tests/e2e/test_shadow_stage.py.
SHIPPED = [p for f in load_policies([REPO / "policies"]).values() if f.mode == "trade"
           for p in f.policies if p.source in ("bot", "exchange")]
CANARY_CAP = 0.02

# What a run of seconds cannot judge: rates that need hundreds of orders, comparisons that need
# a baseline release running beside the canary, and lock cycles that need hours of history.
NOT_JUDGEABLE_IN_SECONDS = {"order-failure-rate", "exchange-order-failure-rate", "exposure-like-baseline",
                            "pnl-like-baseline", "signal-latency-like-baseline", "signal-latency-like-baseline-5m",
                            "bucket-locks-released"}


def judgeable(policy) -> bool:
    return policy.name.split("-", 1)[1] not in NOT_JUDGEABLE_IN_SECONDS


@pytest.fixture
def volatility() -> float:
    return 1.0


async def run_release(connect, bot_exchange, clock, config, expected: dict[str, Outcome], timeout=40.0):
    """Trade ``config`` until every policy in ``expected`` has that outcome; returns the verdicts."""
    latest = {}
    changed = asyncio.Event()

    def on_verdicts(verdicts):
        latest.update({v.policy: v for v in verdicts})
        changed.set()

    bot_client, observer_client, master = await bot_exchange("canary"), await connect("canary"), await connect("master")
    verification = Verification(policies=SHIPPED, config=config, clock=clock, on_verdicts=on_verdicts,
                                capital_cap=CANARY_CAP, tick=0.2)
    bot = Bot(config=bot_strategy(config), exchange=bot_client, clock=clock, settings=FAST)
    server = MetricsServer(bot.metrics)
    port = await server.start("127.0.0.1", 0)
    bot_task = asyncio.create_task(bot.run(), name="test-bot")
    await bot.wait_for(lambda: bot.iterations >= 1, timeout=10)  # the release is in place
    observer = ExchangeObserver(account="canary", client=observer_client, config=config, clock=clock,
                                sink=verification.sink, master=master, snapshot_every=SNAPSHOT_EVERY)
    scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics", clock=clock, sink=verification.sink, interval=0.2)
    task = asyncio.create_task(verification.run([observer.run, scraper.run]), name="test-verification")

    def wrong():
        return {n: (latest[n].outcome if n in latest else None) for n, want in expected.items()
                if n not in latest or latest[n].outcome is not want}
    try:
        async with asyncio.timeout(timeout):
            while wrong():
                changed.clear()
                await changed.wait()
    except TimeoutError:
        pytest.fail(f"not as expected after {timeout} s: {wrong()}\n" +
                    "\n".join(f"  {n}: {latest[n].reason}" for n in wrong() if n in latest))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        bot.stop()
        await asyncio.wait_for(bot_task, timeout=10)
        await server.stop()
    return latest


async def test_a_healthy_release_passes_every_policy_a_short_run_can_judge_in_every_stage(connect, bot_exchange, clock):
    expected = {p.name: Outcome.PASS for p in SHIPPED if judgeable(p)}
    assert {p.name[0] for p in SHIPPED if judgeable(p)} == {"a", "b", "c", "d"}
    latest = await run_release(connect, bot_exchange, clock, strategy(), expected)
    assert latest["c-capital-share-within-cap"].value == pytest.approx(0.018, rel=0.01)


async def test_a_wrong_leverage_fails_the_leverage_policies_of_every_stage(connect, bot_exchange, clock):
    leverage_checks = ("a-leverage-mismatch-zero", "a-exchange-leverage-matches-config",
                       "b-bot-applied-leverage-equals-config", "b-exchange-leverage-matches-config",
                       "c-exchange-leverage-matches-config", "c-leverage-mismatch-zero",
                       "d-exchange-leverage-matches-config", "d-leverage-mismatch-zero")
    expected = {name: Outcome.FAIL for name in leverage_checks}
    expected.update({"b-bot-configured-leverage-equals-config": Outcome.PASS,   # the bot reports its config
                     "c-margin-type-matches-config": Outcome.PASS})
    latest = await run_release(connect, bot_exchange, clock, strategy(wrong_leverage={"symbol": "SOLUSDT", "leverage": 9}), expected)
    assert all(latest[n].action == "rollback" for n in leverage_checks)


async def test_oversized_orders_fail_the_sizing_policies_of_every_stage(connect, bot_exchange, clock):
    sizing = ("a-bucket-usage-within-allocation", "c-bucket-usage-within-allocation",
              "d-bucket-usage-within-allocation", "c-fills-sized-within-bucket", "d-fills-sized-within-bucket")
    expected = {name: Outcome.FAIL for name in sizing}
    expected["c-exchange-leverage-matches-config"] = Outcome.PASS
    config = strategy({"symbols": {"BTCUSDT": {"leverage": 5}, "ETHUSDT": {"leverage": 5}},
                       "buckets": {"majors": {"allocation": "0.5", "symbols": ["BTCUSDT", "ETHUSDT"]}},
                       "sizing": {"order_fraction": "0.5"}}, oversized_orders=3)
    latest = await run_release(connect, bot_exchange, clock, config, expected)
    assert {name: latest[name].outcome for name in sizing} == {name: Outcome.FAIL for name in sizing}
