"""How fast a breach becomes a stored `fail` verdict: on the exchange, and in the bot's metrics.

The verification is the daemon's own, built as its rollout runner builds a stage's: the shipped
stage-C policies, the reference bot's config, an `ExchangeObserver` on the controller's client of
an embedded simulator's canary account (real clock), and a `MetricsScraper` at the runner's
default scrape interval. A breach verdict is stored as the runner stores it: it wakes a task that
writes the verdicts to the rollout's `VerdictLog` (one SQLite commit); the time is taken after
that commit.

Exchange-side: a fresh verification per breach (the policies' windows remember a breach for
24 h); once its first snapshot is in, the bot's side (python-binance on the canary's key) either
sets a leverage the config does not name or fills an order 1.5 times its bucket's size;
the figure is the simulator's event time of that change to the commit of the `fail`. The account
is put back between breaches. 200 breaches (quick: 20), p50 and p99.

Bot metrics: the bot's /metrics (served here) says ``strategy_leverage_mismatch_total`` 0, then 1
at a moment drawn at random in the scrape interval after the first scrape; the figure is that
moment to the commit of the `fail`. 20 verifications at once (quick: 3), p99.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import ROUND_UP, Decimal
from pathlib import Path

from aiohttp import web
from binance import AsyncClient
from binance.exceptions import BinanceAPIException

from controller import shipped
from controller.analysis.policy import load_policy_file
from controller.analysis.verdict import Outcome, Verdict
from controller.clock import RealClock
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model
from controller.deploy.process import ProcessDeployer
from controller.observe.exchange import ExchangeObserver
from controller.observe.metrics import MetricsScraper
from controller.release_files import read_release
from controller.rollout.decide import asks_rollback
from controller.rollout.engine import RunnerCadence
from controller.rollout.info import create_rollout
from controller.rollout.pipeline import DEFAULT_PIPELINE, load_pipeline
from controller.rollout.site import Site
from controller.sim.embed import EmbeddedSimulators
from controller.sim.server import Simulator
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade
from controller.store.verdicts import VerdictLog
from controller.verification import Verification

ENVIRONMENT, ACCOUNT = "sim", "canary"
LEVERAGE_SYMBOL, FILL_SYMBOL = "BTCUSDT", "ETHUSDT"
OVERSIZE = Decimal("1.5")  # the fill's notional over its bucket's allowance
EXPECTED = {"leverage": "c-exchange-leverage-matches-config", "fill": "c-fills-sized-within-bucket",
            "metrics": "c-leverage-mismatch-zero"}
NO_CHANGE_NEEDED = -4046  # Binance's answer to a margin type change to the type already set
BENCH_WEIGHT_LIMIT = 1_000_000  # request weight a minute the simulator allows the bench's IP
READY_TIMEOUT = 10.0  # wall seconds for a verification's first reads, and for a breach's verdict


def measure(quick: bool) -> dict[str, float | int | None]:
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as folder:
        exchange, metrics, interval = asyncio.run(_measure(quick, Path(folder)))
    return {"detect_exchange_p50_ms": statistics.median(exchange) * 1000,
            "detect_exchange_p99_ms": p99(exchange) * 1000,
            "detect_metrics_p99_ms": p99(metrics) * 1000,
            "metrics_scrape_interval_ms": interval * 1000}


def p99(samples: list[float]) -> float:
    """The 99th percentile of the measured samples, linear between the closest ranks."""
    return statistics.quantiles(samples, n=100, method="inclusive")[98]


class StoredBreach:
    """The rollout runner's part: verdicts gather until a breach wakes it, then go to the store in one commit."""

    def __init__(self, log: VerdictLog, clock: RealClock) -> None:
        self.log = log
        self.clock = clock
        self.pending: list[Verdict] = []
        self.breach: Verdict | None = None
        self.trigger: float | None = None  # the newest observation's event time when the breach came
        self.verifier: Verification | None = None
        self._wake = asyncio.Event()

    def on_verdicts(self, verdicts: list[Verdict]) -> None:
        self.pending.extend(verdicts)
        breach = next((v for v in verdicts if asks_rollback(v) and v.outcome is Outcome.FAIL), None)
        if breach is not None and self.breach is None:
            self.breach = breach
            self.trigger = self.verifier.last_observed if self.verifier else None
            self._wake.set()

    async def flush(self) -> None:
        verdicts, self.pending = self.pending, []
        await self.log.record(verdicts)

    async def committed(self, within: float = READY_TIMEOUT) -> float:
        """Clock time once the breach's verdicts are committed; fails after ``within`` wall seconds."""
        async with asyncio.timeout(within):
            await self._wake.wait()
        await self.flush()
        return self.clock.time()


async def _measure(quick: bool, folder: Path) -> tuple[list[float], list[float], float]:
    clock = RealClock()
    db = Database(resolve_url(f"sqlite:///{folder / 'canary.db'}"))
    await upgrade(db)
    strategy = shipped.reference_bot_file("strategy.yaml")
    await add_release(db, clock, read_release("1.1.0", shipped.demo_manifest(), strategy), actor="bench")
    rollout = await create_rollout(db, clock, version="1.1.0", pipeline=load_pipeline(DEFAULT_PIPELINE),
                                   actor="bench")
    config = load_model(StrategyConfig, strategy)
    policies = load_policy_file(shipped.policies_dir() / "stage-c.yaml").policies
    # Starting an observer 200 times a minute is the bench's doing, not a daemon's: the simulator's
    # IP limit is raised, and each breach's verification gets a site (and weight budget) of its own.
    simulators = EmbeddedSimulators(clock, options={"weight_limit": BENCH_WEIGHT_LIMIT})
    access = await simulators.open(ENVIRONMENT, ProcessDeployer(folder / "state", clock))
    sim = simulators.started[ENVIRONMENT]
    bot = await _bot_client(sim)
    try:
        await _placed(bot, config)
        exchange = []
        for n in range(20 if quick else 200):
            kind = "leverage" if n % 2 == 0 else "fill"
            site = Site(clock, {ENVIRONMENT: access})
            try:
                exchange.append(await _exchange_breach(kind, db, rollout.id, site, sim, bot, config, policies, clock))
            finally:
                await site.close()
        interval = RunnerCadence().scrape
        metrics = await asyncio.gather(*(_metrics_breach(db, rollout.id, config, policies, clock, interval)
                                         for _ in range(3 if quick else 20)))
        return exchange, list(metrics), interval
    finally:
        await bot.close_connection()
        await simulators.close()
        await db.close()


async def _exchange_breach(kind: str, db: Database, rollout_id: int, site: Site, sim: Simulator, bot: AsyncClient,
                           config: StrategyConfig, policies, clock: RealClock) -> float:
    """Seconds from the exchange's event to the stored fail, for one breach of ``kind``."""
    stored = StoredBreach(VerdictLog(db, rollout_id), clock)
    verifier = Verification(policies=policies, config=config, clock=clock, on_verdicts=stored.on_verdicts,
                            account=ACCOUNT)
    stored.verifier = verifier
    client = await site.client(ENVIRONMENT, ACCOUNT)
    observer = ExchangeObserver(account=ACCOUNT, client=client, config=config, clock=clock, sink=verifier.sink,
                                snapshot_every=RunnerCadence().snapshot)
    task = asyncio.create_task(verifier.run([observer.run]))
    try:
        await _until(lambda: observer.view.capital is not None and observer.view.connected is True, task)
        await stored.flush()  # what the runner stored on its turns before the breach
        if stored.breach is not None:
            raise RuntimeError(f"a breach before any was injected: {stored.breach.policy}: {stored.breach.reason}")
        if kind == "leverage":
            await bot.futures_change_leverage(symbol=LEVERAGE_SYMBOL, leverage=config.symbols[LEVERAGE_SYMBOL].leverage + 1)
        else:
            await bot.futures_create_order(symbol=FILL_SYMBOL, side="BUY", type="MARKET",
                                           quantity=_oversized(sim, config, FILL_SYMBOL))
        committed = await stored.committed()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    if stored.breach.policy != EXPECTED[kind]:
        raise RuntimeError(f"the {kind} breach was caught by {stored.breach.policy}, expected {EXPECTED[kind]}")
    await _put_back(bot, config)
    return committed - stored.trigger


async def _metrics_breach(db: Database, rollout_id: int, config: StrategyConfig, policies, clock: RealClock,
                          interval: float) -> float:
    """Seconds from the bot's counter moving to the stored fail, at the default scrape interval."""
    mismatches = 0

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=f"# TYPE strategy_leverage_mismatch_total counter\n"
                                 f"strategy_leverage_mismatch_total {mismatches}\n")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001 - aiohttp names no public way to it
    stored = StoredBreach(VerdictLog(db, rollout_id), clock)
    verifier = Verification(policies=policies, config=config, clock=clock, on_verdicts=stored.on_verdicts,
                            account=ACCOUNT)
    scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics", clock=clock, sink=verifier.sink, interval=interval)
    task = asyncio.create_task(verifier.run([scraper.run]))
    try:
        await _until(lambda: "bot" in verifier.last_read, task)
        await stored.flush()
        await asyncio.sleep(random.uniform(0, interval))  # a moment anywhere between two scrapes
        mismatches, moved = 1, clock.time()
        committed = await stored.committed(within=interval + READY_TIMEOUT)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await runner.cleanup()
    if stored.breach.policy != EXPECTED["metrics"]:
        raise RuntimeError(f"the metrics breach was caught by {stored.breach.policy}, expected {EXPECTED['metrics']}")
    return committed - moved


async def _until(ready: Callable[[], bool], task: asyncio.Task) -> None:
    """Wait (polling: this is set-up, not what is timed) until ``ready()``; fail if ``task`` ends first."""
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready():
        if task.done():
            task.result()
            raise RuntimeError("the verification ended before its first reads")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the verification had not read its sources after {READY_TIMEOUT:g} s")
        await asyncio.sleep(0.005)


def _oversized(sim: Simulator, config: StrategyConfig, symbol: str) -> str:
    """A quantity whose notional is `OVERSIZE` times what the symbol's bucket allows one order."""
    bucket = next(b for b in config.buckets.values() if symbol in b.symbols)
    capital = sim.accounts[ACCOUNT].wallet
    allowed = Decimal(str(bucket.allocation)) * capital * config.symbols[symbol].leverage
    spec = sim.market.spec(symbol)
    return str((allowed * OVERSIZE / sim.market.price(symbol) / spec.step).quantize(Decimal(1), ROUND_UP) * spec.step)


async def _placed(bot: AsyncClient, config: StrategyConfig) -> None:
    """The account as a placement leaves it: each symbol's configured leverage and margin type."""
    for symbol, settings in config.symbols.items():
        await bot.futures_change_leverage(symbol=symbol, leverage=settings.leverage)
        try:
            await bot.futures_change_margin_type(symbol=symbol, marginType=settings.margin_type)
        except BinanceAPIException as exc:
            if exc.code != NO_CHANGE_NEEDED:
                raise


async def _put_back(bot: AsyncClient, config: StrategyConfig) -> None:
    """The account as the next breach needs it: configured leverage, no position."""
    await bot.futures_change_leverage(symbol=LEVERAGE_SYMBOL, leverage=config.symbols[LEVERAGE_SYMBOL].leverage)
    for position in await bot.futures_position_information(symbol=FILL_SYMBOL):
        amount = Decimal(position["positionAmt"])
        if amount:
            await bot.futures_create_order(symbol=FILL_SYMBOL, side="SELL" if amount > 0 else "BUY", type="MARKET",
                                           quantity=str(abs(amount)), reduceOnly="true")


async def _bot_client(sim: Simulator) -> AsyncClient:
    keys = sim.accounts[ACCOUNT]
    client = AsyncClient(keys.api_key, keys.api_secret)
    client.FUTURES_URL = sim.rest_url
    server = await client.futures_time()
    client.timestamp_offset = server["serverTime"] - int(time.time() * 1000)
    return client
