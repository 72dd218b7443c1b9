"""Verdicts are exported as canary_* metrics; a breach counts once until it clears."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from controller.analysis.verdict import Outcome, Verdict
from controller.metrics import ControllerMetrics


def verdict(outcome, value, action=None):
    return Verdict(policy="a-mismatch", outcome=outcome, at=0.0, value=value, threshold=0.0, condition="== 0",
                   window=60.0, samples=1, action=action)


def samples(metrics):
    text = metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_current_outcome_value_and_breaches_are_exported():
    metrics = ControllerMetrics()
    metrics.record_verdicts([verdict(Outcome.PASS, 0.0)])
    metrics.record_verdicts([verdict(Outcome.FAIL, 2.0, "rollback")] * 3)
    got = samples(metrics)
    assert got[("canary_policy_verdict", (("outcome", "fail"), ("policy", "a-mismatch")))] == 1
    assert got[("canary_policy_verdict", (("outcome", "pass"), ("policy", "a-mismatch")))] == 0
    assert got[("canary_policy_value", (("policy", "a-mismatch"),))] == 2.0
    assert got[("canary_policy_breaches_total", (("action", "rollback"), ("policy", "a-mismatch")))] == 1
    metrics.record_verdicts([verdict(Outcome.NODATA, None, "hold"), verdict(Outcome.FAIL, 3.0, "rollback")])
    got = samples(metrics)
    assert got[("canary_policy_breaches_total", (("action", "rollback"), ("policy", "a-mismatch")))] == 2
    metrics.record_verdicts([verdict(Outcome.NODATA, None, "hold")])
    assert math.isnan(samples(metrics)[("canary_policy_value", (("policy", "a-mismatch"),))])
