"""The robust spread of a canary-minus-baseline difference, kept up to date as periods come and go.

``growth_vs_baseline`` pairs the canary's and the baseline's folded windows period by period (a
minute): the difference's change from one completed period to the next, per square root of a
second, has a spread of 1.4826 times the median absolute deviation of those changes. Measured
afresh, that is a day's ~1,440 periods paired, divided and sorted twice whenever a period starts
or leaves (twice a minute; the tick's p99). `PairedSpread` keeps the completed pairs and their
changes in a sorted list instead: a period in or out is a bisection, the median a lookup, and
the median absolute deviation a selection over the two sides of the median, without a sort. The
figure is the same to the bit (the same operations on the same floats); a sample that lands in
an older period (`Window.revised`) or a window replaced makes it start over.
"""

from __future__ import annotations

import bisect
import math
from collections import deque

from controller.analysis.window import Window

MIN_PERIODS = 4
"""Changes between periods ``growth_vs_baseline`` needs before it measures a spread."""
MAD_TO_STANDARD_DEVIATION = 1.4826
"""The median absolute deviation of normal changes times this is their standard deviation."""


class PairedSpread:
    """The completed periods both windows hold, as ``(start, time, difference)``, and the spread
    of the changes between consecutive ones. The newest period both hold is still filling: it is
    left out until a newer one is paired."""

    def __init__(self, ours: Window, theirs: Window) -> None:
        self.ours, self.theirs = ours, theirs
        self._revised = (ours.revised, theirs.revised)
        self.pairs: deque[tuple[float, float, float]] = deque()
        # changes[i]: from pairs[i] to pairs[i + 1], None where no time passed between them
        self._changes: deque[float | None] = deque()
        self._sorted: list[float] = []
        self._measured: float | None = None
        self._stale = True  # the pairs moved since the spread was measured
        self._seen: tuple | None = None  # the windows' periods when last updated

    def reads(self, ours: Window, theirs: Window) -> bool:
        """Whether this is kept on these very windows, no sample having landed in an older period."""
        return ours is self.ours and theirs is self.theirs and self._revised == (ours.revised, theirs.revised)

    def update(self) -> None:
        """Drop the pairs whose period left either window; add the periods completed since."""
        ours, theirs = self.ours, self.theirs
        seen = (ours.periods(), theirs.periods())
        if seen == self._seen:  # no period started or left: the completed ones are those kept
            return
        self._seen = seen
        (_, our_first, _), (_, their_first, _) = seen
        while self.pairs and (our_first is None or their_first is None or self.pairs[0][0] < max(our_first, their_first)):
            self.pairs.popleft()
            if self._changes:
                self._forget(self._changes.popleft())
            self._stale = True
        after = self.pairs[-1][0] if self.pairs else -math.inf
        canary, baseline = dict(ours.periods_after(after)), dict(theirs.periods_after(after))
        starts = sorted(canary.keys() & baseline.keys())
        for start in starts[:-1]:  # the newest is still filling
            (our_t, our_value), (their_t, their_value) = canary[start], baseline[start]
            pair = (start, max(our_t, their_t), our_value - their_value)
            if self.pairs:
                _, then, before = self.pairs[-1]
                change = (pair[2] - before) / math.sqrt(pair[1] - then) if pair[1] > then else None
                self._changes.append(change)
                if change is not None:
                    bisect.insort(self._sorted, change)
            self.pairs.append(pair)
            self._stale = True

    def _forget(self, change: float | None) -> None:
        if change is not None:
            del self._sorted[bisect.bisect_left(self._sorted, change)]

    def spread(self) -> float | None:
        """1.4826 times the median absolute deviation of the changes; None with too few."""
        if self._stale:
            self._measured = _robust_spread_of_sorted(self._sorted)
            self._stale = False
        return self._measured

    def first(self) -> tuple[float, float] | None:
        """The oldest completed pair's ``(time, difference)``: where the growth is measured from."""
        return self.pairs[0][1:] if self.pairs else None


def _robust_spread_of_sorted(changes: list[float]) -> float | None:
    if len(changes) < MIN_PERIODS:
        return None
    middle = _median_of_sorted(changes)
    below = bisect.bisect_left(changes, middle)  # changes[:below] lie under the median, the rest at or over it
    n = len(changes)
    if n % 2:
        deviation = _kth_deviation(changes, middle, below, n // 2)
    else:
        deviation = (_kth_deviation(changes, middle, below, n // 2 - 1)
                     + _kth_deviation(changes, middle, below, n // 2)) / 2
    return MAD_TO_STANDARD_DEVIATION * deviation


def _median_of_sorted(values: list[float]) -> float:
    """As `statistics.median`, of values already sorted."""
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def _kth_deviation(values: list[float], middle: float, below: int, k: int) -> float:
    """The k-th smallest (from 0) of ``abs(v - middle)`` over sorted ``values``, found by bisection
    over two sorted runs: those under the middle read leftwards from it (``middle - v``), those at
    or over it read rightwards (``v - middle``); the same floats `abs` would give."""
    left, right = below, len(values) - below

    def under(j: int) -> float:  # the j-th smallest deviation of the run under the middle
        return middle - values[below - 1 - j]

    def over(j: int) -> float:
        return values[below + j] - middle

    low, high = max(0, k + 1 - right), min(k + 1, left)  # how many of the k + 1 smallest come from under
    while low < high:
        taken = (low + high) // 2
        if under(taken) < over(k - taken):
            low = taken + 1
        else:
            high = taken
    candidates = []
    if low > 0:
        candidates.append(under(low - 1))
    if k + 1 - low > 0:
        candidates.append(over(k - low))
    return max(candidates)
