"""Canary against baseline on the same market: is the canary's distribution worse?

Kayenta's judge, kept small: a one-sided Mann-Whitney U test (rank-based, no assumption of
normality, robust to the long tails latencies have) plus the effect size, so that a
difference too small to matter never fails a release however many samples there are, and
too few samples on either side give ``inconclusive`` rather than a verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from controller.analysis.verdict import Outcome

MIN_SAMPLES = 50      # Kayenta warns below 50 points
ALPHA = 0.01
MIN_EFFECT = 0.60     # P(canary > baseline) above which a difference matters


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


def compare(canary: Sequence[float], baseline: Sequence[float], *, higher_is_worse: bool = True,
            alpha: float = ALPHA, min_effect: float = MIN_EFFECT, min_samples: int = MIN_SAMPLES) -> Comparison:
    """Judge whether ``canary`` is worse than ``baseline`` (higher, or lower when not ``higher_is_worse``)."""
    n1, n2 = len(canary), len(baseline)
    if n1 < min_samples or n2 < min_samples:
        side, n = ("canary", n1) if n1 < min_samples else ("baseline", n2)
        return Comparison(Outcome.NODATA if n == 0 else Outcome.INCONCLUSIVE, n1, n2,
                          reason=f"the {side} has {n} samples, {min_samples} needed")
    from statistics import median

    from scipy.stats import mannwhitneyu

    result = mannwhitneyu(canary, baseline, alternative="greater" if higher_is_worse else "less")
    u = float(result.statistic)
    effect = u / (n1 * n2)
    worse_effect = effect if higher_is_worse else 1 - effect
    worse = result.pvalue < alpha and worse_effect >= min_effect
    return Comparison(Outcome.FAIL if worse else Outcome.PASS, n1, n2, float(result.pvalue), worse_effect,
                      median(canary), median(baseline),
                      reason=(f"canary worse than baseline (p={result.pvalue:.2g}, effect {worse_effect:.2f})" if worse
                              else f"no meaningful difference (p={result.pvalue:.2g}, effect {worse_effect:.2f})"))
