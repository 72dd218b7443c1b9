"""The shipped order-failure policies end to end, from both sides of the order path.

The bot counts what it was refused or could not place (``strategy_orders_total{outcome=
"rejected"|"error"}``: ``a-``, ``c-``, ``d-order-failure-rate``); the exchange's stream counts
the orders it accepted and then rejected or expired (``order_outcomes``:
``a-exchange-order-failure-rate``). Each side sees a defect the other cannot: a burst of orders
the exchange refuses never reaches its stream, and closes the exchange expires look like
ordinary ends to the bot. Every policy is used as shipped: no rate before 200 orders, and a
breach must last 10 minutes, which the shared simulated clock is moved through by `Steps`
while the bot keeps trading.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager

import pytest

from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.observe.exchange import ExchangeObserver
from controller.observe.metrics import MetricsScraper
from reference_bot import BotSettings
from reference_bot.metrics import MetricsServer
from controller.verification import Verification
from tests.observe.exchange.stepping import Steps
from tests.support.bot import running, strategy
from tests.support.checkout import REPO
from tests.support.verdicts import Verdicts

SHIPPED = {p.name: p for f in load_policies([REPO / "policies"]).values() for p in f.policies}
EXCHANGE = "a-exchange-order-failure-rate"
BOT = ("a-order-failure-rate", "c-order-failure-rate", "d-order-failure-rate")
SOURCES = ("exchange", "bot")
TRADE_STEP = 1.0     # while orders pile up: one iteration per step
OUTLAST_STEP = 30.0  # through a policy's `for`, the bot still trading
# An iteration a second, a resting entry canceled at the next one: orders end at a steady pace.
TRADING = BotSettings(interval=TRADE_STEP, order_ttl=TRADE_STEP, reconcile_every=10.0, seed=3, shutdown_timeout=3,
                      stream_timeout=5)


@pytest.fixture
def volatility() -> float:
    return 1.0  # prices move: entries fill, positions open and close


@asynccontextmanager
async def judged_both_ways(connect, bot_exchange, clock, config):
    """The bot trading ``config`` on the canary account; its /metrics scraped and the account
    observed on the exchange, both into one verification of the four policies."""
    judged = Verdicts()
    verification = Verification(policies=[SHIPPED[n] for n in (EXCHANGE, *BOT)], config=config, clock=clock,
                                on_verdicts=judged, tick=0.05)
    async with running(await bot_exchange("canary"), clock, config, TRADING) as bot:
        await bot.until(lambda: bot.bot.iterations >= 1)
        server = MetricsServer(bot.bot.metrics)
        port = await server.start("127.0.0.1", 0)
        observer = ExchangeObserver(account="canary", client=await connect("canary"), config=config, clock=clock,
                                    sink=judged.feeding(verification), snapshot_every=TRADE_STEP)
        scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics", clock=clock, interval=TRADE_STEP,
                                 sink=judged.feeding(verification))
        task = asyncio.create_task(verification.run([observer.run, scraper.run]), name="test-verification")
        try:
            yield bot, observer, judged, verification
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await server.stop()


def outcome_is(outcome, names):
    return lambda latest: all(n in latest and latest[n].outcome is outcome for n in names)


def breaching(names, *, while_passing=()):
    """A breach of each of ``names`` has begun, and each of ``while_passing`` passes."""
    return lambda latest: (all(n in latest and latest[n].breaching_since is not None for n in names)
                           and outcome_is(Outcome.PASS, while_passing)(latest))


async def test_a_healthy_release_passes_the_order_failure_rates_of_both_sides(connect, bot_exchange, clock, monkeypatch):
    steps = Steps(clock, monkeypatch)
    async with judged_both_ways(connect, bot_exchange, clock, strategy()) as (bot, observer, judged, verification):
        await steps.until(judged, outcome_is(Outcome.PASS, (EXCHANGE, *BOT)), step=TRADE_STEP, bound=900)
        ended = dict(observer.view.outcomes)
    for name in (EXCHANGE, *BOT):
        verdict = judged.latest[name]
        assert verdict.samples >= 200 and verdict.value == 0 and verdict.threshold == 0.005, verdict
    assert ended["filled"] > 0 and ended["expired"] == ended["rejected"] == 0, ended


async def test_closes_the_exchange_expires_fail_its_order_failure_rate_and_not_the_bots(
        connect, bot_exchange, clock, monkeypatch):
    steps = Steps(clock, monkeypatch)
    config = strategy(oversized_exits=2)  # every close twice the position: the exchange expires the rest
    async with judged_both_ways(connect, bot_exchange, clock, config) as (bot, observer, judged, verification):
        await steps.until(judged, breaching([EXCHANGE], while_passing=BOT), step=TRADE_STEP, bound=900)
        await steps.outlast_for(judged, [EXCHANGE], OUTLAST_STEP, bound=SHIPPED[EXCHANGE].for_ + 10 * OUTLAST_STEP,
                                reads=[(verification, s) for s in SOURCES])
        ended = dict(observer.view.outcomes)
        expired_by_bot = bot.value("strategy_orders_total", outcome="expired")
    verdict = judged.latest[EXCHANGE]
    assert verdict.action == "hold" and verdict.threshold == 0.005 and verdict.value > 0.005
    assert verdict.samples >= 200 and verdict.breaching_since <= verdict.at - SHIPPED[EXCHANGE].for_
    assert ended["expired"] > 0 and ended["rejected"] == 0, ended
    assert expired_by_bot > 0                        # the bot saw them end, as "expired": no failure to it
    assert all(judged.latest[n].outcome is Outcome.PASS and judged.latest[n].value == 0 for n in BOT)


async def test_orders_the_exchange_refuses_fail_the_bots_order_failure_rates_and_not_the_exchanges(
        connect, bot_exchange, clock, monkeypatch):
    steps = Steps(clock, monkeypatch)
    config = strategy(rejected_orders_burst=200)  # refused at the REST call: no order, no stream event
    async with judged_both_ways(connect, bot_exchange, clock, config) as (bot, observer, judged, verification):
        await steps.until(judged, breaching(BOT, while_passing=[EXCHANGE]), step=TRADE_STEP, bound=900)
        await steps.outlast_for(judged, BOT, OUTLAST_STEP, bound=SHIPPED[BOT[0]].for_ + 10 * OUTLAST_STEP,
                                reads=[(verification, s) for s in SOURCES])
        ended = dict(observer.view.outcomes)
    for name in BOT:
        verdict = judged.latest[name]
        assert verdict.action == "rollback" and verdict.threshold == 0.005 and verdict.value > 0.005, verdict
        assert verdict.samples >= 200
    exchange = judged.latest[EXCHANGE]
    assert exchange.outcome is Outcome.PASS and exchange.value == 0 and exchange.samples >= 200
    assert ended["rejected"] == 0, ended
