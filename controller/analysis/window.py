"""Sliding time windows over samples, in bounded memory, with quantiles of stated accuracy.

A window keeps its samples exactly while there are few of them (at most ``exact_limit``):
counts, sums and quantiles are then exact, and the window's edge is exact too. Past that it
folds the samples into ``panes`` time panes, each with a DDSketch, so memory no longer grows
with the event rate or the stage length. In that mode:

- a quantile is within ``relative_accuracy`` (1 % by default) of a true sample value of that
  rank (DDSketch's guarantee);
- the window's edge moves pane by pane: samples up to one pane width (``span / panes``) older
  than ``span`` may still count.

Time is always passed in; nothing here reads a clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

from ddsketch import DDSketch

DEFAULT_ACCURACY = 0.01


@dataclass
class _Pane:
    start: float
    accuracy: float
    count: int = 0
    total: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    first: tuple[float, float] | None = None
    last: tuple[float, float] | None = None
    sketch: DDSketch = field(init=False)

    def __post_init__(self) -> None:
        self.sketch = DDSketch(relative_accuracy=self.accuracy)

    def add(self, t: float, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)
        self.sketch.add(value)
        if self.first is None or t < self.first[0]:
            self.first = (t, value)
        if self.last is None or t >= self.last[0]:
            self.last = (t, value)


class Window:
    """Samples ``(t, value)`` of the last ``span`` seconds."""

    def __init__(self, span: float, *, panes: int = 60, exact_limit: int = 4096,
                 relative_accuracy: float = DEFAULT_ACCURACY) -> None:
        if span <= 0:
            raise ValueError("a window spans a positive number of seconds")
        self.span = span
        self.pane_width = span / panes
        self.exact_limit = exact_limit
        self.accuracy = relative_accuracy
        self._exact: deque[tuple[float, float]] | None = deque()
        # Monotonic queues over the exact samples: max and min in O(1), amortised.
        self._highs: deque[tuple[float, float]] = deque()
        self._lows: deque[tuple[float, float]] = deque()
        self._panes: deque[_Pane] = deque()
        self.latest = -math.inf  # the newest sample's time, kept after it expires: how long the window has been empty

    @property
    def exact(self) -> bool:
        return self._exact is not None

    def add(self, t: float, value: float) -> None:
        if not (math.isfinite(value) and math.isfinite(t)):
            # NaN compares false with everything: in the max/min queues it would hide a breach.
            raise ValueError(f"a window holds finite samples only, got {value} at {t}")
        self.latest = max(self.latest, t)
        if self._exact is not None:
            if self._exact and t < self._exact[-1][0]:
                self._insert_sorted(t, value)
                self._rebuild_extremes()
            else:
                self._exact.append((t, value))
                self._push_extremes(t, value)
            if len(self._exact) > self.exact_limit:
                self._fold()
            return
        start = math.floor(t / self.pane_width) * self.pane_width
        pane = self._panes[-1] if self._panes else None
        if pane is None or start > pane.start:
            pane = _Pane(start, self.accuracy)
            self._panes.append(pane)
        elif start < pane.start:  # late sample: find its pane (rare; keeps panes in time order)
            pane = next((p for p in reversed(self._panes) if p.start <= start), self._panes[0])
        pane.add(t, value)

    def _insert_sorted(self, t: float, value: float) -> None:
        items = self._exact
        assert items is not None
        index = len(items)
        while index > 0 and items[index - 1][0] > t:
            index -= 1
        items.insert(index, (t, value))

    def _push_extremes(self, t: float, value: float) -> None:
        while self._highs and self._highs[-1][1] <= value:
            self._highs.pop()
        self._highs.append((t, value))
        while self._lows and self._lows[-1][1] >= value:
            self._lows.pop()
        self._lows.append((t, value))

    def _rebuild_extremes(self) -> None:
        self._highs.clear()
        self._lows.clear()
        for t, value in self._exact or ():
            self._push_extremes(t, value)

    def _fold(self) -> None:
        self._highs.clear()
        self._lows.clear()
        samples, self._exact = self._exact, None
        for t, value in samples or ():
            self.add(t, value)

    def expire(self, now: float) -> None:
        """Forget what is older than ``now - span``."""
        edge = now - self.span
        if self._exact is not None:
            while self._exact and self._exact[0][0] < edge:
                self._exact.popleft()
            for extremes in (self._highs, self._lows):
                while extremes and extremes[0][0] < edge:
                    extremes.popleft()
        else:
            while self._panes and self._panes[0].start + self.pane_width <= edge:
                self._panes.popleft()

    # --- aggregates (call expire(now) first) -------------------------------------------------------

    def count(self) -> int:
        if self._exact is not None:
            return len(self._exact)
        return sum(p.count for p in self._panes)

    def sum(self) -> float:
        if self._exact is not None:
            return math.fsum(v for _, v in self._exact)
        return math.fsum(p.total for p in self._panes)

    def mean(self) -> float | None:
        n = self.count()
        return self.sum() / n if n else None

    def min(self) -> float | None:
        if self._exact is not None:
            return self._lows[0][1] if self._lows else None
        return min((p.low for p in self._panes if p.count), default=None)

    def max(self) -> float | None:
        if self._exact is not None:
            return self._highs[0][1] if self._highs else None
        return max((p.high for p in self._panes if p.count), default=None)

    def first(self) -> tuple[float, float] | None:
        if self._exact is not None:
            return self._exact[0] if self._exact else None
        return next((p.first for p in self._panes if p.first is not None), None)

    def last(self) -> tuple[float, float] | None:
        if self._exact is not None:
            return self._exact[-1] if self._exact else None
        return next((p.last for p in reversed(self._panes) if p.last is not None), None)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 <= q <= 1): exact (nearest rank) or within the sketch's accuracy."""
        if not 0 <= q <= 1:
            raise ValueError("a quantile is between 0 and 1")
        if self._exact is not None:
            values = sorted(v for _, v in self._exact)
            if not values:
                return None
            return values[max(0, math.ceil(q * len(values)) - 1)]
        merged = DDSketch(relative_accuracy=self.accuracy)
        for pane in self._panes:
            if pane.count:
                merged.merge(pane.sketch)
        return merged.get_quantile_value(q) if merged.count else None

    def values(self, limit: int = 2000) -> list[float]:
        """The samples themselves (exact), or ``limit`` evenly spaced quantiles standing for them."""
        if self._exact is not None:
            return [v for _, v in self._exact]
        n = min(self.count(), limit)
        return [q for i in range(n) if (q := self.quantile((i + 0.5) / n)) is not None]

    def increase(self) -> float | None:
        """How much a counter grew across the window, counting resets as restarts from zero."""
        if self._exact is None:
            first, last = self.first(), self.last()
            return None if first is None or last is None else max(0.0, last[1] - first[1])
        values = [v for _, v in self._exact]
        if not values:
            return None
        grown = 0.0
        for before, after in zip(values, values[1:]):
            grown += after - before if after >= before else after
        return grown
