"""How fast the analysis judges a realistic stage-C load, on one core.

Every shipped stage-C policy, a canary judged against a baseline release fed the same kind of
load: 20 symbols in 4 buckets; each second an exchange snapshot (capital share, margin ratio,
PnL, total exposure, and per symbol leverage and margin-type mismatch and exposure), fills with
their leverage check and notional ratio, the bot's scrape every 5 s (two latency histograms,
orders by symbol and outcome, bucket usage, leverage mismatch), a process and a log sample; a
1 s tick (`Evaluator.evaluate`). The windows are filled first (23 h of the load at a coarse
step, then the last hour at full rate), so the figures are those of a stage well under way.

DESIGN asks for more than 100 000 observations per second and a 1 s tick well under 1 ms.
This prints figures and asserts nothing. The timed pass runs without tracemalloc (it alone
divides the figure several times); memory is measured in a separate pass. Times are the
process's CPU time (`time.process_time`), so that other work on a shared machine does not
count; the wall-clock time of the whole timed pass is printed beside them.

    make bench            # or: .venv/bin/python bench/analysis.py [--minutes N]
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import time
import tracemalloc
from collections.abc import Iterator

from controller.analysis.evaluator import Evaluator
from controller.analysis.observation import Batch, Heartbeat, Labels, Observation, labels_of
from controller.analysis.policy import Policy, load_policy_file
from controller.shipped import policies_dir

SYMBOLS = [f"SYM{i:02d}USDT" for i in range(20)]
BUCKETS = {symbol: f"bucket{i % 4}" for i, symbol in enumerate(SYMBOLS)}
LATENCY_BOUNDS = ["0.005", "0.01", "0.025", "0.05", "0.075", "0.1", "0.15", "0.25", "0.4", "0.5", "1", "2.5",
                  "+Inf"]
OUTCOMES = ("filled", "canceled", "rejected")
FILLS_PER_SECOND = 10
SCRAPE_EVERY = 5
START = 1_800_000_000.0


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


def filled(policies: list[Policy], full_rate: float = 3600.0) -> tuple[Evaluator, Load, Evaluator, Load, float]:
    """A canary and its baseline, their windows full: a day at a 30 s step, its last ``full_rate``
    seconds (an hour: the hour-long windows' span) at full rate."""
    baseline = Evaluator(policies)
    canary = Evaluator(policies, bindings=bindings_for(baseline), baseline=baseline)
    loads = (Load(1), Load(2))
    t = START
    while t < START + 24 * 3600 - full_rate:
        for evaluator, load in zip((canary, baseline), loads):
            for item in load.second(t, fills=1, scrape=True):
                evaluator.feed(item)
        for evaluator in (canary, baseline):  # the baseline's own verification ticks too
            evaluator.evaluate(t + 1)
        t += 30.0
    while t < START + 24 * 3600:
        for evaluator, load in zip((canary, baseline), loads):
            for item in load.second(t, scrape=(t % SCRAPE_EVERY == 0)):
                evaluator.feed(item)
        if t % 60 == 0:
            for evaluator in (canary, baseline):
                evaluator.evaluate(t + 1)
        t += 1.0
    return canary, loads[0], baseline, loads[1], t


def timed(minutes: int, full_rate: float) -> None:
    policies = stage_c_policies()
    prepared = time.perf_counter()
    canary, canary_load, baseline, baseline_load, t = filled(policies, full_rate)
    prepared = time.perf_counter() - prepared
    seconds = minutes * 60
    batches = []
    for i in range(seconds):
        scrape = (t + i) % SCRAPE_EVERY == 0
        batches.append((list(canary_load.second(t + i, scrape=scrape)), list(baseline_load.second(t + i, scrape=scrape))))
    observations = sum(len(item.observations) if isinstance(item, Batch) else isinstance(item, Observation)
                       for ours, _ in batches for item in ours)
    gc.collect()
    clock = time.process_time
    wall = time.perf_counter()
    observing = ticking = 0.0
    ticks: list[float] = []
    for i, (ours, theirs) in enumerate(batches):
        for item in theirs:  # the baseline release, observed and ticked by its own verification (not timed)
            baseline.feed(item)
        baseline.evaluate(t + i + 1)
        started = clock()
        for item in ours:
            canary.feed(item)
        middle = clock()
        verdicts = canary.evaluate(t + i + 1)
        ended = clock()
        observing += middle - started
        ticks.append(ended - middle)
    ticking = sum(ticks)
    wall = time.perf_counter() - wall
    ticks.sort()
    outcomes: dict[str, int] = {}
    for verdict in verdicts:
        outcomes[verdict.outcome.value] = outcomes.get(verdict.outcome.value, 0) + 1
    print(f"stage C, {len(policies)} policies, {len(SYMBOLS)} symbols, windows full (filled in {prepared:.0f} s); "
          f"{seconds} s of load, {observations / seconds:.0f} observations/s into the canary:")
    print(f"  observe: {observations / observing:>10,.0f} observations/s on one core "
          f"({observing / observations * 1e6:.2f} us each, instant policies judged inline)")
    print(f"  1 s tick (evaluate): mean {ticking / len(ticks) * 1e3:.3f} ms, median {ticks[len(ticks) // 2] * 1e3:.3f} ms, "
          f"p99 {ticks[int(len(ticks) * 0.99)] * 1e3:.3f} ms")
    print(f"  whole second (observe + tick): {(observing + ticking) / seconds * 1e3:.3f} ms of CPU per second of load "
          f"(the timed pass, the baseline's load included: {wall:.1f} s of wall clock for {seconds} s of load)")
    print(f"  last verdicts: {outcomes}")


def memory() -> None:
    """A separate pass: the evaluators' memory once full, traced (slow, so never timed)."""
    tracemalloc.start()
    canary, _, baseline, _, _ = filled(stage_c_policies())
    gc.collect()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    series = canary.series_count() + baseline.series_count()
    print(f"  memory (separate pass): canary and baseline evaluators hold {current / 1e6:.1f} MB traced "
          f"({current / series / 1e3:.0f} kB per series), peak while filling {peak / 1e6:.1f} MB; "
          f"series {canary.series_count()} + {baseline.series_count()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=5, help="minutes of load timed once the windows are full")
    parser.add_argument("--full-rate-minutes", type=float, default=60,
                        help="minutes of the filling day at full rate (60: the hour-long windows full)")
    parser.add_argument("--no-memory", action="store_true", help="skip the (slow) memory pass")
    arguments = parser.parse_args()
    timed(arguments.minutes, arguments.full_rate_minutes * 60)
    if not arguments.no_memory:
        memory()
