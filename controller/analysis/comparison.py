"""Canary against baseline on the same market: is the canary's distribution worse?

Kayenta's judge, kept small: a one-sided Mann-Whitney U test (rank-based, no assumption of
normality, robust to the long tails latencies have) plus the effect size, so that a
difference too small to matter never fails a release however many samples there are, and
too few samples on either side give ``inconclusive`` rather than a verdict.

The test works on counts of values (`Counts`: value -> how many samples have it), so a
histogram's buckets go in as they are: 100 000 observations with 9 in the slowest bucket are
100 000 ranks, those 9 included, not a sample rounded to a few thousand. Ties (every sample in
one bucket is one value) take their mid-rank, and the normal approximation's variance is
corrected for them, with a continuity correction: what scipy's ``mannwhitneyu(...,
method="asymptotic")`` computes, in the standard library, in time linear in the number of
distinct values (after sorting them).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from controller.analysis.verdict import Outcome

MIN_SAMPLES = 50      # Kayenta warns below 50 points
ALPHA = 0.01
MIN_EFFECT = 0.60     # P(canary > baseline) above which a difference matters

Counts = Mapping[float, float]
"""Samples as value -> count (a count need not be whole: a histogram bucket's increase)."""


@dataclass(frozen=True)
class Comparison:
    outcome: Outcome
    n_canary: int
    n_baseline: int
    p_value: float | None = None
    effect: float | None = None       # P(a canary sample > a baseline sample), 0.5 = no difference
    canary_median: float | None = None
    baseline_median: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class RankTest:
    """A one-sided Mann-Whitney U test's result."""

    u: float          # the canary's U: pairs (canary, baseline) with the canary's higher, ties counting one half
    p_value: float    # of the one-sided alternative asked for
    n_canary: float
    n_baseline: float

    @property
    def effect(self) -> float:
        """P(a canary sample > a baseline sample) + half P(equal): 0.5 when they do not differ."""
        return self.u / (self.n_canary * self.n_baseline)


def mann_whitney(canary: Counts, baseline: Counts, *, greater: bool = True) -> RankTest:
    """One-sided Mann-Whitney U of ``canary`` against ``baseline`` (alternative: the canary's
    values are greater, or less when not ``greater``), normal approximation with tie and
    continuity corrections. Both sides need at least one sample."""
    n1, n2 = float(sum(canary.values())), float(sum(baseline.values()))
    if n1 <= 0 or n2 <= 0:
        raise ValueError("a rank test needs samples on both sides")
    rank_sum = 0.0   # the canary's ranks
    ties = 0.0       # sum of t^3 - t over groups of equal values
    below = 0.0      # samples ranked below the current value
    for value in sorted(set(canary) | set(baseline)):
        ours, theirs = canary.get(value, 0.0), baseline.get(value, 0.0)
        tied = ours + theirs
        if tied <= 0:
            continue
        rank_sum += ours * (below + (tied + 1) / 2)  # the mid-rank of the tied group
        ties += tied ** 3 - tied
        below += tied
    u = rank_sum - n1 * (n1 + 1) / 2
    n = n1 + n2
    variance = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    if variance <= 0:  # every sample equal: nothing tells the sides apart
        return RankTest(u, 1.0, n1, n2)
    statistic = (u if greater else n1 * n2 - u) - n1 * n2 / 2 - 0.5
    p_value = 0.5 * math.erfc(statistic / math.sqrt(variance) / math.sqrt(2))
    return RankTest(u, min(1.0, p_value), n1, n2)


def compare(canary: Sequence[float], baseline: Sequence[float], *, higher_is_worse: bool = True,
            alpha: float = ALPHA, min_effect: float = MIN_EFFECT, min_samples: int = MIN_SAMPLES) -> Comparison:
    """Judge whether ``canary`` is worse than ``baseline`` (higher, or lower when not ``higher_is_worse``)."""
    return compare_counts(Counter(canary), Counter(baseline), higher_is_worse=higher_is_worse, alpha=alpha,
                          min_effect=min_effect, min_samples=min_samples)


def compare_counts(canary: Counts, baseline: Counts, *, higher_is_worse: bool = True, alpha: float = ALPHA,
                   min_effect: float = MIN_EFFECT, min_samples: int = MIN_SAMPLES) -> Comparison:
    """`compare` of samples given as counts of values (a histogram's buckets, a sketch's bins)."""
    total1, total2 = sum(canary.values()), sum(baseline.values())
    n1, n2 = int(round(total1)), int(round(total2))
    if total1 < min_samples or total2 < min_samples or total1 <= 0 or total2 <= 0:
        side, n = ("canary", n1) if total1 < min_samples or total1 <= 0 else ("baseline", n2)
        return Comparison(Outcome.NODATA if n == 0 else Outcome.INCONCLUSIVE, n1, n2,
                          reason=f"the {side} has {n} samples, {min_samples} needed")
    result = mann_whitney(canary, baseline, greater=higher_is_worse)
    worse_effect = result.effect if higher_is_worse else 1 - result.effect
    worse = result.p_value < alpha and worse_effect >= min_effect
    return Comparison(Outcome.FAIL if worse else Outcome.PASS, n1, n2, result.p_value, worse_effect,
                      weighted_median(canary), weighted_median(baseline),
                      reason=(f"canary worse than baseline (p={result.p_value:.2g}, effect {worse_effect:.2f})"
                              if worse else
                              f"no meaningful difference (p={result.p_value:.2g}, effect {worse_effect:.2f})"))


def weighted_median(counts: Counts) -> float | None:
    """The median of samples given as counts (as `statistics.median`: the mean of the two middle
    samples when their number is even)."""
    items = sorted((value, count) for value, count in counts.items() if count > 0)
    total = sum(count for _, count in items)
    if not total:
        return None
    middle = (total + 1) / 2  # the median's rank, 1-based; halfway between two ranks when total is even

    def at(rank: float) -> float:
        seen = 0.0
        for value, count in items:
            seen += count
            if seen >= rank:
                return value
        return items[-1][0]

    return (at(math.floor(middle)) + at(math.ceil(middle))) / 2
