"""histogram_quantile as PromQL computes it, and the windowed buckets it is computed over.

The hand-computed cases are Prometheus' own (promql/promqltest/testdata/histograms.test: the
series at the evaluation time, bucket by bucket); the generated cases check the documented error
bound: the answer and the exact quantile lie in the same bucket.
"""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from controller.analysis.histogram import bucket_increase, histogram_quantile, quantile_bucket
from reference_bot.metrics import LATENCY_BUCKETS

INF = math.inf
# testhistogram at 50m: one histogram whose lowest bound is positive, one whose lowest is negative.
POSITIVE = {"0.1": 50, ".2": 70, "1e0": 110, "+Inf": 120}
NEGATIVE = {"-.2": 10, "-0.1": 20, "0.3": 20, "+Inf": 30}
# testhistogram2: q(1/6), q(1/2), q(5/6) fall in the middle of a bucket.
MIDDLES = {"0": 0, "2": 1, "4": 2, "6": 3, "+Inf": 3}
# testhistogram3: empty lowest buckets, nothing in +Inf.
POSITIVE3 = {"0": 0, "0.1": 50, ".2": 70, "1e0": 110, "+Inf": 110}
NEGATIVE3 = {"-.25": 0, "-.2": 10, "-0.1": 20, "0.3": 20, "+Inf": 20}
NONMONOTONIC = {"0.1": 20, "1": 10, "10": 50, "100": 40, "1000": 90, "+Inf": 80}


@pytest.mark.parametrize(("q", "buckets", "expected"), [
    (0, POSITIVE, 0), (0, NEGATIVE, -0.2),
    (1, POSITIVE, 1), (1, NEGATIVE, 0.3),
    (0.2, POSITIVE, 0.048), (0.2, NEGATIVE, -0.2),
    (0.5, POSITIVE, 0.15), (0.5, NEGATIVE, -0.15),
    (0.8, POSITIVE, 0.72), (0.8, NEGATIVE, 0.3),
    (1 / 6, MIDDLES, 1), (0.5, MIDDLES, 3), (5 / 6, MIDDLES, 5),
    (0, POSITIVE3, 0), (0, NEGATIVE3, -0.25),
    (0.25, POSITIVE3, 0.055), (0.25, NEGATIVE3, -0.225),
    (0.5, POSITIVE3, 0.125), (0.5, NEGATIVE3, -0.2),
    (0.75, POSITIVE3, 0.45), (0.75, NEGATIVE3, -0.15),
    (1, POSITIVE3, 1), (1, NEGATIVE3, -0.1),
])
def test_matches_prometheus_own_test_cases(q, buckets, expected):
    assert histogram_quantile(q, buckets) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("q", "expected"), [(0.01, 0.0045), (0.5, 8.5), (0.99, 979.75)])
def test_non_monotonic_buckets_are_read_through_their_envelope(q, expected):
    assert histogram_quantile(q, NONMONOTONIC) == pytest.approx(expected)


def test_buckets_of_one_bound_written_differently_are_one_bucket():
    mixed = [("0.1", 10), ("0.2", 10), ("2e-1", 10), ("2.0e-1", 10), ("+Inf", 40)]
    assert histogram_quantile(0.5, mixed) == pytest.approx(0.15)
    assert histogram_quantile(0.75, mixed) == pytest.approx(0.2)
    assert histogram_quantile(1, mixed) == pytest.approx(0.2)


def test_buckets_aggregated_over_instances_interpolate_like_prometheus():
    summed = {0.1: 1 + 2 + 3 + 4, 0.2: 3 + 5 + 4 + 7, INF: 4 + 6 + 6 + 9}
    assert histogram_quantile(0.3, summed) == pytest.approx(0.075)
    assert histogram_quantile(0.5, summed) == pytest.approx(0.1277777777777778)


def test_float_noise_between_neighbouring_buckets_is_ignored():
    noisy = {0.1: 10.0, 0.2: 10.0 * (1 + 1e-15), 0.4: 10.0, INF: 20.0}
    assert histogram_quantile(0.5, noisy) == pytest.approx(0.1)


def test_the_order_of_the_buckets_does_not_matter():
    shuffled = list(POSITIVE.items())
    random.Random(1).shuffle(shuffled)
    assert histogram_quantile(0.5, shuffled) == histogram_quantile(0.5, POSITIVE)


def test_no_buckets_at_all_is_no_answer():
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, []) is None


@pytest.mark.parametrize("buckets", [
    {"0.1": 0, "0.2": 0, "+Inf": 0},  # no observations
    {"+Inf": 5},  # fewer than two buckets
    {"+inf": 0, "+Inf": 0},  # ... once merged
    {"0.1": 3, "0.2": 5},  # no +Inf bucket
])
def test_buckets_that_define_no_quantile_give_nan(buckets):
    assert math.isnan(histogram_quantile(0.5, buckets))


def test_q_outside_zero_to_one_is_infinite_and_nan_is_nan():
    assert histogram_quantile(-0.1, POSITIVE) == -INF
    assert histogram_quantile(1.01, POSITIVE) == INF
    assert math.isnan(histogram_quantile(math.nan, POSITIVE))


def test_the_zero_quantile_of_an_empty_lowest_bucket_is_nan_as_in_go():
    assert math.isnan(histogram_quantile(0, {"0.1": 0, "0.2": 4, "+Inf": 4}))


def test_a_quantile_in_the_inf_bucket_is_the_highest_finite_bound():
    assert histogram_quantile(0.99, {"0.1": 1, "0.5": 2, "+Inf": 10}) == 0.5
    assert quantile_bucket(0.99, {"0.1": 1, "0.5": 2, "+Inf": 10}) == (0.5, INF)


def test_the_containing_bucket_is_the_error_bound():
    assert quantile_bucket(0.2, POSITIVE) == (0.0, 0.1)
    assert quantile_bucket(0.5, POSITIVE) == (0.1, 0.2)
    assert quantile_bucket(0, NEGATIVE) == (-INF, -0.2)
    assert quantile_bucket(0.5, {"0.1": 0, "+Inf": 0}) is None
    assert quantile_bucket(1.5, POSITIVE) is None


# --- generated data: the answer lies in the bucket of the exact quantile -------------------------

def cumulative(values: list[float], bounds=LATENCY_BUCKETS) -> dict[float, float]:
    buckets = {float(le): sum(1 for v in values if v <= le) for le in bounds}
    buckets[INF] = len(values)
    return buckets


def exact_quantile(q: float, values: list[float]) -> float:
    """The smallest value with at least q * n values at or below it (the rank PromQL looks for)."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_within_bucket(q: float, values: list[float], buckets) -> None:
    estimate = histogram_quantile(q, buckets)
    lower, upper = quantile_bucket(q, buckets)
    exact = exact_quantile(q, values)
    assert lower < exact <= upper
    if math.isinf(upper):  # beyond the last finite bound: the estimate is only a lower bound
        assert estimate == lower <= exact
    else:
        assert lower <= estimate <= upper
        assert abs(estimate - exact) <= upper - lower


@pytest.mark.parametrize("q", [0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0])
def test_latencies_from_a_real_prometheus_histogram_give_quantiles_within_their_bucket(q):
    rng = random.Random(42)
    values = [rng.lognormvariate(math.log(0.12), 0.8) for _ in range(20_000)]
    registry = CollectorRegistry()
    latency = Histogram("latency_seconds", "generated", buckets=LATENCY_BUCKETS, registry=registry)
    for value in values:
        latency.observe(value)
    buckets = [(s.labels["le"], s.value) for metric in registry.collect() for s in metric.samples
               if s.name == "latency_seconds_bucket"]
    assert ("+Inf", 20_000) in buckets
    assert_within_bucket(q, values, buckets)


@given(values=st.lists(st.floats(min_value=1e-6, max_value=10.0), min_size=1, max_size=300),
       q=st.floats(min_value=1e-9, max_value=1.0))
def test_any_positive_data_gives_a_quantile_within_the_bucket_of_the_exact_one(values, q):
    assert_within_bucket(q, values, cumulative(values))


# --- bucket_increase -------------------------------------------------------------------------------

def test_the_increase_between_snapshots_is_the_histogram_of_the_window():
    rng = random.Random(7)
    before = [rng.uniform(0, 0.3) for _ in range(500)]
    window = [rng.uniform(0.1, 1.2) for _ in range(300)]
    increase = bucket_increase(cumulative(before), cumulative(before + window))
    assert increase == cumulative(window)
    assert histogram_quantile(0.5, increase) == histogram_quantile(0.5, cumulative(window))


def test_le_labels_as_prometheus_writes_them_are_accepted():
    assert bucket_increase({"0.1": 1, "+Inf": 2}, {"0.1": 4, "+Inf": 9}) == {0.1: 3, INF: 7}


def test_a_counter_reset_means_a_restart_and_the_newer_snapshot_is_the_increase():
    older = {0.1: 40, 0.5: 90, INF: 100}
    restarted = {0.1: 3, 0.5: 95, INF: 101}  # one bucket went down: the process started over
    assert bucket_increase(older, restarted) == restarted


def test_a_changed_bucket_layout_means_a_restart():
    older = {0.1: 40, 0.5: 90, INF: 100}
    relaid = {0.1: 41, 0.25: 60, 0.5: 95, INF: 101}
    assert bucket_increase(older, relaid) == relaid


def test_no_new_observations_is_an_empty_window_whose_quantile_is_nan():
    snapshot = {0.1: 40, 0.5: 90, INF: 100}
    increase = bucket_increase(snapshot, snapshot)
    assert increase == {0.1: 0, 0.5: 0, INF: 0}
    assert math.isnan(histogram_quantile(0.5, increase))
