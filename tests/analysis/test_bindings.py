"""Thresholds bind the release's snapshot, the stage's cap and the baseline's value per group."""

from __future__ import annotations

from controller.analysis.bindings import release_bindings
from controller.analysis.evaluator import Evaluator
from controller.analysis.observation import Heartbeat, Observation, labels_of
from controller.analysis.policy import PolicyFile
from controller.analysis.verdict import Outcome
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model, load_model_text
from tests.support.checkout import EXAMPLES

EXPOSURE = load_model_text(PolicyFile, """\
stage: C
policies:
  - name: exposure-like-baseline
    checklist: "C: compare exposure"
    source: exchange
    metric: exposure_ratio
    per: [symbol]
    aggregate: mean
    window: 1h
    condition: "<= baseline * 1.5 + 0.05"
    on_breach: hold
  - name: leverage-applied
    checklist: "B: applied equals config"
    source: exchange
    metric: leverage_applied
    per: [symbol]
    aggregate: last
    window: 10m
    condition: "== leverage"
    on_breach: rollback
""", "c.yaml").policies


def test_symbol_groups_bind_their_leverage_and_their_buckets_allocation():
    config = load_model(StrategyConfig, EXAMPLES / "reference-bot" / "strategy.yaml")
    bind = release_bindings(config, capital_cap=0.02)
    values = bind(EXPOSURE[1], labels_of(symbol="SOLUSDT"), 0.0)
    assert values == {"leverage": 3.0, "allocation": 0.3, "capital_cap": 0.02}


def test_a_canary_policy_binds_the_baselines_value_for_the_same_group():
    config = load_model(StrategyConfig, EXAMPLES / "reference-bot" / "strategy.yaml")
    baseline, canary_obs = Evaluator(EXPOSURE), []
    canary = Evaluator(EXPOSURE, bindings=release_bindings(config, baseline=baseline))
    for ev in (baseline, canary):
        ev.heartbeat(Heartbeat("exchange", 100.0))
    baseline.observe(Observation("exchange", "exposure_ratio", labels_of(symbol="BTCUSDT"), 0.2, 50.0))
    canary_obs = canary.observe(Observation("exchange", "exposure_ratio", labels_of(symbol="BTCUSDT"), 0.9, 60.0), 100.0)
    assert canary_obs[0].outcome is Outcome.FAIL and canary_obs[0].threshold == 0.2 * 1.5 + 0.05
    (no_baseline,) = canary.observe(Observation("exchange", "exposure_ratio", labels_of(symbol="ETHUSDT"), 0.1, 60.0), 100.0)
    assert no_baseline.outcome is Outcome.INCONCLUSIVE and "baseline" in no_baseline.reason


def test_a_threshold_that_does_not_name_the_baseline_does_not_measure_it():
    """The baseline release's value is measured only for conditions that bind it: here the
    baseline is not judged on the canary's policy at all, and the cap binds all the same."""
    config = load_model(StrategyConfig, EXAMPLES / "reference-bot" / "strategy.yaml")
    baseline = Evaluator(EXPOSURE[:1])
    bind = release_bindings(config, capital_cap=0.02, baseline=baseline)
    assert bind(EXPOSURE[1], labels_of(symbol="SOLUSDT"), 0.0) == {"leverage": 3.0, "allocation": 0.3,
                                                                  "capital_cap": 0.02}
