"""The shipped bot-side policies judged on the reference bot's real /metrics: a healthy release
passes them, and each defect fails the policy that should catch it. The policy files are used
exactly as shipped; where a policy needs its breach to last (``for``), the shared simulated
clock is moved past it."""

from __future__ import annotations

import asyncio
import contextlib


from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.observe.metrics import MetricsScraper
from reference_bot.metrics import MetricsServer
from controller.verification import Verification
from tests.support.bot import running, strategy
from tests.support.checkout import REPO
from tests.support.verdicts import Verdicts

SHIPPED = {p.name: p for f in load_policies([REPO / "policies"]).values() for p in f.policies}


@contextlib.asynccontextmanager
async def verifying(client, clock, config, names):
    """The bot trading, its /metrics served over HTTP, scraped into a verification of ``names``;
    yields the metrics server and the judgement."""
    judgement = Verdicts()
    verification = Verification(policies=[SHIPPED[n] for n in names], config=config, clock=clock,
                                on_verdicts=judgement, tick=0.2)
    async with running(client, clock, config) as bot:
        server = MetricsServer(bot.bot.metrics)
        port = await server.start("127.0.0.1", 0)
        scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics", clock=clock, sink=judgement.feeding(verification), interval=0.2)
        task = asyncio.create_task(verification.run([scraper.run]), name="test-verification")
        try:
            yield server, judgement
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await server.stop()


async def outlast_for(judgement, clock, name, step=30.0):
    """A breach has started (``breaching_since``); move the clock past the policy's ``for`` in
    steps shorter than any staleness bound, letting the scraper and the tick catch up on each,
    as continuous time would."""
    await judgement.until(lambda _: name in judgement.latest and judgement.latest[name].breaching_since is not None)
    deadline = judgement.latest[name].breaching_since + SHIPPED[name].for_
    while judgement.outcome(name) is not Outcome.FAIL:
        assert clock.time() < deadline + 10 * step, f"{name} never failed: {judgement.latest[name]}"
        clock.advance(step)
        target = clock.time()
        await judgement.until(lambda _: judgement.read_at >= target)
        await judgement.until(lambda _: judgement.latest[name].at >= judgement.read_at)


HEALTHY = ("a-leverage-mismatch-zero", "a-signal-latency-p50", "a-signal-latency-p95",
           "a-bucket-usage-within-allocation", "b-bot-applied-leverage-equals-config",
           "b-bot-configured-leverage-equals-config", "b-margin-fractions-fresh")


async def test_a_healthy_release_passes_the_bot_side_policies(client, clock):
    async with verifying(client, clock, strategy(), HEALTHY) as (_, judgement):
        await judgement.until(lambda _: all(judgement.outcome(n) is Outcome.PASS for n in HEALTHY))
    latency = judgement.latest["a-signal-latency-p95"]
    assert latency.samples >= 50 and latency.value < 0.4


async def test_a_wrong_leverage_fails_the_mismatch_counter_and_the_applied_gauge(client, clock):
    config = strategy(wrong_leverage={"symbol": "SOLUSDT", "leverage": 9})
    names = ("a-leverage-mismatch-zero", "b-bot-applied-leverage-equals-config")
    async with verifying(client, clock, config, names) as (_, judgement):
        await judgement.until(lambda _: all(judgement.outcome(n) is Outcome.FAIL for n in names))
    applied = judgement.latest["b-bot-applied-leverage-equals-config"]
    assert dict(applied.group) == {"symbol": "SOLUSDT"} and (applied.value, applied.threshold) == (9, 3)
    assert judgement.latest["a-leverage-mismatch-zero"].action == "rollback"


async def test_a_slow_signal_path_fails_the_latency_policies_once_the_breach_has_lasted(client, clock):
    config = strategy(slow_signal_seconds="0.2")
    async with verifying(client, clock, config, ("a-signal-latency-p50",)) as (_, judgement):
        await outlast_for(judgement, clock, "a-signal-latency-p50")
    verdict = judgement.latest["a-signal-latency-p50"]
    assert verdict.value > 0.15 and verdict.action == "rollback"


async def test_oversized_orders_fail_the_bucket_usage_policy(client, clock):
    config = strategy(oversized_orders=3)
    name = "a-bucket-usage-within-allocation"
    async with verifying(client, clock, config, (name,)) as (_, judgement):
        await judgement.until(lambda _: judgement.outcome(name) is Outcome.FAIL)
    verdict = judgement.latest[name]
    assert verdict.value > verdict.threshold and dict(verdict.group)["bucket"] in ("majors", "alts")


async def test_a_burst_of_rejected_orders_fails_the_order_failure_rate(client, clock):
    config = strategy(rejected_orders_burst=200)
    name = "a-order-failure-rate"
    async with verifying(client, clock, config, (name,)) as (_, judgement):
        await outlast_for(judgement, clock, name)
    verdict = judgement.latest[name]
    assert verdict.samples >= 200 and verdict.value > 0.005


async def test_a_dead_metrics_endpoint_turns_a_passing_policy_into_nodata(client, clock):
    name = "a-leverage-mismatch-zero"
    async with verifying(client, clock, strategy(), (name,)) as (metrics_server, judgement):
        await judgement.until(lambda _: judgement.outcome(name) is Outcome.PASS)
        await metrics_server.stop()                # the bot's /metrics stops answering
        stale_after = SHIPPED[name].on_nodata.stale_after
        while judgement.outcome(name) is Outcome.PASS:
            assert clock.time() < judgement.read_at + 2 * stale_after, judgement.latest[name]
            clock.advance(30)
            target = clock.time()
            await judgement.until(lambda _: judgement.latest[name].at >= target)
    verdict = judgement.latest[name]
    assert verdict.outcome is Outcome.NODATA and verdict.action == "hold" and "stale" in verdict.reason


async def test_margin_fractions_that_stop_updating_fail_the_freshness_policy(sim, client, clock):
    name = "b-margin-fractions-fresh"
    async with verifying(client, clock, strategy(), (name,)) as (_, judgement):
        await judgement.until(lambda _: judgement.outcome(name) is Outcome.PASS)
        sim.faults.fail("GET /fapi/v3/positionRisk", rate=1.0, code=-1001, status=500)  # the bot can't reconcile
        started = clock.time()
        while judgement.outcome(name) is not Outcome.FAIL:
            assert clock.time() < started + 600, judgement.latest[name]
            clock.advance(20)
            target = clock.time()
            await judgement.until(lambda _: judgement.read_at >= target)
            await judgement.until(lambda _: judgement.latest[name].at >= judgement.read_at)
        sim.faults.clear()
    verdict = judgement.latest[name]
    assert verdict.value >= 60 and verdict.action == "rollback" and "bucket" in dict(verdict.group)


async def test_a_slow_order_path_that_backs_up_the_queue_fails_the_queue_latency_policy(sim, client, clock):
    sim.faults.add_latency(0.8, "POST /fapi/v1/order")  # each order is answered 0.8 s after it is sent
    name = "c-queue-latency-p95"

    def breaching_or_hurry(_latest):
        verdict = judgement.latest.get(name)
        if verdict is not None and verdict.breaching_since is not None:
            return True
        asyncio.get_running_loop().call_soon(clock.advance, 0.2)  # orders queue up faster than in real time
        return False

    async with verifying(client, clock, strategy(), (name,)) as (_, judgement):
        await judgement.until(breaching_or_hurry)
        await outlast_for(judgement, clock, name)
    verdict = judgement.latest[name]
    assert verdict.value >= 0.5 and verdict.samples >= 50 and verdict.action == "hold"
