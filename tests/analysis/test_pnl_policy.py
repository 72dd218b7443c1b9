"""The shipped ``c-`` and ``d-pnl-like-baseline`` on random walks, through the evaluator on a
simulated clock: a healthy release (its PnL a driftless walk, like its baseline's) is rarely
held, a release that truly loses is.

The judgement scales with what the market does: the canary is held when its PnL grew less than
the baseline's by more than 1 point of capital plus 3 standard errors of the difference, the
standard error from both walks' observed volatility and the time elapsed. An absolute margin
alone (the policy as it was: ``last >= baseline - 0.01`` for an hour) held 20-51 % of healthy
24 h stages at 0.2-0.5 %/h volatility.
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

SHIPPED = {p.name: p for f in load_policies([REPO / "policies"]).values() for p in f.policies}
STAGE = 24 * 3600.0
SNAPSHOT_EVERY = 300.0  # the exchange observer snapshots every few seconds; every 5 minutes keeps this test quick
NO_LABELS = labels_of()


def baseline_bindings(baseline: Evaluator):
    """``baseline`` bound as the daemon binds it: the same policy's value on the baseline release."""
    def bind(policy, group, now):
        value = baseline.value(policy.name, group, now)
        return {} if value is None else {"baseline": value}
    return bind


def stage_is_held(policy_name: str, *, seed: int, volatility: float, canary_drift: float = 0.0) -> float | None:
    """One 24 h stage, PnL ratios random walks of ``volatility`` per hour on both releases (the
    canary drifting by ``canary_drift`` per hour): when the policy first fails, or None."""
    policy = SHIPPED[policy_name]
    rng = random.Random(seed)
    clock = SimulatedClock(start=1_800_000_000.0)
    start = clock.time()
    baseline = Evaluator([policy])
    canary = Evaluator([policy], baseline=baseline, bindings=baseline_bindings(baseline))
    pnl = {"canary": 0.0, "baseline": 0.0}
    step_volatility = volatility * math.sqrt(SNAPSHOT_EVERY / 3600)
    while clock.time() - start <= STAGE:
        now = clock.time()
        for side, evaluator in (("canary", canary), ("baseline", baseline)):
            evaluator.observe(Observation("exchange", "pnl_ratio", NO_LABELS, pnl[side], now))
            evaluator.heartbeat(Heartbeat("exchange", now))
        verdict, = canary.evaluate(now)
        if verdict.outcome is Outcome.FAIL:
            return now - start
        pnl["canary"] += rng.gauss(canary_drift * SNAPSHOT_EVERY / 3600, step_volatility)
        pnl["baseline"] += rng.gauss(0.0, step_volatility)
        clock.advance(SNAPSHOT_EVERY)
    return None


def test_the_canary_and_full_deployment_stages_judge_pnl_alike():
    c, d = SHIPPED["c-pnl-like-baseline"], SHIPPED["d-pnl-like-baseline"]
    judged = ("metric", "aggregate", "window", "condition", "min_samples", "for_", "on_breach")
    assert [getattr(c, f) for f in judged] == [getattr(d, f) for f in judged]


@pytest.mark.parametrize("volatility", [0.002, 0.005, 0.01])
def test_a_healthy_release_is_held_in_at_most_one_stage_in_a_hundred(volatility):
    stages = 200
    held = [seed for seed in range(stages)
            if stage_is_held("c-pnl-like-baseline", seed=seed, volatility=volatility) is not None]
    assert len(held) <= stages // 100, f"{len(held)} of {stages} healthy stages held (seeds {held})"


@pytest.mark.parametrize("volatility, drift", [(0.002, -0.005), (0.003, -0.005), (0.005, -0.01)])
def test_a_release_that_truly_loses_against_its_baseline_is_held_within_the_stage(volatility, drift):
    times = [stage_is_held("c-pnl-like-baseline", seed=seed, volatility=volatility, canary_drift=drift)
             for seed in range(20)]
    assert all(t is not None for t in times), times
