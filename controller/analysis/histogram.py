"""Quantiles of classic Prometheus histograms, computed exactly as PromQL's ``histogram_quantile``.

A classic histogram is a set of cumulative buckets: ``(le, count)`` pairs, where ``count`` is the
number of observations ``<= le`` and the last bucket is ``le="+Inf"`` (all observations). The
quantile is found the way Prometheus' ``bucketQuantile`` (promql/quantile.go) finds it:

- buckets are sorted by ``le``, buckets with the same ``le`` merged, float noise between
  neighbours (relative difference below 1e-12) ignored, and any remaining decrease removed by
  carrying the previous count forward (the monotonic envelope);
- ``rank = q * total``; the answer lies in the first bucket whose cumulative count reaches it,
  interpolated linearly between that bucket's lower and upper bound;
- the lowest bucket's lower bound is 0 when its upper bound is positive; when its upper bound
  is <= 0 and the rank falls in it, that upper bound is the answer;
- when the rank falls in the ``+Inf`` bucket, the answer is the highest finite upper bound.

Error bound: linear interpolation assumes observations spread evenly within a bucket, so the
result can be anywhere in the bucket that holds the true quantile: it is off by at most that
bucket's width (``quantile_bucket`` returns the bucket's bounds). In the ``+Inf`` bucket there
is no bound at all: the result is only a lower bound of the true quantile. Choose buckets that
are fine around the thresholds a policy compares with (the bot's are, around 150 ms and 400 ms).

Special cases, as Prometheus answers them (NaN is "no data"; never compare it with a threshold):

- no buckets at all: ``None`` (Prometheus returns no series);
- ``q`` is NaN, fewer than two buckets, no ``+Inf`` bucket, or zero observations: NaN;
- ``q < 0``: ``-inf``; ``q > 1``: ``+inf``;
- ``q == 0`` with an empty lowest bucket whose upper bound is positive: NaN (0/0 in Go).

Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping

Bound = float | str
"""A bucket's upper bound as a number or as Prometheus writes the ``le`` label (``"0.1"``, ``"+Inf"``)."""

Buckets = Mapping[Bound, float] | Iterable[tuple[Bound, float]]
"""Cumulative bucket counts by upper bound."""

SMALL_DELTA_TOLERANCE = 1e-12
_MIN_NORMAL = 2.2250738585072014e-308  # the smallest normal float64, as Go's almost.Equal uses


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """The ``q`` quantile (0 <= q <= 1) of cumulative ``buckets``, exactly as PromQL computes it."""
    pairs = _normalised(buckets)
    if not pairs:
        return None
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    if pairs[-1][0] != math.inf:
        return math.nan
    pairs = _monotonic(_coalesced(pairs))
    if len(pairs) < 2:
        return math.nan
    total = pairs[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    index = _first_reaching(pairs, rank)
    if index == len(pairs) - 1:
        return pairs[-2][0]
    upper, count = pairs[index]
    if index == 0 and upper <= 0:
        return upper
    lower = 0.0
    if index > 0:
        lower, below = pairs[index - 1]
        count -= below
        rank -= below
    if count == 0:  # only when q == 0 and the lowest bucket is empty: Go's 0/0
        return math.nan
    return lower + (upper - lower) * (rank / count)


def quantile_bucket(q: float, buckets: Buckets) -> tuple[float, float] | None:
    """The bounds ``(lower, upper]`` of the bucket holding the ``q`` quantile: its error bound.

    ``upper`` is ``inf`` when the quantile falls in the ``+Inf`` bucket (no bound: the
    interpolated result is then only a lower bound). None where `histogram_quantile` has no
    number to give (None or NaN) or ``q`` is outside [0, 1].
    """
    result = histogram_quantile(q, buckets)
    if result is None or math.isnan(result) or not 0 <= q <= 1:
        return None
    pairs = _monotonic(_coalesced(_normalised(buckets)))
    index = _first_reaching(pairs, q * pairs[-1][1])
    lower = pairs[index - 1][0] if index > 0 else (0.0 if pairs[0][0] > 0 else -math.inf)
    return lower, pairs[index][0]


def bucket_increase(older: Buckets, newer: Buckets) -> dict[float, float]:
    """The cumulative buckets of the observations made between two snapshots of one histogram.

    A counter reset (any bucket lower in ``newer``) or a changed bucket layout means the process
    restarted in between: everything ``newer`` counts was then observed since, and ``newer`` is
    the increase (as Prometheus' ``increase()`` treats a reset). Observations made before the
    restart and after ``older`` are lost, as they are to Prometheus.
    """
    before = dict(_normalised(older))
    after = _normalised(newer)
    if set(before) != {le for le, _ in after} or any(count < before[le] for le, count in after):
        return dict(after)
    return {le: count - before[le] for le, count in after}


def _normalised(buckets: Buckets) -> list[tuple[float, float]]:
    items = buckets.items() if isinstance(buckets, Mapping) else buckets
    return sorted((float(le), float(count)) for le, count in items)


def _coalesced(pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Buckets with the same upper bound (``0.2`` and ``2e-1``) merged, their counts added."""
    merged: list[tuple[float, float]] = []
    for le, count in pairs:
        if merged and merged[-1][0] == le:
            merged[-1] = (le, merged[-1][1] + count)
        else:
            merged.append((le, count))
    return merged


def _monotonic(pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Prometheus' ``ensureMonotonicAndIgnoreSmallDeltas``: float noise ignored, decreases removed."""
    fixed = list(pairs)
    previous = fixed[0][1]
    for i in range(1, len(fixed)):
        le, count = fixed[i]
        if count == previous:
            continue
        if _almost_equal(previous, count) or count < previous:
            fixed[i] = (le, previous)  # 'previous' stays: the envelope is measured from the last accepted count
            continue
        previous = count
    return fixed


def _almost_equal(a: float, b: float, epsilon: float = SMALL_DELTA_TOLERANCE) -> bool:
    if a == b:
        return True
    diff = abs(a - b)
    total = abs(a) + abs(b)
    if a == 0 or b == 0 or total < _MIN_NORMAL:
        return diff < epsilon * _MIN_NORMAL
    return diff / min(total, sys.float_info.max) < epsilon


def _first_reaching(pairs: list[tuple[float, float]], rank: float) -> int:
    """Index of the first bucket whose count reaches ``rank``, searched as Go's ``sort.Search``
    over all but the last bucket (the last one's index when none does)."""
    low, high = 0, len(pairs) - 1
    while low < high:
        middle = (low + high) // 2
        if pairs[middle][1] >= rank:
            high = middle
        else:
            low = middle + 1
    return low
