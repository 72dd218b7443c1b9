"""How many user-data frames a second the controller judges on one core, and its 1 s tick.

Frames: the simulator's own matching engine trades a canary account on 20 symbols in 4 buckets
(limit orders placed and cancelled, market orders filled, ten actions a simulated second) and
its event encoder (`controller.sim.wire`, what its websockets send) renders each action's
payloads; they are recorded once per run as the JSON text the socket carries. Each frame then
goes the daemon's way: `UserStream.handle_text` (decode, de-duplication, typed events),
`ExchangeView.on_event` (observations) into the canary's `Evaluator` (windows and every shipped
stage-C policy judged inline), no network, one thread, tracemalloc off. The windows are full
first: a day of a realistic stage-C load on the same symbols (exchange snapshots, fills, the
bot's scrape every 5 s, process and log samples) for the canary and its baseline, its last hour
at full rate. The floor is `orjson.loads` alone over the same frames.

``tick_p99_ms``: the 1 s tick (`Evaluator.evaluate`) over a few minutes of that load, windows full.
Times are the process's CPU time (`time.process_time`), so that other work on a shared machine
does not count.

    .venv/bin/python bench/ingest.py [--quick]     # prints the figures as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal

import orjson

from controller.analysis.evaluator import Evaluator
from controller.analysis.observation import Batch, Heartbeat, Labels, Observation, labels_of
from controller.analysis.policy import Policy, load_policy_file
from controller.config.daemon import Endpoints
from controller.config.strategy import StrategyConfig
from controller.exchange.client import ExchangeClient
from controller.exchange.events import StreamStatus
from controller.exchange.stream import UserStream
from controller.exchange.weights import WeightBudget
from controller.observe.exchange_view import ExchangeView
from controller.shipped import policies_dir
from controller.sim.accounts import AccountSpec
from controller.sim.market import SYMBOLS as SIM_SYMBOLS
from controller.sim.orders import NewOrder
from controller.sim.server import Simulator
from controller.clock import SimulatedClock

SYMBOLS = [spec.symbol for spec in SIM_SYMBOLS[:20]]
BUCKETS = {symbol: f"bucket{i % 4}" for i, symbol in enumerate(SYMBOLS)}
LATENCY_BOUNDS = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.15", "0.25", "0.4", "0.5", "1", "2.5",
                  "+Inf"]
OUTCOMES = ("filled", "canceled", "rejected")
FILLS_PER_SECOND = 10
SCRAPE_EVERY = 5
START = 1_800_000_000.0
CAPITAL = Decimal("100000")
ACTIONS_PER_SECOND = 10


def stage_c_policies() -> list[Policy]:
    return list(load_policy_file(policies_dir() / "stage-c.yaml").policies)


class Load:
    """One release's observations, second by second (a seeded random walk where one is needed)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.pnl = 0.0
        self.orders: dict[Labels, float] = {labels_of(symbol=s, outcome=o): 0.0 for s in SYMBOLS for o in OUTCOMES}
        self.signal: list[float] = [0.0] * len(LATENCY_BOUNDS)
        self.queue: list[float] = [0.0] * len(LATENCY_BOUNDS)
        self.symbol_labels = [labels_of(symbol=s) for s in SYMBOLS]
        self.fill_labels = [labels_of(symbol=s, bucket=BUCKETS[s]) for s in SYMBOLS]
        self.bucket_labels = [labels_of(bucket=b) for b in sorted(set(BUCKETS.values()))]
        self.le_labels = [labels_of(le=le) for le in LATENCY_BOUNDS]

    def second(self, t: float, *, fills: int = FILLS_PER_SECOND,
               scrape: bool = True) -> Iterator[Observation | Heartbeat | Batch]:
        rng, no_labels = self.rng, labels_of()
        self.pnl += rng.gauss(0.0, 0.003 / 60)
        yield Observation("exchange", "capital_share", no_labels, 0.018 + rng.uniform(0, 0.001), t)
        yield Observation("exchange", "margin_ratio", no_labels, rng.uniform(0.01, 0.05), t)
        yield Observation("exchange", "pnl_ratio", no_labels, self.pnl, t)
        yield Observation("exchange", "exposure_total_ratio", no_labels, rng.uniform(0.5, 1.5), t)
        for labels in self.symbol_labels:
            yield Observation("exchange", "leverage_mismatch", labels, 0.0, t)
            yield Observation("exchange", "margin_type_mismatch", labels, 0.0, t)
            yield Observation("exchange", "exposure_ratio", labels, rng.uniform(0.0, 0.1), t)
        for _ in range(fills):
            labels = rng.choice(self.fill_labels)
            at = t + rng.random() * 0.9
            yield Observation("exchange", "fill_leverage_mismatch", labels, 0.0, at)
            yield Observation("exchange", "fill_notional_ratio", labels, rng.uniform(0.05, 1.0), at)
        yield Heartbeat("exchange", t + 0.95)
        if scrape:
            for _ in range(SCRAPE_EVERY * 4):
                self._observe_latency(self.signal, rng.lognormvariate(math.log(0.04), 0.5))
                self._observe_latency(self.queue, rng.lognormvariate(math.log(0.08), 0.6))
            for labels in self.orders:
                self.orders[labels] += rng.choice((0, 0, 1, 2)) if dict(labels)["outcome"] != "rejected" else 0
            scraped = [Observation("bot", "strategy_signal_latency_seconds_bucket", labels, count, t)
                       for labels, count in zip(self.le_labels, self.signal)]
            scraped += [Observation("bot", "strategy_order_queue_latency_seconds_bucket", labels, count, t)
                        for labels, count in zip(self.le_labels, self.queue)]
            scraped += [Observation("bot", "strategy_orders_total", labels, count, t)
                        for labels, count in self.orders.items()]
            scraped += [Observation("bot", "strategy_bucket_usage_ratio", labels, rng.uniform(0.05, 0.2), t)
                        for labels in self.bucket_labels]
            scraped.append(Observation("bot", "strategy_leverage_mismatch_total", no_labels, 0.0, t))
            yield Batch("bot", tuple(scraped))  # a scrape comes in one call, as the metrics scraper sends it
            yield Heartbeat("bot", t + 0.5)
        yield Observation("process", "up", no_labels, 1.0, t)
        yield Heartbeat("process", t)
        yield Heartbeat("logs", t)

    @staticmethod
    def _observe_latency(counts: list[float], value: float) -> None:
        for i, bound in enumerate(LATENCY_BOUNDS):
            if value <= float(bound):
                counts[i] += 1


def bindings_for(baseline: Evaluator):
    def bind(policy: Policy, group: Labels, now: float) -> dict[str, float]:
        values = {"allocation": 0.25, "leverage": 10.0, "capital_cap": 0.02}
        if "baseline" in policy.parsed_condition.names:  # as the release's bindings: measured only where named
            measured = baseline.value(policy.name, group, now)
            if measured is not None:
                values["baseline"] = measured
        return values
    return bind


def filled(policies: list[Policy], full_rate: float = 3600.0,
           span: float = 24 * 3600) -> tuple[Evaluator, Load, Evaluator, Load, float]:
    """A canary and its baseline, their windows full: ``span`` seconds (a day) at a 30 s step, its
    last ``full_rate`` seconds (an hour: the hour-long windows' span) at full rate."""
    baseline = Evaluator(policies)
    canary = Evaluator(policies, bindings=bindings_for(baseline), baseline=baseline)
    loads = (Load(1), Load(2))
    t = START
    while t < START + span - full_rate:
        for evaluator, load in zip((canary, baseline), loads):
            for item in load.second(t, fills=1, scrape=True):
                evaluator.feed(item)
        for evaluator in (canary, baseline):  # the baseline's own verification ticks too
            evaluator.evaluate(t + 1)
        t += 30.0
    while t < START + span:
        for evaluator, load in zip((canary, baseline), loads):
            for item in load.second(t, scrape=(t % SCRAPE_EVERY == 0)):
                evaluator.feed(item)
        if t % 60 == 0:
            for evaluator in (canary, baseline):
                evaluator.evaluate(t + 1)
        t += 1.0
    return canary, loads[0], baseline, loads[1], t


def strategy() -> StrategyConfig:
    """The canary's strategy: the frames' 20 symbols at 5x, in the load's 4 buckets."""
    buckets: dict[str, dict] = {}
    for symbol, bucket in BUCKETS.items():
        buckets.setdefault(bucket, {"allocation": 0.2, "symbols": []})["symbols"].append(symbol)
    return StrategyConfig.model_validate({
        "symbols": {symbol: {"leverage": 5, "margin_type": "CROSSED"} for symbol in SYMBOLS},
        "buckets": buckets, "sizing": {"order_fraction": 0.01, "max_open_orders_per_symbol": 4}})


def recorded_frames(actions: int, start: float) -> list[str]:
    """The user-data frames of ``actions`` trading actions on the simulator from ``start`` on: the
    text its websockets would send the canary account, in order."""
    clock = SimulatedClock(start)
    sim = Simulator(clock=clock, seed=11, accounts=(AccountSpec("master", CAPITAL * 50, master=True),
                                                    AccountSpec("canary", CAPITAL)))
    frames: list[str] = []
    shape = sim.streams.shape

    def recording(account: str, payloads: list[dict]) -> list[dict]:
        shaped = shape(account, payloads)
        frames.extend(json.dumps(payload, separators=(",", ":")) for payload in shaped)
        return shaped

    sim.streams.shape = recording
    account = sim.accounts["canary"]
    for symbol in SYMBOLS:
        sim.api.publish(sim.engine.set_leverage(account, symbol, 5)[2])
    rng = random.Random(5)
    resting: list[tuple[str, int]] = []
    for n in range(actions):
        clock.advance(1 / ACTIONS_PER_SECOND)
        if n % ACTIONS_PER_SECOND == 0:
            sim.tick()
        symbol = rng.choice(SYMBOLS)
        spec = sim.market.specs[symbol]
        price = sim.market.price(symbol)
        quantity = max(spec.min_qty, spec.round_qty_down(Decimal(300) / price))
        roll = rng.random()
        if resting and (roll < 0.3 or len(resting) >= 2 * len(SYMBOLS)):  # a bot keeps a few orders resting
            resting_symbol, order_id = resting.pop(rng.randrange(len(resting)))
            sim.api.publish(sim.engine.cancel(account, resting_symbol, order_id, None)[1])
        elif roll < 0.7:
            side = rng.choice(("BUY", "SELL"))
            away = Decimal("0.98") if side == "BUY" else Decimal("1.02")
            accepted, _, events = sim.engine.place(account, NewOrder(
                symbol, side, "LIMIT", quantity, spec.round_price(price * away), "GTC"))
            sim.api.publish(events)
            resting.append((symbol, accepted.order_id))
        else:
            held = account.position(symbol, "BOTH").amount
            side = "SELL" if held > 0 else "BUY"
            sim.api.publish(sim.engine.place(account, NewOrder(symbol, side, "MARKET", quantity))[2])
    return frames


class FrameClock:
    """The daemon's clock as the frames are replayed: it reads each frame's own exchange time (the
    stream stamps ``ts_init`` with it), so the observations land where the windows are full."""

    def __init__(self, at: float) -> None:
        self.at = at

    def time(self) -> float:
        return self.at

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.at, tz=UTC)

    async def sleep(self, seconds: float) -> None:
        raise RuntimeError("the replay clock does not sleep")


async def _stream(clock: FrameClock, sink) -> UserStream:
    """The user stream of a client that never connects (the frames are handed to it)."""
    client = ExchangeClient(account="canary", api_key="bench", api_secret="bench",
                            endpoints=Endpoints("http://127.0.0.1:9", "ws://127.0.0.1:9", None), clock=clock,
                            budget=WeightBudget(2400))
    await client.binance.session.close()
    return UserStream(client, SYMBOLS, sink)


def ingest(canary: Evaluator, frames: list[str], times: list[float]) -> tuple[float, int]:
    """CPU seconds to push ``frames`` through the decode path into ``canary``; the observations made."""
    clock = FrameClock(times[0])
    made = 0

    def feed(item) -> None:
        nonlocal made
        made += 1
        canary.feed(item)

    view = ExchangeView(config=strategy(), sink=feed, capital=CAPITAL)
    stream = asyncio.run(_stream(clock, view.on_event))
    view.open(times[0])
    view.on_event(StreamStatus("canary", True, "connected", times[0], times[0]))
    gc.collect()
    started = time.process_time()
    for text, at in zip(frames, times):
        clock.at = at
        stream.handle_text(text)
    elapsed = time.process_time() - started
    if stream.stats.parse_failures or stream.stats.duplicates_dropped:
        raise SystemExit(f"the recorded frames did not all decode: {stream.stats}")
    return elapsed, made


def floor(frames: list[str]) -> float:
    """CPU seconds of `orjson.loads` alone over ``frames``."""
    loads = orjson.loads
    gc.collect()
    started = time.process_time()
    for text in frames:
        loads(text)
    return time.process_time() - started


def ticks(canary: Evaluator, canary_load: Load, baseline: Evaluator, baseline_load: Load, t: float,
          seconds: int) -> list[float]:
    """CPU seconds of each 1 s tick of the canary over ``seconds`` of the load."""
    durations = []
    for i in range(seconds):
        scrape = (t + i) % SCRAPE_EVERY == 0
        for item in baseline_load.second(t + i, scrape=scrape):  # the baseline, fed and ticked by its own verification
            baseline.feed(item)
        baseline.evaluate(t + i + 1)
        for item in canary_load.second(t + i, scrape=scrape):
            canary.feed(item)
        started = time.process_time()
        canary.evaluate(t + i + 1)
        durations.append(time.process_time() - started)
    return durations


def measure(quick: bool) -> dict[str, float | int | None]:
    policies = stage_c_policies()
    prepared = time.perf_counter()
    canary, canary_load, baseline, baseline_load, t = filled(policies, *((900.0, 2 * 3600) if quick else (3600.0, 24 * 3600)))
    print(f"ingest: windows filled in {time.perf_counter() - prepared:.0f} s ({len(policies)} stage-C policies, "
          f"{canary.series_count()} canary series)", file=sys.stderr)
    tick_seconds = 60 if quick else 300
    durations = sorted(ticks(canary, canary_load, baseline, baseline_load, t, tick_seconds))
    t += tick_seconds
    actions = 2_000 if quick else 20_000
    frames = recorded_frames(actions, t)
    times = [orjson.loads(text)["E"] / 1000 for text in frames]
    decoded, observations = ingest(canary, frames, times)
    loads = floor(frames)
    figures: dict[str, float | int | None] = {
        "ingest_events_per_s": round(len(frames) / decoded),
        "ingest_floor_events_per_s": round(len(frames) / loads),
        "ingest_floor_ratio": round(decoded / loads, 2),
        "tick_p99_ms": round(durations[min(len(durations) - 1, math.ceil(0.99 * len(durations)) - 1)] * 1000, 3),
    }
    kinds: dict[str, int] = {}
    for text in frames:
        kind = orjson.loads(text)["e"]
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"ingest: {len(frames)} frames {kinds} of {actions} actions, {observations} observations made; "
          f"{figures}", file=sys.stderr)
    return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer frames, an hour's windows filled less (development)")
    print(json.dumps(measure(parser.parse_args().quick)))
