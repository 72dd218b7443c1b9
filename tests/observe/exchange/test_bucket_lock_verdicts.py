"""The shipped ``b-bucket-locks-released`` end to end, over hours of the reference bot's /metrics.

The policy wants the margin a bucket takes given back at least once in six hours
(``increase(strategy_bucket_unlocks_total[6h]) > 0`` per bucket), and no verdict before 1000
scrapes. It is used exactly as shipped: the bot trades on the simulator through the real
exchange layer, its /metrics is scraped every 15 s of the shared simulated clock, and the clock
is moved by 15 s steps (`Steps`: never while a signed request is out), so hours pass in seconds.
The bot trades once a minute here (its own default is once a second): fewer requests per step,
and still hundreds of lock/unlock cycles in six hours for a healthy release.
"""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import asynccontextmanager

import pytest

from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.observe.metrics import MetricsScraper
from reference_bot import BotSettings
from reference_bot.metrics import MetricsServer
from controller.verification import Verification
from tests.observe.exchange.stepping import Steps
from tests.support.bot import STRATEGY, running, strategy
from tests.support.checkout import REPO
from tests.support.verdicts import Verdicts

LOCKS = next(p for f in load_policies([REPO / "policies"]).values() for p in f.policies
             if p.name == "b-bucket-locks-released")
SCRAPE_EVERY = 15.0  # what the policy's min_samples counts on: 1000 scrapes, about 4 h
TRADING = BotSettings(interval=120.0, reconcile_every=120.0, seed=3, shutdown_timeout=3, stream_timeout=5)
BUCKETS = [(("bucket", name),) for name in STRATEGY["buckets"]]


@pytest.fixture
def volatility() -> float:
    return 1.0  # prices move, so resting entries fill and positions open


@asynccontextmanager
async def scraped(connect, bot_exchange, clock, config):
    """The bot trading ``config``, its /metrics scraped every 15 s into a verification of the policy."""
    judged = Verdicts()
    verification = Verification(policies=[LOCKS], config=config, clock=clock, on_verdicts=judged, tick=SCRAPE_EVERY)
    async with running(await bot_exchange("canary"), clock, config, TRADING) as bot:
        await bot.until(lambda: bot.bot.iterations >= 1)
        server = MetricsServer(bot.bot.metrics)
        port = await server.start("127.0.0.1", 0)
        scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics", clock=clock, interval=SCRAPE_EVERY,
                                 sink=judged.feeding(verification))
        task = asyncio.create_task(verification.run([scraper.run]), name="test-verification")
        try:
            yield bot, judged, verification
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await server.stop()


async def scrape_until(steps, judged, outcome: Outcome, *, hours: float) -> list[Outcome]:
    """Step the clock one scrape at a time until the policy's verdict is ``outcome``; returns
    every verdict's outcome on the way. Fails the test after ``hours`` of simulated time."""
    started = steps.clock.time()
    seen = []
    while judged.outcome(LOCKS.name) is not outcome:
        assert steps.clock.time() - started < hours * 3600, f"no {outcome} in {hours} h: {judged.latest}"
        await steps.read_after(judged, SCRAPE_EVERY)
        seen.append(judged.outcome(LOCKS.name))
    return seen


def unlocks(bot) -> dict[str, float]:
    return {name: bot.value("strategy_bucket_unlocks_total", bucket=name) for name in STRATEGY["buckets"]}


async def test_a_healthy_release_gives_every_buckets_margin_back_within_six_hours(connect, bot_exchange, clock, monkeypatch):
    steps = Steps(clock, monkeypatch)
    async with scraped(connect, bot_exchange, clock, strategy()) as (bot, judged, verification):
        started, iterations = clock.time(), bot.bot.iterations
        seen = await scrape_until(steps, judged, Outcome.PASS, hours=5)
        now = clock.time()
        per_bucket = {group: verification.evaluator.value(LOCKS.name, group, now) for group in BUCKETS}
        given_back = unlocks(bot)
    verdict = judged.latest[LOCKS.name]
    assert set(seen) == {Outcome.INCONCLUSIVE, Outcome.PASS}, "no verdict before 1000 scrapes, then a pass"
    assert verdict.samples == LOCKS.min_samples and verdict.value > 0 and verdict.threshold == 0
    assert now - started >= (LOCKS.min_samples - 1) * SCRAPE_EVERY     # over four hours of scrapes
    assert bot.bot.iterations - iterations >= 0.9 * (now - started) / TRADING.interval  # trading all along
    assert all(value is not None and value > 0 for value in per_bucket.values()), per_bucket
    assert all(count > 0 for count in given_back.values()), given_back


async def test_a_release_that_never_closes_its_positions_is_held_when_no_bucket_is_released_for_hours(
        connect, bot_exchange, clock, monkeypatch):
    steps = Steps(clock, monkeypatch)
    config = strategy(exits_never_sent=True)
    async with scraped(connect, bot_exchange, clock, config) as (bot, judged, verification):
        first_scrape = clock.time()
        while not all(bot.bot.ledger.position(symbol) for symbol in config.symbols):  # every bucket's margin taken
            assert clock.time() - first_scrape < 3600, {s: bot.bot.ledger.position(s) for s in config.symbols}
            await steps.read_after(judged, SCRAPE_EVERY)
        released = unlocks(bot)
        started, iterations = clock.time(), bot.bot.iterations
        await scrape_until(steps, judged, Outcome.FAIL, hours=6)
        now = clock.time()
        per_bucket = {group: verification.evaluator.value(LOCKS.name, group, now) for group in BUCKETS}
        held = {symbol: bot.bot.ledger.position(symbol) for symbol in config.symbols}
        still_released = unlocks(bot)
    verdict = judged.latest[LOCKS.name]
    assert verdict.action == "hold" and verdict.value == 0 and verdict.threshold == 0
    assert verdict.samples >= LOCKS.min_samples
    assert now - first_scrape >= (LOCKS.min_samples - 1) * SCRAPE_EVERY  # over four hours of scrapes
    assert bot.bot.iterations - iterations >= 0.9 * (now - started) / TRADING.interval  # it kept trading
    assert per_bucket == dict.fromkeys(BUCKETS, 0.0), per_bucket        # neither bucket was released
    assert still_released == released and all(amount != 0 for amount in held.values()), held
