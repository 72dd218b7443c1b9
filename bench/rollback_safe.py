"""How long a rollback takes to make the account safe, and how many exchange round trips that costs.

Each account is the canary account of an exchange environment of its own, an embedded simulator
on the real clock (one simulator holding several accounts would see every bot's requests from
one IP). The releases are a stub bot (a process serving /metrics, so that spawning it is cheap)
with a config of 10 symbols: 1.0.0 at leverage 5, 1.1.0 at leverage 10. For each rollback a
rollout places 1.1.0 on every account (leverage 10 set on each symbol), an open order is placed
on each symbol through python-binance as the bot would, and the real `Rollback` runs. Safe is
wall time from the rollback's start (its plan written) until every account has passed phase 1:
release stopped, every order cancelled, positions flattened, leverage restored and read back.
After each rollback the exchange is checked: no open order, leverage 5 everywhere.

Figures: ``rollback_safe_p50/p99_ms`` (one account, no injected latency, >= 50 rollbacks);
with 20 ms added to every REST answer, ``rollback_round_trips`` (sequential exchange round trips
before safe, read from the simulator's request log: requests whose time on the wire overlaps
count once; the median over the runs) and ``rollback_overhead_p99_ms`` (p99 minus round trips x
20 ms), ``safe_1acct_p99_ms``, ``safe_3acct_p99_ms``, ``safe_10acct_p99_ms``; and
``rollback_weight_per_account``, the request weight the simulator charged one account's whole
rollback (phase 2's restart included; the largest seen), which the act reserve
(`controller.exchange.weights`) must hold for every account at once.

    .venv/bin/python bench/run.py --only rollback_safe [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from dataclasses import dataclass, replace
from decimal import ROUND_UP, Decimal
from pathlib import Path

from binance import AsyncClient
from binance.exceptions import BinanceAPIException

from controller.clock import RealClock
from controller.config.yamlfile import load_model_text
from controller.deploy.process import ProcessDeployer
from controller.release_files import read_release
from controller.rollout import placing
from controller.rollout.decide import Status
from controller.rollout.info import create_rollout, get_rollout, save_decision
from controller.rollout.pipeline import Pipeline
from controller.rollout.rollback import Rollback
from controller.rollout.site import Site
from controller.sim.embed import EmbeddedSimulators
from controller.sim.server import RequestRecord, Simulator
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.support.placements import STUB

LATENCY = 0.020  # seconds added to every REST answer (the clock is the real one)
SYMBOLS = ("BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT", "LINKUSDT",
           "DOTUSDT")
PREVIOUS_LEVERAGE, CANDIDATE_LEVERAGE = 5, 10
BENCH_WEIGHT_LIMIT = 1_000_000  # request weight a minute the simulator allows the bench's IP
ORDER_NOTIONAL = Decimal(120)  # USDT: above every symbol's minimum notional, inside the canary's margin


TOO_MANY_ORDERS = -1015
"""Binance's code for an account over its new-order count (300 per 10 s, 1200 per minute)."""


@dataclass(frozen=True)
class Sample:
    safe: float        # wall seconds from the rollback's start to every account safe
    round_trips: int   # sequential exchange round trips before safe (the largest of the accounts')
    weight: int        # request weight the exchange charged one account's whole rollback (the largest)


def measure(quick: bool) -> dict[str, float | int | None]:
    unloaded = rollbacks(accounts=1, runs=5 if quick else 50, latency=0.0)
    loaded = rollbacks(accounts=1, runs=3 if quick else 20, latency=LATENCY)
    round_trips = int(statistics.median_low(s.round_trips for s in loaded))
    figures: dict[str, float | int | None] = {
        "rollback_safe_p50_ms": quantile([s.safe for s in unloaded], 0.50) * 1000,
        "rollback_safe_p99_ms": quantile([s.safe for s in unloaded], 0.99) * 1000,
        "rollback_round_trips": round_trips,
        "rollback_weight_per_account": max(s.weight for s in unloaded),
        "rollback_overhead_p99_ms": (quantile([s.safe for s in loaded], 0.99) - round_trips * LATENCY) * 1000,
        "safe_1acct_p99_ms": quantile([s.safe for s in loaded], 0.99) * 1000,
    }
    for accounts in ((3,) if quick else (3, 10)):
        several = rollbacks(accounts=accounts, runs=2 if quick else 10, latency=LATENCY)
        figures[f"safe_{accounts}acct_p99_ms"] = quantile([s.safe for s in several], 0.99) * 1000
    if quick:
        figures["safe_10acct_p99_ms"] = None
    return figures


def quantile(samples: list[float], q: float) -> float:
    """The ``q`` quantile of the measured samples, linear between the closest ranks."""
    return statistics.quantiles(samples, n=100, method="inclusive")[round(q * 100) - 1]


def rollbacks(*, accounts: int, runs: int, latency: float) -> list[Sample]:
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as folder:
        return asyncio.run(_rollbacks(accounts, runs, latency, Path(folder)))


async def _rollbacks(accounts: int, runs: int, latency: float, folder: Path) -> list[Sample]:
    names = [f"env{n:02d}" for n in range(1, accounts + 1)]
    db = Database(resolve_url(f"sqlite:///{folder / 'canary.db'}"))
    clock = RealClock()
    await upgrade(db)
    manifest = _stub_release(folder)
    for version, leverage in (("1.0.0", PREVIOUS_LEVERAGE), ("1.1.0", CANDIDATE_LEVERAGE)):
        strategy = folder / f"strategy-{version}.yaml"
        strategy.write_text(_strategy(leverage), encoding="utf-8")
        await add_release(db, clock, read_release(version, manifest, strategy), actor="bench")
    # Fifty rollbacks a minute are the bench's doing, not a daemon's: the simulator's IP limit is
    # raised, and each rollback gets a site (and the controller's weight budget) of its own.
    simulators = EmbeddedSimulators(clock, options={"weight_limit": BENCH_WEIGHT_LIMIT})
    deployer = ProcessDeployer(folder / "state", clock)
    accesses = {name: await simulators.open(name, deployer) for name in names}
    site = Site(clock, accesses)
    traders = {name: await _trader(simulators.started[name]) for name in names}
    stages = "\n".join(f"  - {{name: S{n}, environment: {name}, account: canary, duration: 1h, "
                       f"policies: stage-c.yaml, positions: flatten}}" for n, name in enumerate(names))
    pipeline = load_model_text(Pipeline, f"name: bench\nstages:\n{stages}\n", "pipeline")
    try:
        for name in names:
            await placing.place(db, site, environment=name, account="canary", release="1.0.0", rollout_id=None)
        samples = []
        for _ in range(runs):
            fresh = Site(clock, accesses)
            try:
                samples.append(await _one_rollback(db, fresh, simulators.started, traders, pipeline, clock, latency))
            finally:
                await fresh.close()
        return samples
    finally:
        for trader in traders.values():
            await trader.close_connection()
        for name in names:
            await deployer.stop(site.instance(name, "canary"), grace=0)
        await site.close()
        await simulators.close()
        await db.close()


async def _one_rollback(db: Database, site: Site, sims: dict[str, Simulator], traders: dict[str, AsyncClient],
                        pipeline: Pipeline, clock: RealClock, latency: float) -> Sample:
    rollout = await create_rollout(db, clock, version="1.1.0", pipeline=pipeline, actor="bench")
    for name, sim in sims.items():
        await placing.place(db, site, environment=name, account="canary", release="1.1.0", rollout_id=rollout.id)
        await _open_orders(traders[name], sim)
    info = await get_rollout(db, rollout.id)
    for sim in sims.values():
        sim.requests.clear()
        sim.faults.add_latency(latency)
    rollback = Rollback(db, site)
    began = time.monotonic()
    began_clock = clock.time()
    await rollback.plan(info, trigger="operator", reason="bench")
    outcome = await rollback.run(info)
    for sim in sims.values():
        sim.faults.add_latency(0.0)
    if not outcome.ok or rollback.safe_wall is None:
        raise RuntimeError(f"a rollback of {len(sims)} accounts did not complete: {outcome}")
    safe_clock = began_clock + (rollback.safe_wall - began)
    # The rollout ends as the engine would end it after this rollback, so that the next can start.
    await save_decision(db, clock, info, replace(info.state, status=Status.ROLLED_BACK))
    for name, sim in sims.items():
        await _check_safe(traders[name], name)
    trips = max(round_trips([r for r in sim.requests if r.account == "canary" and r.time <= safe_clock], latency)
                for sim in sims.values())
    weight = max(sum(r.weight for r in sim.requests if r.account == "canary") for sim in sims.values())
    return Sample(rollback.safe_wall - began, trips, weight)


def round_trips(requests: list[RequestRecord], latency: float) -> int:
    """Sequential round trips among ``requests``: each spans [answered - latency, answered] (the
    simulator logs a request when it answers, after the injected latency); overlapping spans are one."""
    trips, busy_until = 0, float("-inf")
    for request in sorted(requests, key=lambda r: r.time):
        if request.time - latency >= busy_until:
            trips += 1
        busy_until = max(busy_until, request.time)
    return trips


async def _trader(sim: Simulator) -> AsyncClient:
    """The bot's side: python-binance on the simulator's canary account, its time synced."""
    keys = sim.accounts["canary"]
    client = AsyncClient(keys.api_key, keys.api_secret)
    client.FUTURES_URL = sim.rest_url
    server = await client.futures_time()
    client.timestamp_offset = server["serverTime"] - int(time.time() * 1000)
    return client


async def _open_orders(client: AsyncClient, sim: Simulator) -> None:
    """One resting buy below the market on each symbol, as the release's bot would have left it."""
    async def one(symbol: str) -> None:
        spec = sim.market.spec(symbol)
        price = spec.round_price(sim.market.price(symbol) * Decimal("0.9"))
        quantity = (ORDER_NOTIONAL / price / spec.step).quantize(Decimal(1), ROUND_UP) * spec.step
        while True:
            try:
                await client.futures_create_order(symbol=symbol, side="BUY", type="LIMIT", timeInForce="GTC",
                                                  quantity=str(quantity), price=str(price))
                return
            except BinanceAPIException as refused:
                if refused.code != TOO_MANY_ORDERS:
                    raise
                # Faster rollbacks than a bot places orders: the set-up (not what is timed) waits for the
                # account's order-count window to turn, as a bot would (10 s, or 1 min when that one is full).
                window = 60 if "1m" in refused.message else 10
                await asyncio.sleep(window - time.time() % window + 0.05)
    await asyncio.gather(*(one(symbol) for symbol in SYMBOLS))
    placed = await client.futures_get_open_orders()
    if len(placed) != len(SYMBOLS):
        raise RuntimeError(f"expected an open order on each of {len(SYMBOLS)} symbols, found {len(placed)}")


async def _check_safe(client: AsyncClient, environment: str) -> None:
    """What safe means, read from the exchange: no open order and the previous leverage on every symbol."""
    orders = await client.futures_get_open_orders()
    leverage = {s["symbol"]: int(s["leverage"]) for s in await client.futures_symbol_config()
                if s["symbol"] in SYMBOLS}
    wrong = {symbol: value for symbol, value in leverage.items() if value != PREVIOUS_LEVERAGE}
    if orders or wrong or len(leverage) != len(SYMBOLS):
        raise RuntimeError(f"{environment}: not safe after the rollback: {len(orders)} open orders, "
                           f"leverage {wrong or leverage}")


def _stub_release(folder: Path) -> Path:
    script = folder / "stub_bot.py"
    script.write_text(STUB, encoding="utf-8")
    manifest = folder / "manifest.yaml"
    manifest.write_text(f'name: stub-bot\ncommand: ["{{python}}", "-I", "{script}", "{{metrics_port}}", "serves"]\n'
                        "metrics: {port: 0, path: /metrics}\nartifact: {path: stub_bot.py}\n", encoding="utf-8")
    return manifest


def _strategy(leverage: int) -> str:
    symbols = "".join(f"  {symbol}: {{leverage: {leverage}, margin_type: CROSSED}}\n" for symbol in SYMBOLS)
    return (f"symbols:\n{symbols}buckets:\n  all: {{allocation: 0.5, symbols: [{', '.join(SYMBOLS)}]}}\n"
            "sizing: {order_fraction: 0.1}\n")
