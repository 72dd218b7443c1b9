"""Canary vs baseline: a rank test with an effect size, and no verdict from too few samples."""

from __future__ import annotations

import random

from controller.analysis.comparison import compare
from controller.analysis.verdict import Outcome


def latencies(rng, n, scale):
    return [rng.lognormvariate(-2.5, 0.5) * scale for _ in range(n)]


def test_a_clearly_slower_canary_fails():
    rng = random.Random(1)
    result = compare(latencies(rng, 300, 2.0), latencies(rng, 300, 1.0))
    assert result.outcome is Outcome.FAIL and result.p_value < 1e-6 and result.effect > 0.8
    assert result.canary_median > result.baseline_median


def test_the_same_distribution_passes():
    rng = random.Random(2)
    result = compare(latencies(rng, 300, 1.0), latencies(rng, 300, 1.0))
    assert result.outcome is Outcome.PASS and 0.4 < result.effect < 0.6


def test_a_tiny_difference_with_huge_samples_does_not_fail():
    rng = random.Random(3)
    result = compare(latencies(rng, 20_000, 1.02), latencies(rng, 20_000, 1.0))
    assert result.p_value < 0.01 and result.outcome is Outcome.PASS  # significant, but does not matter


def test_a_faster_canary_is_not_worse_and_lower_is_worse_flips_the_judgement():
    rng = random.Random(4)
    fast, slow = latencies(rng, 200, 0.5), latencies(rng, 200, 1.0)
    assert compare(fast, slow).outcome is Outcome.PASS
    assert compare(fast, slow, higher_is_worse=False).outcome is Outcome.FAIL  # e.g. fill rate


def test_too_few_samples_are_inconclusive_and_none_is_nodata():
    rng = random.Random(5)
    few = compare(latencies(rng, 20, 3.0), latencies(rng, 300, 1.0))
    assert few.outcome is Outcome.INCONCLUSIVE and "the canary has 20 samples, 50 needed" == few.reason
    assert compare([], latencies(rng, 300, 1.0)).outcome is Outcome.NODATA
