"""The shipped latency policies on the simulated clock: a step regression fails within 10
minutes, a single slow minute never fails a healthy release.

Each long window (p50 over an hour needs half an hour of slow samples to move) is paired with a
short one (p50 over 5 minutes; the rank test against the baseline over 5 minutes), whose ``for``
outlasts what one slow minute does to it. The bot is scraped every 15 s; its histograms count
4 signals and 4 orders a second.
"""

from __future__ import annotations

import math
import random

import pytest

from controller.analysis.evaluator import Evaluator
from controller.analysis.observation import Heartbeat, Observation, labels_of
from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.clock import SimulatedClock
from tests.support.checkout import REPO

STAGES = {f.stage: f.policies for f in load_policies([REPO / "policies"]).values()}
BOUNDS = ("0.01", "0.025", "0.05", "0.075", "0.1", "0.15", "0.2", "0.3", "0.4", "0.5", "1", "+Inf")
METRICS = ("strategy_signal_latency_seconds", "strategy_order_queue_latency_seconds")
SCRAPE_EVERY = 15.0
PER_SECOND = 4
HEALTHY, SLOW = 0.050, 0.300  # median latencies, seconds


class Bot:
    """A bot's latency histograms, cumulative as Prometheus exports them."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.counts = {metric: [0] * len(BOUNDS) for metric in METRICS}

    def scrape(self, evaluator: Evaluator, now: float, median: float) -> None:
        for metric in METRICS:
            counts = self.counts[metric]
            for _ in range(int(SCRAPE_EVERY * PER_SECOND)):
                value = self.rng.lognormvariate(math.log(median), 0.3)
                index = next((i for i, le in enumerate(BOUNDS) if value <= float(le)), len(BOUNDS) - 1)
                for i in range(index, len(BOUNDS)):
                    counts[i] += 1
            for le, count in zip(BOUNDS, counts):
                evaluator.observe(Observation("bot", f"{metric}_bucket", labels_of(le=le), float(count), now))
        evaluator.heartbeat(Heartbeat("bot", now))


def latency_policies(stage: str):
    return [p for p in STAGES[stage] if "latency" in p.name]


def run(stage: str, median_at, *, minutes: float) -> dict[str, float]:
    """``minutes`` of scrapes (the canary's latency median ``median_at(elapsed)``, the baseline's
    healthy), each judged: when each latency policy first failed, seconds from the start."""
    clock = SimulatedClock(start=1_800_000_000.0)
    start = clock.time()
    policies = latency_policies(stage)
    baseline = Evaluator(policies)
    canary = Evaluator(policies, baseline=baseline)
    bots = Bot(1), Bot(2)
    failed: dict[str, float] = {}
    while clock.time() - start < minutes * 60:
        clock.advance(SCRAPE_EVERY)
        now, elapsed = clock.time(), clock.time() - start
        bots[0].scrape(baseline, now, HEALTHY)
        bots[1].scrape(canary, now, median_at(elapsed))
        for verdict in canary.evaluate(now):
            if verdict.outcome is Outcome.FAIL:
                failed.setdefault(verdict.policy, elapsed)
            else:
                assert verdict.outcome is Outcome.PASS or elapsed < 300, verdict  # judged once warmed up
    return failed


WARM = 75 * 60  # the hour-long windows full, and a quarter of an hour more


@pytest.mark.parametrize("stage", ["A", "C", "D"])
def test_a_step_regression_fails_within_ten_minutes(stage):
    failed = run(stage, lambda elapsed: SLOW if elapsed > WARM else HEALTHY, minutes=WARM / 60 + 15)
    first = min(failed.values(), default=math.inf) - WARM
    assert 0 < first <= 600, failed
    signal = [name for name in failed if "signal" in name]
    assert signal and min(failed[name] for name in signal) - WARM <= 600, failed  # the signal latency itself


@pytest.mark.parametrize("stage", ["A", "B", "C", "D"])
def test_a_single_slow_minute_fails_no_latency_policy(stage):
    failed = run(stage, lambda elapsed: SLOW if WARM < elapsed <= WARM + 60 else HEALTHY, minutes=WARM / 60 + 70)
    assert failed == {}
