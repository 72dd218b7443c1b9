"""Canary vs baseline: a rank test with an effect size, and no verdict from too few samples."""

from __future__ import annotations

import random
import statistics
from collections import Counter

import pytest

from controller.analysis.comparison import compare, compare_counts, mann_whitney
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


# Reference values computed once with scipy.stats.mannwhitneyu(canary, baseline, alternative=...,
# method="asymptotic") (scipy 1.x: tie-corrected normal approximation, continuity correction),
# written here as numbers: the controller no longer depends on scipy.
TIED = ([1, 2, 2, 3, 3, 3, 4, 5, 5, 9], [1, 1, 2, 2, 2, 3, 4, 4, 6])
SPARSE_TAIL = ({0.05: 60, 0.1: 30, 1.5: 9}, {0.05: 70, 0.1: 29})
DISTINCT = ([0.31, 0.12, 0.57, 0.98, 0.44, 0.71, 0.26], [0.05, 0.2, 0.33, 0.08, 0.15, 0.6])
BUCKETED = ({0.01: 3, 0.02: 15, 0.03: 40, 0.04: 46, 0.05: 40, 0.06: 39, 0.07: 22, 0.08: 19, 0.09: 16, 0.1: 11,
             0.11: 11, 0.12: 9, 0.13: 8, 0.14: 3, 0.15: 2, 0.17: 2, 0.18: 2, 0.19: 1, 0.2: 3, 0.21: 3, 0.22: 2,
             0.23: 1, 0.29: 1, 0.32: 1},
            {0.01: 4, 0.02: 33, 0.03: 41, 0.04: 40, 0.05: 30, 0.06: 29, 0.07: 19, 0.08: 13, 0.09: 6, 0.1: 10,
             0.11: 3, 0.12: 2, 0.13: 6, 0.14: 3, 0.15: 3, 0.17: 1, 0.18: 2, 0.19: 1, 0.21: 1, 0.25: 1, 0.26: 1,
             0.29: 1})
SCIPY = [  # (canary, baseline, greater, U, p)
    (*TIED, True, 56.5, 0.18038074652155495),
    (*TIED, False, 56.5, 0.8406173128950688),
    (*SPARSE_TAIL, True, 5526.0, 0.031039883827206988),
    (*SPARSE_TAIL, False, 5526.0, 0.9691684661993354),
    (*DISTINCT, True, 32.0, 0.06680720126885807),
    (*DISTINCT, False, 32.0, 0.9497937530069486),
    (*BUCKETED, True, 44088.0, 0.00017710785427269007),
    (*BUCKETED, False, 44088.0, 0.9998232585885444),
]


@pytest.mark.parametrize("canary, baseline, greater, u, p_value", SCIPY)
def test_the_rank_test_gives_scipys_u_and_p_value(canary, baseline, greater, u, p_value):
    counts = (lambda side: side if isinstance(side, dict) else Counter(side))
    result = mann_whitney(counts(canary), counts(baseline), greater=greater)
    assert result.u == u
    assert result.p_value == pytest.approx(p_value, rel=1e-9)


def test_samples_and_their_counts_are_judged_alike():
    rng = random.Random(6)
    canary = [round(v, 2) for v in latencies(rng, 300, 1.3)]
    baseline = [round(v, 2) for v in latencies(rng, 300, 1.0)]
    as_samples = compare(canary, baseline)
    as_counts = compare_counts(Counter(canary), Counter(baseline))
    assert as_samples == as_counts and as_samples.outcome is Outcome.FAIL
    assert as_samples.canary_median == statistics.median(canary)


def test_every_sample_of_a_bucket_is_ranked_however_few_it_holds():
    """100 000 observations, 9 of them slow: all 9 ranked, none rounded away."""
    fast = {0.05: 99_991.0}
    canary = {**fast, 1.75: 9.0}
    result = mann_whitney(canary, {0.05: 100_000.0})
    assert result.n_canary == 100_000 and result.effect > 0.5
    assert result.u == pytest.approx(99_991 * 100_000 / 2 + 9 * 100_000)


def test_all_samples_equal_is_no_difference():
    assert mann_whitney({0.1: 60.0}, {0.1: 80.0}).p_value == 1.0
    assert compare([0.1] * 60, [0.1] * 80).outcome is Outcome.PASS
