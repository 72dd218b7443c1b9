"""The spread growth_vs_baseline judges with, kept as periods come and go, is the one measured afresh."""

from __future__ import annotations

import math
import statistics

from hypothesis import event, given, settings
from hypothesis import strategies as st

from controller.analysis.spread import MIN_PERIODS, PairedSpread, _robust_spread_of_sorted
from controller.analysis.window import Window


def measured_afresh(ours: Window, theirs: Window) -> tuple[float | None, tuple[float, float] | None]:
    """The definition: every period both windows hold paired, the newest (still filling) left out,
    1.4826 times the median absolute deviation of the changes per square root of a second."""
    canary, baseline = dict(ours.periods_after(-math.inf)), dict(theirs.periods_after(-math.inf))
    pairs = [(max(canary[s][0], baseline[s][0]), canary[s][1] - baseline[s][1])
             for s in sorted(canary.keys() & baseline.keys())][:-1]
    changes = [(after - before) / math.sqrt(t_after - t) for (t, before), (t_after, after) in zip(pairs, pairs[1:])
               if t_after > t]
    if len(changes) < MIN_PERIODS:
        return None, pairs[0] if pairs else None
    middle = statistics.median(changes)
    return 1.4826 * statistics.median(abs(c - middle) for c in changes), pairs[0]


def folded(span: float, panes: int) -> Window:
    return Window(span, panes=panes, exact_limit=0, quantiles=False, maximum=False, minimum=False)


steps = st.lists(st.tuples(st.booleans(),                                   # the canary's sample, or the baseline's
                           st.floats(0.0, 12.0),                            # seconds on (0: the same time)
                           st.floats(-1e3, 1e3, allow_nan=False),           # the level
                           st.integers(0, 30)),                             # > 27: a late sample, 100 s back
                 min_size=80, max_size=300)


@settings(max_examples=150, deadline=None)
@given(steps=steps, panes=st.integers(4, 30))
def test_kept_and_measured_afresh_agree_on_random_series(steps, panes):
    """Random walks of both releases with gaps, samples at one time and late samples: after every
    sample the kept spread and first pair are those measured afresh (the same floats, to the bit)."""
    span = 20.0 * panes
    ours, theirs = folded(span, panes), folded(span, panes)
    kept = None
    now, spreads = 1_800_000_000.0, 0
    for canary, seconds, level, late in steps:
        now += seconds
        window = ours if canary else theirs
        window.add(now - 100.0 if late > 27 else now, level)
        for w in (ours, theirs):
            w.expire(now)
        if ours.count() == 0 or theirs.count() == 0:
            continue
        if kept is None or not kept.reads(ours, theirs):
            kept = PairedSpread(ours, theirs)
        kept.update()
        spread, first = measured_afresh(ours, theirs)
        assert kept.spread() == spread
        if spread is not None:
            assert kept.first() == first
            spreads += 1
    event(f"spreads measured: {'none' if not spreads else 'some'}")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from([0.0, 1.0, -2.5])),
                min_size=MIN_PERIODS, max_size=60))
def test_the_median_absolute_deviation_by_selection_is_statistics_own(changes):
    middle = statistics.median(changes)
    assert _robust_spread_of_sorted(sorted(changes)) == 1.4826 * statistics.median(abs(c - middle) for c in changes)
