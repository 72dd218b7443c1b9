"""Sliding windows: exact while small, bounded and within the stated error when large."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.analysis.window import DEFAULT_ACCURACY, Window


def exact_quantile(values, q):
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def test_a_sample_exactly_span_old_is_still_in_the_window_and_a_moment_later_is_not():
    window = Window(60)
    window.add(100.0, 1.0)
    window.add(130.0, 2.0)
    window.expire(160.0)
    assert window.count() == 2 and window.first() == (100.0, 1.0)
    window.expire(160.001)
    assert window.count() == 1 and window.sum() == 2.0


def test_an_empty_window_has_no_value_rather_than_zero():
    window = Window(10)
    assert window.count() == 0
    assert window.quantile(0.5) is None and window.max() is None and window.mean() is None
    assert window.increase() is None


def test_late_samples_keep_the_window_in_time_order():
    window = Window(60)
    for t in (10.0, 30.0, 20.0):
        window.add(t, t)
    window.expire(75.0)
    assert window.first() == (20.0, 20.0) and window.last() == (30.0, 30.0)


def test_counter_increase_counts_a_reset_as_a_restart_from_zero():
    window = Window(600)
    for t, v in enumerate([5, 7, 9, 1, 3]):
        window.add(float(t), float(v))
    assert window.increase() == 2 + 2 + 1 + 2


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0.0001, max_value=5.0, allow_nan=False), min_size=1, max_size=500),
       st.sampled_from([0.5, 0.95, 0.99]))
def test_small_windows_give_exact_quantiles(values, q):
    window = Window(3600)
    for i, value in enumerate(values):
        window.add(float(i), value)
    assert window.exact and window.quantile(q) == exact_quantile(values, q)


@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_large_windows_stay_within_the_stated_relative_error(q):
    rng = random.Random(42)
    window = Window(3600, exact_limit=1000)
    values = [rng.lognormvariate(-2.5, 0.8) for _ in range(50_000)]  # latency-like, seconds
    for i, value in enumerate(values):
        window.add(i * 0.05, value)
    assert not window.exact
    estimate, truth = window.quantile(q), exact_quantile(values, q)
    assert abs(estimate - truth) <= DEFAULT_ACCURACY * truth * 1.0001
    assert window.count() == len(values) and window.sum() == pytest.approx(math.fsum(values))


def test_memory_is_bounded_by_the_pane_count_however_long_the_stage():
    window = Window(60, panes=30, exact_limit=100)
    for i in range(200_000):  # 48 simulated hours at ~1 sample per second
        t = i * 0.864
        window.add(t, 1.0)
        if i % 1000 == 0:
            window.expire(t)
    window.expire(t)
    assert len(window._panes) <= 31
    assert abs(window.count() - 60 / 0.864) <= 30 / 0.864 * 0.1 + 3  # the edge moves pane by pane


def test_a_folded_window_edge_is_off_by_at_most_one_pane():
    window = Window(60, panes=6, exact_limit=10)  # 10 s panes
    for t in range(0, 120):
        window.add(float(t), 1.0)
    window.expire(120.0)
    assert 60 <= window.count() <= 70


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 100), st.floats(-5, 5)), min_size=1, max_size=80), st.floats(0, 120))
def test_min_and_max_slide_exactly_with_the_window_even_with_late_samples(samples, now):
    window = Window(30)
    for t, value in samples:
        window.add(t, value)
    window.expire(now)
    inside = [v for t, v in samples if t >= now - 30]
    assert window.max() == (max(inside) if inside else None)
    assert window.min() == (min(inside) if inside else None)


def pane(window, t):
    """The start of the pane a folded window puts time ``t`` in."""
    return math.floor(t / window.pane_width) * window.pane_width


def counter_increase(values):
    """A counter's increase over ``values`` in time order, a drop counted as a restart from zero."""
    return sum(after - before if after >= before else after for before, after in zip(values, values[1:]))


def test_a_folded_window_counts_a_counter_reset_as_a_restart_from_zero():
    window = Window(3600, exact_limit=100)
    values = [float(i % 1000) for i in range(5000)]  # 1 a second, the process restarting every 1000 s
    for t, value in enumerate(values):
        window.add(float(t), value)
    window.expire(4999.0)
    assert not window.exact
    kept = [v for t, v in enumerate(values) if math.floor(t / window.pane_width) * window.pane_width
            >= window._panes[0].start]
    assert window.increase() == counter_increase(kept) == 3616  # the last 3620 s: 3 restarts


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 20), st.floats(-1e6, 1e6), st.booleans()), min_size=1, max_size=300),
       st.sampled_from([0, 8, 64, 10_000]), st.sampled_from([0.5, 0.9, 0.99]))
def test_the_running_aggregates_equal_a_full_recompute_as_samples_come_and_go(steps, exact_limit, q):
    """Times only move forward here (late samples are the slow path, tested above)."""
    window = Window(60, panes=12, exact_limit=exact_limit)
    samples, t = [], 0.0
    for gap, value, expire in steps:
        t += gap
        window.add(t, value)
        samples.append((t, value))
        if expire:
            window.expire(t)
            if window.exact:
                kept = [(s, v) for s, v in samples if s >= t - 60]
            else:
                kept = [(s, v) for s, v in samples if pane(window, s) >= window._panes[0].start]
            values = [v for _, v in kept]
            assert window.count() == len(values)
            assert window.sum() == pytest.approx(math.fsum(values), rel=1e-9, abs=1e-6)
            assert window.min() == min(values) and window.max() == max(values)
            assert window.increase() == pytest.approx(counter_increase(values), rel=1e-9, abs=1e-6)
            assert window.first() == kept[0] and window.last() == kept[-1]
            # Volatility: from sample to sample when exact, from the last sample of a pane to the next's when folded.
            steps = kept if window.exact else list({pane(window, s): (s, v) for s, v in kept}.values())
            span = steps[-1][0] - steps[0][0]
            if len(steps) > 1 and span > 0:
                squares = math.fsum((b - a) ** 2 for (_, a), (_, b) in zip(steps, steps[1:]))
                assert window.variance_rate() == pytest.approx(squares / span, rel=1e-6, abs=1e-6)
            truth = exact_quantile(values, q)
            if window.exact:
                assert window.quantile(q) == truth
            else:
                assert abs(window.quantile(q) - truth) <= DEFAULT_ACCURACY * abs(truth) * 1.0001


def test_value_counts_keep_a_sparse_tail():
    window = Window(3600, exact_limit=1000)
    for i in range(100_000):
        window.add(i * 0.03, 2.0 if i % 10_000 == 5 else 0.05)
    counts = window.counts()
    assert sum(counts.values()) == 100_000
    assert sum(c for v, c in counts.items() if v > 1) == 10


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.floats(-10, 20), st.floats(-1e3, 1e3), st.booleans()), min_size=1, max_size=200),
       st.sampled_from([0.5, 0.99]))
def test_late_samples_keep_the_running_aggregates_equal_to_a_full_recompute(steps, q):
    """Samples up to 10 s late (fills reported out of order) go in their place, in an exact window."""
    window = Window(60)
    samples, newest = [], 0.0
    for gap, value, expire in steps:
        t = max(0.0, newest + gap)
        newest = max(newest, t)
        window.add(t, value)
        samples.append((t, value))
        if expire:
            window.expire(newest)
            kept = sorted([(s, v) for s, v in samples if s >= newest - 60], key=lambda sample: sample[0])
            values = [v for _, v in kept]
            assert window.count() == len(values)
            if not values:
                continue
            assert window.sum() == pytest.approx(math.fsum(values), rel=1e-9, abs=1e-6)
            assert window.min() == min(values) and window.max() == max(values)
            assert window.increase() == pytest.approx(counter_increase(values), rel=1e-9, abs=1e-6)
            assert window.first() == kept[0] and window.last() == kept[-1]
            assert window.quantile(q) == exact_quantile(values, q)
