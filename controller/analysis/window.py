"""Sliding time windows over samples, in bounded memory, with aggregates kept up to date.

A window keeps its samples exactly while there are few of them (at most ``exact_limit``):
counts, sums and quantiles are then exact, and the window's edge is exact too. Past that it
folds the samples into ``panes`` time panes, so memory no longer grows with the event rate or
the stage length. In that mode:

- a quantile is within ``relative_accuracy`` (1 % by default) of a true sample value of that
  rank: values are counted in logarithmic bins (DDSketch's mapping), one bin per value within
  that accuracy;
- the window's edge moves pane by pane: samples up to one pane width (``span / panes``) older
  than ``span`` may still count.

Every aggregate is kept as samples come and go, not recomputed from the samples when asked:
count, a compensated running sum (Neumaier's, resynchronised with `math.fsum` now and then so
its error cannot build up), a counter's increase (each sample's growth from the one before, a
reset counted as a restart from zero, summed the same way), min and max in monotonic queues,
quantiles from a sorted list (exact) or the bins' running counts (folded), the sum of squared
changes between samples and the time they span (a volatility). `version` changes
whenever what the window holds does, so a reader can skip a window that has not moved.

Time is always passed in; nothing here reads a clock.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import Counter, deque
from dataclasses import dataclass, field

DEFAULT_ACCURACY = 0.01

_Steps = tuple[float, float, float]
"""What a sample adds since the sample before it: a counter's growth (a drop is a restart from
zero), the change squared, and the time elapsed. A window's sums of these, less its first
sample's, give the counter's increase and the value's variance per second (its volatility)."""
_NO_STEPS: _Steps = (0.0, 0.0, 0.0)


class RunningSum:
    """A sum that values are added to and taken from, compensated (Neumaier) against rounding."""

    __slots__ = ("total", "compensation")

    def __init__(self) -> None:
        self.total = 0.0
        self.compensation = 0.0

    def add(self, value: float) -> None:
        total = self.total + value
        if abs(self.total) >= abs(value):
            self.compensation += (self.total - total) + value
        else:
            self.compensation += (value - total) + self.total
        self.total = total

    def reset(self, value: float = 0.0) -> None:
        self.total, self.compensation = value, 0.0

    @property
    def value(self) -> float:
        return self.total + self.compensation


class LogBins:
    """Where a value goes in logarithmic bins of relative width ``accuracy`` (DDSketch's mapping):
    each bin stands for its values by one within ``accuracy`` of all of them."""

    def __init__(self, accuracy: float) -> None:
        if not 0 < accuracy < 1:
            raise ValueError("a relative accuracy is between 0 and 1")
        self.gamma = (1 + accuracy) / (1 - accuracy)
        self.log_gamma = math.log(self.gamma)
        self._representatives: dict[int, float] = {}

    def representative(self, value: float) -> float:
        """The value that stands for ``value``'s bin."""
        if value == 0:
            return 0.0
        key = math.ceil(math.log(abs(value)) / self.log_gamma)
        found = self._representatives.get(key)
        if found is None:
            if len(self._representatives) > 100_000:  # bounded: keys span the float range at most
                self._representatives.clear()
            found = self._representatives[key] = 2 * self.gamma ** key / (self.gamma + 1)
        return found if value > 0 else -found


def _steps_between(then: float, was: float, t: float, value: float) -> _Steps:
    """From one sample to the next: a counter's growth (a drop is a restart from zero), the
    change squared, the time elapsed."""
    change = value - was
    return (change if value >= was else value), change * change, t - then


def _at_least(a: float, b: float) -> bool:
    return a >= b


def _at_most(a: float, b: float) -> bool:
    return a <= b


def _period(before: _Pane | None, pane: _Pane) -> tuple[float, float]:
    if before is None or before.last is None or pane.last is None:
        return 0.0, 0.0
    change = pane.last[1] - before.last[1]
    return change * change, pane.last[0] - before.last[0]


_MAPPINGS: dict[float, LogBins] = {}


def _bins_for(accuracy: float) -> LogBins:
    mapping = _MAPPINGS.get(accuracy)
    if mapping is None:
        mapping = _MAPPINGS[accuracy] = LogBins(accuracy)
    return mapping


@dataclass
class _Pane:
    start: float
    count: int = 0
    total: RunningSum = field(default_factory=RunningSum)
    low: float = math.inf
    high: float = -math.inf
    first: tuple[float, float] | None = None
    last: tuple[float, float] | None = None
    # Its samples' steps, each from the sample before it (maybe in an older pane), added up; and
    # the first sample's, which are not the window's once the pane is the oldest.
    grown: float = 0.0
    squared: float = 0.0
    elapsed: float = 0.0
    first_steps: _Steps = _NO_STEPS
    # Once the next pane starts: this pane's last value's change from the pane before's, squared,
    # and the time between them (the per-period changes a folded window's volatility comes from).
    period: tuple[float, float] = (0.0, 0.0)
    bins: Counter[float] | None = None

    def add(self, t: float, value: float, steps: _Steps | None, representative: float | None) -> None:
        self.count += 1
        self.total.add(value)
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        if representative is not None:
            assert self.bins is not None
            self.bins[representative] += 1
        if self.first is None or t < self.first[0]:
            self.first = (t, value)
            if steps is not None:
                self.first_steps = steps
        if self.last is None or t >= self.last[0]:
            self.last = (t, value)
        if steps is not None:
            self.grown += steps[0]
            self.squared += steps[1]
            self.elapsed += steps[2]


class Window:
    """Samples ``(t, value)`` of the last ``span`` seconds.

    ``quantiles``: keep what quantiles and value counts need (a sorted list, the bins);
    ``steps``: keep what a counter's increase and the volatility need; ``maximum``, ``minimum``:
    keep the queues `max` and `min` read (a counter's would hold every sample). A window whose
    reader never asks for them is cheaper without."""

    def __init__(self, span: float, *, panes: int = 60, exact_limit: int = 4096,
                 relative_accuracy: float = DEFAULT_ACCURACY, quantiles: bool = True, steps: bool = True,
                 maximum: bool = True, minimum: bool = True) -> None:
        if span <= 0:
            raise ValueError("a window spans a positive number of seconds")
        self.span = span
        self.pane_width = span / panes
        self.exact_limit = exact_limit
        self.accuracy = relative_accuracy
        self.quantiles = quantiles
        self.steps = steps
        self.maximum = maximum
        self.minimum = minimum
        self._mapping = _bins_for(relative_accuracy)
        # Exact samples (t, value), in time order. A sample's steps are from the one before it (the
        # first's: from `_before_first`), worked out when needed rather than kept with each sample.
        self._exact: deque[tuple[float, float]] | None = deque()
        self._before_first: tuple[float, float] | None = None
        self._sorted: list[float] = []  # the exact samples' values in order, when quantiles are kept
        # Monotonic queues (time, value): max and min in O(1), amortised. Folded, time is a pane's start.
        self._highs: deque[tuple[float, float]] = deque()
        self._lows: deque[tuple[float, float]] = deque()
        self._panes: deque[_Pane] = deque()
        self._bins: Counter[float] = Counter()  # folded: the panes' bins added up
        self._count = 0
        self._sum = RunningSum()
        self._grown = RunningSum()
        self._squared = RunningSum()
        self._elapsed = RunningSum()
        self._period_squared = RunningSum()
        self._period_elapsed = RunningSum()
        self._expired_since_sync = 0
        self._newest: tuple[float, float] | None = None  # the newest sample: the next one's steps are from it
        self.latest = -math.inf  # the newest sample's time, kept after it expires: how long the window has been empty
        self.version = 0         # changes whenever the samples held do
        # Samples that went into a pane older than the newest (folded): a reader that keeps what the
        # completed panes said (`periods_after`) must start over when this moves.
        self.revised = 0
        if exact_limit <= 0:
            self._exact = None

    @property
    def exact(self) -> bool:
        return self._exact is not None

    # --- adding and expiring ------------------------------------------------------------------------

    def add(self, t: float, value: float) -> None:
        if not (math.isfinite(value) and math.isfinite(t)):
            # NaN compares false with everything: in the max/min queues it would hide a breach.
            raise ValueError(f"a window holds finite samples only, got {value} at {t}")
        self.version += 1
        late = t < self.latest
        self.latest = max(self.latest, t)
        if self._exact is not None:
            if late and self._exact and t < self._exact[-1][0]:
                self._insert_late(t, value)
            else:
                if not self._exact:  # the first held: its steps are from the newest before it, if any
                    self._before_first = self._newest if self.steps else None
                steps = self._steps(t, value)
                self._exact.append((t, value))
                self._count += 1
                self._sum.add(value)
                self._add_steps(steps)
                if self.quantiles:
                    bisect.insort(self._sorted, value)
                self._push_extremes(t, value)
            if len(self._exact) > self.exact_limit:
                self._fold()
            return
        self._add_folded(t, value, late)

    def _steps(self, t: float, value: float) -> _Steps:
        """From the newest sample to this one."""
        if not self.steps:
            return _NO_STEPS
        before, self._newest = self._newest, (t, value)
        return _NO_STEPS if before is None else _steps_between(*before, t, value)

    def _add_steps(self, steps: _Steps, sign: float = 1.0) -> None:
        if not self.steps:
            return
        self._grown.add(sign * steps[0])
        self._squared.add(sign * steps[1])
        self._elapsed.add(sign * steps[2])

    def _reset_steps(self) -> None:
        self._grown.reset()
        self._squared.reset()
        self._elapsed.reset()

    def _insert_late(self, t: float, value: float) -> None:
        """A sample older than the newest (fills reported a moment out of order): put in its place,
        found from the newest end; the next sample's steps are then from it."""
        items = self._exact
        assert items is not None
        index = len(items)
        while index > 0 and items[index - 1][0] > t:
            index -= 1
        after_steps = self._steps_of(index)
        if index == 0:  # older than every sample held: the window's first, with no steps of its own
            steps = _NO_STEPS
            self._before_first = None
        else:
            steps = _steps_between(*items[index - 1], t, value)
        replaced = _steps_between(t, value, *items[index])
        items.insert(index, (t, value))
        if self.steps:
            self._add_steps(steps)
            self._add_steps(after_steps, -1.0)
            self._add_steps(replaced)
        self._count += 1
        self._sum.add(value)
        if self.quantiles:
            bisect.insort(self._sorted, value)
        self._insert_extremes(t, value)

    def _insert_extremes(self, t: float, value: float, *, collapse: bool = False) -> None:
        """Put a sample older than the queues' newest entries into the max and min queues."""
        for queue, dominates, kept in ((self._highs, _at_least, self.maximum), (self._lows, _at_most, self.minimum)):
            if not kept:
                continue
            later = []
            while queue and queue[-1][0] > t:
                later.append(queue.pop())
            if not (later and dominates(later[-1][1], value)):  # else a later sample outranks it: it never counts
                while queue and dominates(value, queue[-1][1]):
                    queue.pop()
                if not (collapse and queue and queue[-1][0] == t):
                    queue.append((t, value))
            queue.extend(reversed(later))

    def _add_folded(self, t: float, value: float, late: bool) -> None:
        start = math.floor(t / self.pane_width) * self.pane_width
        pane = self._panes[-1] if self._panes else None
        if pane is None or start > pane.start:
            if pane is not None:
                self._close(pane)
            pane = _Pane(start, bins=Counter() if self.quantiles else None)
            self._panes.append(pane)
        elif start < pane.start:  # late sample: find its pane (rare; keeps panes in time order)
            pane = next((p for p in reversed(self._panes) if p.start <= start), self._panes[0])
            self.revised += 1
        # A late sample adds to count, sum and the distribution, not to a counter's increase:
        # its neighbours' growth already spans it.
        steps = None if late else self._steps(t, value)
        representative = self._mapping.representative(value) if self.quantiles else None
        pane.add(t, value, steps, representative)
        self._count += 1
        self._sum.add(value)
        if steps is not None:
            self._add_steps(steps)
        if representative is not None:
            self._bins[representative] += 1
        if pane is self._panes[-1]:
            self._push_extremes(pane.start, value, collapse=True)
        else:
            self._insert_extremes(pane.start, value, collapse=True)

    def _close(self, pane: _Pane) -> None:
        """The newest pane is complete: its change from the pane before joins the per-period sums."""
        before = self._panes[-2] if len(self._panes) > 1 else None
        pane.period = _period(before, pane)
        self._period_squared.add(pane.period[0])
        self._period_elapsed.add(pane.period[1])

    def _push_extremes(self, t: float, value: float, *, collapse: bool = False) -> None:
        # Folded (collapse), one entry per pane is enough: they leave the window together.
        highs, lows = self._highs, self._lows
        if self.maximum:
            while highs and highs[-1][1] <= value:
                highs.pop()
            if not (collapse and highs and highs[-1][0] == t):
                highs.append((t, value))
        if self.minimum:
            while lows and lows[-1][1] >= value:
                lows.pop()
            if not (collapse and lows and lows[-1][0] == t):
                lows.append((t, value))

    def _fold(self) -> None:
        samples, self._exact = self._exact, None
        self._highs.clear()
        self._lows.clear()
        self._sorted = []
        self._count = 0
        self._sum.reset()
        self._reset_steps()
        self._newest = None
        self._before_first = None
        for t, value in samples or ():
            self._add_folded(t, value, late=False)

    def expire(self, now: float) -> None:
        """Forget what is older than ``now - span``."""
        edge = now - self.span
        if self._exact is not None:
            items = self._exact
            if not items or items[0][0] >= edge:
                return
            while items and items[0][0] < edge:
                if self.steps:
                    self._add_steps(self._steps_of(0), -1.0)
                self._before_first = sample = items.popleft()
                value = sample[1]
                self._sum.add(-value)
                if self.quantiles:
                    del self._sorted[bisect.bisect_left(self._sorted, value)]
                self._expired_since_sync += 1
            self._count = len(items)
            for extremes in (self._highs, self._lows):
                while extremes and extremes[0][0] < edge:
                    extremes.popleft()
            if not items or self._expired_since_sync > max(len(items), 64):
                self._resync_exact()
            self.version += 1
            return
        panes = self._panes
        if not panes or panes[0].start + self.pane_width > edge:
            return
        while panes and panes[0].start + self.pane_width <= edge:
            pane = panes.popleft()
            self._count -= pane.count
            # Its totals taken from the running sums (the newest pane, still filling, has no period yet).
            self._sum.add(-pane.total.value)
            if self.steps:
                self._grown.add(-pane.grown)
                self._squared.add(-pane.squared)
                self._elapsed.add(-pane.elapsed)
            if panes:
                self._period_squared.add(-pane.period[0])
                self._period_elapsed.add(-pane.period[1])
            self._expired_since_sync += 1
            if pane.bins:
                self._bins.subtract(pane.bins)
                for representative in [r for r in pane.bins if self._bins[r] <= 0]:
                    del self._bins[representative]
        for extremes in (self._highs, self._lows):
            while extremes and extremes[0][0] + self.pane_width <= edge:
                extremes.popleft()
        # Added up afresh once as many panes have left as the window holds: amortised, a pane's
        # departure costs the same whatever the window's length, and rounding cannot build up.
        if not panes or self._expired_since_sync >= len(panes):
            self._resync_folded()
        self.version += 1

    def _resync_folded(self) -> None:
        """The running sums recomputed from the panes."""
        panes = self._panes
        self._sum.reset(math.fsum(p.total.value for p in panes))
        self._grown.reset(math.fsum(p.grown for p in panes))
        self._squared.reset(math.fsum(p.squared for p in panes))
        self._elapsed.reset(math.fsum(p.elapsed for p in panes))
        complete = list(panes)[:-1]
        self._period_squared.reset(math.fsum(p.period[0] for p in complete))
        self._period_elapsed.reset(math.fsum(p.period[1] for p in complete))
        self._expired_since_sync = 0

    def _resync_exact(self) -> None:
        """The running sums recomputed from the samples, before rounding can build up."""
        items = self._exact or deque()
        self._sum.reset(math.fsum(v for _, v in items))
        if self.steps:
            steps = [self._steps_of(0)] if items else []
            steps += [_steps_between(*before, *after) for before, after in zip(items, itertools.islice(items, 1, None))]
            self._grown.reset(math.fsum(step[0] for step in steps))
            self._squared.reset(math.fsum(step[1] for step in steps))
            self._elapsed.reset(math.fsum(step[2] for step in steps))
        self._expired_since_sync = 0

    def _steps_of(self, index: int) -> _Steps:
        """The steps of the exact sample at ``index``: from the one before it (the first's, from
        the sample before it that has left the window, if any)."""
        items = self._exact
        assert items is not None
        if not self.steps or index >= len(items):
            return _NO_STEPS
        before = items[index - 1] if index else self._before_first
        return _NO_STEPS if before is None else _steps_between(*before, *items[index])

    def expires_at(self) -> float:
        """The latest ``now`` at which `expire` forgets nothing (infinity when empty): until past
        it a reader may skip expiring the window."""
        if self._exact is not None:
            return self._exact[0][0] + self.span if self._exact else math.inf
        # A pane leaves once its end is at least ``span`` old: at its end plus the span, not after.
        return math.nextafter(self._panes[0].start + self.pane_width + self.span, -math.inf) if self._panes \
            else math.inf

    # --- aggregates (call expire(now) first) -------------------------------------------------------

    def count(self) -> int:
        return self._count

    def sum(self) -> float:
        return self._sum.value if self._count else 0.0

    def mean(self) -> float | None:
        n = self._count
        return self.sum() / n if n else None

    def min(self) -> float | None:
        if not self.minimum:
            raise ValueError("this window keeps no minimum")
        return self._lows[0][1] if self._lows and self._count else None

    def max(self) -> float | None:
        if not self.maximum:
            raise ValueError("this window keeps no maximum")
        return self._highs[0][1] if self._highs and self._count else None

    def first(self) -> tuple[float, float] | None:
        if self._exact is not None:
            return self._exact[0] if self._exact else None
        return self._panes[0].first if self._panes else None

    def last(self) -> tuple[float, float] | None:
        if self._exact is not None:
            return self._exact[-1] if self._exact else None
        return self._panes[-1].last if self._panes else None

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 <= q <= 1), nearest rank: exact, or within the bins' accuracy."""
        if not 0 <= q <= 1:
            raise ValueError("a quantile is between 0 and 1")
        if not self.quantiles:
            raise ValueError("this window keeps no quantiles")
        n = self._count
        if not n:
            return None
        rank = max(1, math.ceil(q * n))
        if self._exact is not None:
            return self._sorted[rank - 1]
        seen = 0
        for representative in sorted(self._bins):
            seen += self._bins[representative]
            if seen >= rank:
                return representative
        return max(self._bins)

    def counts(self) -> dict[float, float]:
        """The samples as counts of values: exact, or each bin's count at its representative value."""
        if not self.quantiles:
            raise ValueError("this window keeps no value counts")
        if self._exact is not None:
            return dict(Counter(self._sorted))
        return {value: float(count) for value, count in self._bins.items() if count > 0}

    def increase(self) -> float | None:
        """How much a counter grew across the window, counting resets as restarts from zero."""
        if not self.steps:
            raise ValueError("this window keeps no steps between samples")
        if not self._count:
            return None
        return self._grown.value - self._first_steps()[0]

    def variance_rate(self) -> float | None:
        """The variance of the value's changes per second (its volatility squared): from the
        changes between consecutive samples (exact), or between the panes' last samples (folded:
        per period, so that noise around a level, a price bouncing between bid and ask, does not
        pass for volatility). None without two samples (exact) or two panes (folded) to compare."""
        if not self.steps:
            raise ValueError("this window keeps no steps between samples")
        if self._exact is not None:
            if self._count < 2:
                return None
            _, squared, elapsed = self._first_steps()
            elapsed = self._elapsed.value - elapsed
            return max(0.0, self._squared.value - squared) / elapsed if elapsed > 0 else None
        panes = self._panes
        if len(panes) < 2:
            return None
        live_squared, live_elapsed = _period(panes[-2], panes[-1])  # the newest pane, still filling
        oldest_squared, oldest_elapsed = panes[0].period          # from a pane no longer in the window
        squared = self._period_squared.value + live_squared - oldest_squared
        elapsed = self._period_elapsed.value + live_elapsed - oldest_elapsed
        return max(0.0, squared) / elapsed if elapsed > 0 else None

    def periods(self) -> tuple[int, float | None, float | None]:
        """How many periods (panes; exact: samples) the window holds, the first's and the newest's
        start."""
        if self._exact is not None:
            items = self._exact
            return len(items), items[0][0] if items else None, items[-1][0] if items else None
        panes = self._panes
        return len(panes), panes[0].start if panes else None, panes[-1].start if panes else None

    def periods_after(self, start: float) -> list[tuple[float, tuple[float, float]]]:
        """The folded window's panes that start after ``start``, oldest first, as ``(start, last
        sample)``, read from the newest end: the newest periods, found without walking them all."""
        if self._exact is not None:
            raise ValueError("periods_after reads a folded window's panes")
        newer = []
        for pane in reversed(self._panes):
            if pane.start <= start:
                break
            if pane.last is not None:
                newer.append((pane.start, pane.last))
        newer.reverse()
        return newer

    def _first_steps(self) -> _Steps:
        return self._steps_of(0) if self._exact is not None else self._panes[0].first_steps
