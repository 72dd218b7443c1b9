"""Policy evaluation on the simulated clock: pass, fail, nodata, inconclusive, each with evidence."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.analysis.evaluator import Evaluator
from controller.analysis.observation import Heartbeat, Observation, labels_of
from controller.analysis.policy import PolicyFile
from controller.analysis.verdict import Outcome
from controller.config.yamlfile import load_model_text

T0 = 1_800_000_000.0


def policies(body: str):
    return load_model_text(PolicyFile, "stage: A\npolicies:\n" + body, "test.yaml").policies


def obs(metric, value, t, source="bot", **labels):
    return Observation(source, metric, labels_of(labels), float(value), t)


MISMATCH = policies("""\
  - name: mismatch
    checklist: "A: mismatch stays 0"
    source: bot
    metric: strategy_leverage_mismatch_total
    aggregate: max
    window: 24h
    condition: "== 0"
    on_breach: rollback
    on_nodata: {action: hold, stale_after: 2m}
""")


def test_an_instant_policy_fails_on_the_observation_that_breaches_it_with_its_evidence():
    ev = Evaluator(MISMATCH)
    ev.heartbeat(Heartbeat("bot", T0))
    (first,) = ev.observe(obs("strategy_leverage_mismatch_total", 0, T0))
    assert first.outcome is Outcome.PASS and first.value == 0 and first.threshold == 0
    (breach,) = ev.observe(obs("strategy_leverage_mismatch_total", 1, T0 + 5))
    assert breach.outcome is Outcome.FAIL and breach.action == "rollback"
    assert (breach.value, breach.samples, breach.window, breach.at) == (1, 2, 86400, T0 + 5)


def test_without_any_heartbeat_a_source_has_no_data_and_the_policy_asks_to_hold():
    (verdict,) = Evaluator(MISMATCH).evaluate(T0)
    assert verdict.outcome is Outcome.NODATA and verdict.action == "hold"
    assert "no data from the bot source" in verdict.reason


def test_a_stale_source_is_nodata_whatever_its_last_values_said():
    ev = Evaluator(MISMATCH)
    ev.heartbeat(Heartbeat("bot", T0))
    ev.observe(obs("strategy_leverage_mismatch_total", 0, T0))
    assert ev.evaluate(T0 + 120)[0].outcome is Outcome.PASS
    ev.heartbeat(Heartbeat("bot", T0 + 130, ok=False, error="connection refused"))
    stale = ev.evaluate(T0 + 121)[0]
    assert stale.outcome is Outcome.NODATA and "connection refused" in stale.reason


LATENCY = policies("""\
  - name: latency-p95
    checklist: "A: p95 < 400 ms"
    source: exchange
    metric: fill_notional_ratio
    aggregate: p95
    window: 10m
    condition: "< 0.400"
    min_samples: 20
    for: 5m
    on_breach: rollback
""")


def feed_values(ev, value, start, seconds, every=10.0, verdicts=None):
    """Observe ``value`` every ``every`` s and judge on each tick, as the daemon does."""
    t = start
    while t < start + seconds:
        ev.heartbeat(Heartbeat("exchange", t))
        ev.observe(obs("fill_notional_ratio", value, t, source="exchange"))
        if verdicts is not None:
            verdicts.append(ev.evaluate(t)[0])
        t += every
    return t


def test_a_breach_must_last_its_for_duration_before_it_fails():
    ev = Evaluator(LATENCY)
    t = feed_values(ev, 0.1, T0, 600)
    assert ev.evaluate(t)[0].outcome is Outcome.PASS
    verdicts = []
    feed_values(ev, 0.9, t, 600, verdicts=verdicts)  # the p95 crosses 0.4 after ~30 s of this
    first_breach = next(v for v in verdicts if v.breaching_since is not None)
    failed = next(v for v in verdicts if v.outcome is Outcome.FAIL)
    assert first_breach.outcome is Outcome.PASS and "breaching for 0 s of 300 s" == first_breach.reason
    assert failed.at - first_breach.at == 300 and failed.breaching_since == first_breach.at
    assert failed.value == pytest.approx(0.9) and failed.action == "rollback"


def test_a_short_spike_does_not_fail_a_policy_with_a_for_duration():
    ev = Evaluator(LATENCY)
    t = feed_values(ev, 0.1, T0, 600)
    t = feed_values(ev, 5.0, t, 60)
    assert ev.evaluate(t)[0].outcome is Outcome.PASS
    t = feed_values(ev, 0.1, t, 600)
    verdict = ev.evaluate(t)[0]
    assert verdict.outcome is Outcome.PASS and verdict.breaching_since is None


def test_too_few_samples_are_inconclusive_not_a_pass():
    ev = Evaluator(LATENCY)
    feed_values(ev, 0.1, T0, 50)
    verdict = ev.evaluate(T0 + 50)[0]
    assert verdict.outcome is Outcome.INCONCLUSIVE and verdict.samples == 5 and "20 needed" in verdict.reason


def test_samples_leave_the_window_at_its_edge():
    ev = Evaluator(MISMATCH)
    ev.observe(obs("strategy_leverage_mismatch_total", 3, T0))
    ev.heartbeat(Heartbeat("bot", T0 + 86400))
    ev.observe(obs("strategy_leverage_mismatch_total", 0, T0 + 86400))
    assert ev.evaluate(T0 + 86400)[0].outcome is Outcome.FAIL       # exactly 24 h old: still in
    assert ev.evaluate(T0 + 86400.5)[0].outcome is Outcome.PASS     # a moment later: out


BUCKETS = policies("""\
  - name: bucket-usage
    checklist: "A: bucket usage within allocation + 2 %"
    source: bot
    metric: strategy_bucket_usage_ratio
    per: [bucket]
    aggregate: max
    window: 5m
    condition: "<= allocation * 1.02"
    on_breach: rollback
""")


def test_groups_are_judged_apart_with_their_own_bindings_and_the_worst_one_speaks():
    allocations = {"majors": 0.5, "alts": 0.3}
    ev = Evaluator(BUCKETS, bindings=lambda policy, group, now: {"allocation": allocations[dict(group)["bucket"]]})
    ev.heartbeat(Heartbeat("bot", T0))
    ev.observe(obs("strategy_bucket_usage_ratio", 0.45, T0, bucket="majors"))
    ev.observe(obs("strategy_bucket_usage_ratio", 0.30, T0, bucket="alts"))
    verdict = ev.evaluate(T0 + 1)[0]
    assert verdict.outcome is Outcome.PASS
    (breach,) = ev.observe(obs("strategy_bucket_usage_ratio", 0.32, T0 + 2, bucket="alts"))
    assert breach.outcome is Outcome.FAIL and dict(breach.group) == {"bucket": "alts"}
    assert breach.threshold == pytest.approx(0.306)
    assert ev.evaluate(T0 + 3)[0].group == (("bucket", "alts"),)


FAILURES = policies("""\
  - name: failure-rate
    checklist: "A: order failure rate < 0.5 %"
    source: bot
    metric: strategy_orders_total
    aggregate: ratio
    numerator: {outcome: [rejected, error]}
    window: 1h
    condition: "< 0.005"
    min_samples: 200
    on_breach: rollback
""")


def test_a_ratio_is_the_numerators_increase_over_all_series_increase():
    ev = Evaluator(FAILURES)
    ev.heartbeat(Heartbeat("bot", T0 + 60))
    for outcome, start, end in (("filled", 100, 398), ("rejected", 3, 4), ("canceled", 10, 10)):
        ev.observe(obs("strategy_orders_total", start, T0, outcome=outcome))
        ev.observe(obs("strategy_orders_total", end, T0 + 60, outcome=outcome))
    verdict = ev.evaluate(T0 + 60)[0]
    assert verdict.samples == 299 and verdict.value == pytest.approx(1 / 299)
    assert verdict.outcome is Outcome.PASS
    ev.observe(obs("strategy_orders_total", 6, T0 + 61, outcome="rejected"))
    ev.observe(obs("strategy_orders_total", 6, T0 + 61, outcome="error"))
    assert ev.evaluate(T0 + 61)[0].outcome is Outcome.FAIL


EXCEPTIONS = policies("""\
  - name: no-exceptions
    checklist: "A: no unhandled exceptions"
    source: logs
    metric: unhandled_exceptions
    aggregate: sum
    window: 24h
    condition: "== 0"
    min_samples: 0
    on_breach: rollback
    on_nodata: {action: hold, stale_after: 5m}
""")


def test_a_fresh_source_with_nothing_to_report_is_a_real_pass_of_zero():
    ev = Evaluator(EXCEPTIONS)
    ev.heartbeat(Heartbeat("logs", T0))
    verdict = ev.evaluate(T0 + 10)[0]
    assert verdict.outcome is Outcome.PASS and verdict.value == 0 and verdict.samples == 0
    (breach,) = ev.observe(obs("unhandled_exceptions", 1, T0 + 20, source="logs", exception="ValueError"))
    assert breach.outcome is Outcome.FAIL and breach.value == 1


FRESHNESS = policies("""\
  - name: margin-fresh
    checklist: "B: no stale margin fractions"
    source: bot
    metric: strategy_margin_fraction_updated_timestamp_seconds
    per: [bucket]
    aggregate: age
    window: 10m
    condition: "< 60"
    on_breach: rollback
""")


def test_age_measures_how_old_a_timestamp_metric_is():
    ev = Evaluator(FRESHNESS)
    ev.heartbeat(Heartbeat("bot", T0 + 100))
    ev.observe(obs("strategy_margin_fraction_updated_timestamp_seconds", T0, T0 + 10, bucket="majors"))
    ev.observe(obs("strategy_margin_fraction_updated_timestamp_seconds", T0 + 90, T0 + 100, bucket="alts"))
    verdict = ev.evaluate(T0 + 100)[0]
    assert verdict.outcome is Outcome.FAIL and verdict.value == 100 and dict(verdict.group) == {"bucket": "majors"}


HISTOGRAM = policies("""\
  - name: signal-p95
    checklist: "A: p95 < 400 ms"
    source: bot
    metric: strategy_signal_latency_seconds
    aggregate: p95
    window: 10m
    condition: "< 0.400"
    min_samples: 50
    on_breach: rollback
""")


def scrape(ev, t, counts):
    """One scrape of a cumulative histogram: counts per upper bound."""
    ev.heartbeat(Heartbeat("bot", t))
    running = 0
    for le, count in counts:
        running += count
        ev.observe(obs("strategy_signal_latency_seconds_bucket", running, t, le=le))


def test_a_bot_histogram_gives_quantiles_of_the_windows_increase_as_prometheus_does():
    ev = Evaluator(HISTOGRAM)
    scrape(ev, T0, [("0.1", 1000), ("0.5", 0), ("+Inf", 0)])                 # old, fast history
    scrape(ev, T0 + 700, [("0.1", 1000), ("0.5", 0), ("+Inf", 0)])
    scrape(ev, T0 + 760, [("0.1", 1010), ("0.5", 90), ("+Inf", 0)])         # the window: 10 fast, 90 slow
    verdict = ev.evaluate(T0 + 760)[0]
    assert verdict.samples == 100
    # p95 is the 95th of 100: 85 into the (0.1, 0.5] bucket of 90 -> 0.1 + 0.4 * 85/90
    assert verdict.value == pytest.approx(0.1 + 0.4 * 85 / 90)
    assert verdict.outcome is Outcome.FAIL


def test_a_source_that_reports_its_data_before_its_heartbeat_is_judged_on_the_heartbeat():
    ev = Evaluator(MISMATCH)
    (early,) = ev.observe(obs("strategy_leverage_mismatch_total", 0, T0))
    assert early.outcome is Outcome.NODATA           # no successful read known yet
    (judged,) = ev.heartbeat(Heartbeat("bot", T0))
    assert judged.outcome is Outcome.PASS and judged.value == 0
    assert ev.heartbeat(Heartbeat("bot", T0 + 1, ok=False, error="boom")) == []


RANKED = policies("""\
  - name: latency-like-baseline
    checklist: "C: compare queue latency"
    source: bot
    metric: strategy_signal_latency_seconds
    aggregate: mann_whitney
    window: 1h
    condition: "< 0.6"
    min_samples: 50
    on_breach: hold
""")


def scrape_histogram(ev, t, counts):
    scrape(ev, t, counts)  # cumulative by construction (see scrape above)


def test_a_rank_test_against_the_baseline_fails_a_clearly_slower_canary_and_passes_an_equal_one():
    baseline = Evaluator(RANKED)
    canary = Evaluator(RANKED, baseline=baseline)
    equal = Evaluator(RANKED, baseline=baseline)
    buckets = ("0.05", "0.1", "0.25", "0.5", "+Inf")
    scrape_histogram(baseline, T0, [(le, 0) for le in buckets])
    scrape_histogram(baseline, T0 + 60, list(zip(buckets, [40, 40, 15, 5, 0])))
    for ev, counts in ((canary, [5, 10, 30, 45, 10]), (equal, [40, 40, 15, 5, 0])):
        scrape_histogram(ev, T0, [(le, 0) for le in buckets])
        scrape_histogram(ev, T0 + 60, list(zip(buckets, counts)))
    slower = canary.evaluate(T0 + 60)[0]
    assert slower.outcome is Outcome.FAIL and slower.value > 0.8 and slower.samples == 100
    same = equal.evaluate(T0 + 60)[0]
    assert same.outcome is Outcome.PASS and same.value == 0.5


class CountingBaseline(Evaluator):
    """A baseline release's evaluator that counts how often its distribution is read."""

    asked = 0

    def distribution(self, policy_name, group, now):
        self.asked += 1
        return super().distribution(policy_name, group, now)


def test_a_rank_test_is_measured_again_only_when_the_canary_or_the_baseline_moved():
    baseline = CountingBaseline(RANKED)
    canary = Evaluator(RANKED, baseline=baseline)
    buckets = ("0.05", "0.1", "0.25", "0.5", "+Inf")
    for ev in (baseline, canary):
        scrape_histogram(ev, T0, [(le, 0) for le in buckets])
        scrape_histogram(ev, T0 + 60, list(zip(buckets, [40, 40, 15, 5, 0])))
    baseline.asked = 0  # (each sample of the canary's scrapes was judged on arrival)
    first = [canary.evaluate(T0 + 60 + tick)[0] for tick in range(5)]
    assert {v.outcome for v in first} == {Outcome.PASS} and baseline.asked == 0  # nothing moved since
    scrape_histogram(baseline, T0 + 65, list(zip(buckets, [40, 40, 15, 5, 1])))
    canary.evaluate(T0 + 66)
    canary.evaluate(T0 + 67)
    assert baseline.asked == 1  # the baseline moved
    canary.heartbeat(Heartbeat("bot", T0 + 70))
    canary.observe_many([obs("strategy_signal_latency_seconds_bucket", count, T0 + 70, le=le)
                         for le, count in zip(buckets, [40, 80, 95, 101, 101])])
    canary.evaluate(T0 + 71)
    canary.evaluate(T0 + 72)
    assert baseline.asked == 2  # the canary moved (its scrape judged once it was all in), then nothing


def test_a_scrape_judges_each_instant_group_it_touched_once():
    ev = Evaluator(BUCKETS, bindings=lambda policy, group, now: {"allocation": 0.5})
    ev.heartbeat(Heartbeat("bot", T0))
    scraped = [obs("strategy_bucket_usage_ratio", value, T0 + 1, bucket=bucket, part=part)
               for bucket, part, value in [("majors", "a", 0.6), ("majors", "b", 0.7), ("alts", "a", 0.1)]]
    verdicts = ev.observe_many(scraped)
    # One verdict per group, on the whole scrape (one by one: a fail on 0.6, another on 0.7).
    assert [(v.outcome, dict(v.group)["bucket"], v.value) for v in verdicts] == \
        [(Outcome.FAIL, "majors", 0.7), (Outcome.PASS, "alts", 0.1)]


def test_a_rank_test_without_a_baseline_has_no_data():
    ev = Evaluator(RANKED)
    scrape(ev, T0, [("0.1", 0), ("+Inf", 0)])
    scrape(ev, T0 + 60, [("0.1", 80), ("+Inf", 0)])
    assert ev.evaluate(T0 + 60)[0].outcome is Outcome.NODATA


def test_a_source_that_restarts_has_no_data_until_it_reads_again():
    ev = Evaluator(MISMATCH)
    ev.heartbeat(Heartbeat("bot", T0))
    (passing,) = ev.observe(obs("strategy_leverage_mismatch_total", 0, T0))
    assert passing.outcome is Outcome.PASS
    failed_read = ev.heartbeat(Heartbeat("bot", T0 + 1, ok=False, error="scrape refused"))
    assert failed_read == []  # a lost read: fresh until stale_after
    (stopped,) = ev.heartbeat(Heartbeat("bot", T0 + 2, ok=False, error="parser bug", restarting=True))
    assert stopped.outcome is Outcome.NODATA
    assert "parser bug" in stopped.reason
    (back,) = ev.heartbeat(Heartbeat("bot", T0 + 3))
    assert back.outcome is Outcome.PASS


# --- fail closed: an error while judging, a non-finite sample, a flood of label values ---------------

JUDGED_APART = policies("""\
  - name: usage-a
    checklist: "A: usage within allocation"
    source: bot
    metric: strategy_bucket_usage_ratio
    per: [bucket]
    aggregate: max
    window: 5m
    condition: "<= allocation * 2"
    on_breach: rollback
  - name: usage-b
    checklist: "A: usage bounded"
    source: bot
    metric: strategy_bucket_usage_ratio
    aggregate: max
    window: 5m
    condition: "< 0.9"
    on_breach: rollback
  - name: usage-c
    checklist: "A: usage within allocation"
    source: bot
    metric: strategy_bucket_usage_ratio
    aggregate: max
    window: 5m
    condition: "!= allocation * 10"
    on_breach: rollback
""")


@pytest.mark.parametrize("bound, reason", [
    (ZeroDivisionError("float division by zero"), "ZeroDivisionError: float division by zero"),
    ({"allocation": float("nan")}, "'allocation' is not a finite number"),
    ({"allocation": 1e308}, "is not a finite number"),
])
def test_an_error_while_judging_is_an_inconclusive_verdict_and_the_other_policies_are_still_judged(bound, reason):
    def bindings(policy, group, now):
        if isinstance(bound, Exception):
            raise bound
        return bound

    ev = Evaluator(JUDGED_APART, bindings=bindings)
    ev.heartbeat(Heartbeat("bot", T0))
    instant = ev.observe(obs("strategy_bucket_usage_ratio", 0.3, T0, bucket="majors"))
    assert [v.outcome for v in instant] == [Outcome.INCONCLUSIVE, Outcome.PASS, Outcome.INCONCLUSIVE]
    by_name = {v.policy: v for v in ev.evaluate(T0 + 1)}
    assert by_name["usage-b"].outcome is Outcome.PASS
    for name in ("usage-a", "usage-c"):
        assert by_name[name].outcome is Outcome.INCONCLUSIVE and reason in by_name[name].reason


USAGE = policies("""\
  - name: usage-limit
    checklist: "A: usage within allocation"
    source: bot
    metric: strategy_bucket_usage_ratio
    aggregate: max
    window: 5m
    condition: "<= 0.255"
    on_breach: rollback
    on_nodata: {action: hold, stale_after: 2m}
""")


@pytest.mark.parametrize("bad, reason", [(float("nan"), "nan"), (float("inf"), "inf"), (float("-inf"), "inf")])
def test_a_non_finite_sample_never_enters_a_window_it_is_counted_and_its_group_has_no_data(bad, reason):
    ev = Evaluator(USAGE)
    outcomes = []
    for offset, value in ((0, 0.10), (15, bad), (30, 0.50)):
        ev.heartbeat(Heartbeat("bot", T0 + offset))
        outcomes += [v.outcome for v in ev.observe(obs("strategy_bucket_usage_ratio", value, T0 + offset))]
        outcomes += [v.outcome for v in ev.evaluate(T0 + offset + 1)]
    # usage 0.10, then a non-finite sample (nodata until a finite one arrives), then 0.50: a breach
    assert outcomes == [Outcome.PASS, Outcome.PASS, Outcome.NODATA, Outcome.NODATA, Outcome.FAIL, Outcome.FAIL]
    assert ev.take_rejections() == {reason: 1}
    assert ev.take_rejections() == {}           # each rejection is handed to the shell once


def test_a_non_finite_sample_of_one_group_leaves_the_other_groups_judged():
    ev = Evaluator(BUCKETS, bindings=lambda policy, group, now: {"allocation": 0.5})
    ev.heartbeat(Heartbeat("bot", T0))
    ev.observe(obs("strategy_bucket_usage_ratio", 0.2, T0, bucket="majors"))
    (nodata,) = ev.observe(obs("strategy_bucket_usage_ratio", float("nan"), T0, bucket="alts"))
    assert nodata.outcome is Outcome.NODATA and "NaN" in nodata.reason and nodata.action == "hold"
    (breach,) = ev.observe(obs("strategy_bucket_usage_ratio", 0.9, T0 + 1, bucket="majors"))
    assert breach.outcome is Outcome.FAIL                            # a breach elsewhere still speaks
    assert ev.evaluate(T0 + 2)[0].outcome is Outcome.FAIL


def test_a_group_whose_label_value_vanished_is_evicted_and_no_longer_holds_the_policy():
    ev = Evaluator(BUCKETS, bindings=lambda policy, group, now: {"allocation": 0.5})
    for t in range(0, 900, 15):
        ev.heartbeat(Heartbeat("bot", T0 + t))
        ev.observe(obs("strategy_bucket_usage_ratio", 0.2, T0 + t, bucket="majors"))
        if t < 60:
            ev.observe(obs("strategy_bucket_usage_ratio", 0.2, T0 + t, bucket="retired"))
    # 'retired' last reported at T0+45: its 5 m window is empty from T0+345 and shows nodata for its
    # stale_after (2 m, an instant policy); then it is forgotten and the groups that still report speak.
    assert ev.evaluate(T0 + 460)[0].outcome is Outcome.NODATA
    assert ev.evaluate(T0 + 470)[0].outcome is Outcome.PASS
    assert ev.series_count("bucket-usage") == 1


FLOOD = policies("""\
  - name: orders-per-client-id
    checklist: "A: order sizes bounded"
    source: bot
    metric: strategy_order_notional
    aggregate: max
    per: [client_id]
    window: 1m
    condition: "< 1000"
    on_breach: rollback
""")


def flood(ev, start, count, prefix):
    """A bot that exports a new label value per order: one series each, never seen again."""
    ev.heartbeat(Heartbeat("bot", start))
    for n in range(count):
        ev.observe(obs("strategy_order_notional", 10.0, start + n * 0.01, client_id=f"{prefix}-{n}"))


def test_a_label_cardinality_flood_is_capped_inconclusive_and_freed_after_the_window():
    import tracemalloc

    from controller.analysis.evaluator import MAX_SERIES_PER_POLICY

    ev = Evaluator(FLOOD)
    tracemalloc.start()
    try:
        flood(ev, T0, 5 * MAX_SERIES_PER_POLICY, "a")
        assert ev.series_count("orders-per-client-id") == MAX_SERIES_PER_POLICY
        capped = ev.evaluate(T0 + 50)[0]
        assert capped.outcome is Outcome.INCONCLUSIVE and f"more than {MAX_SERIES_PER_POLICY} series" in capped.reason
        ev.heartbeat(Heartbeat("bot", T0 + 300))
        after = ev.evaluate(T0 + 300)[0]                # evicted: no data, and nothing refused any more
        assert after.outcome is Outcome.NODATA and after.reason == "no samples in the window"
        assert ev.series_count("orders-per-client-id") == 0
        settled = None
        for round_ in range(3):
            start = T0 + 1000 * (round_ + 1)
            flood(ev, start, 5 * MAX_SERIES_PER_POLICY, f"r{round_}")
            ev.heartbeat(Heartbeat("bot", start + 300))
            ev.evaluate(start + 300)
            assert ev.series_count("orders-per-client-id") == 0
            if settled is None:
                settled = tracemalloc.get_traced_memory()[0]
        # flat: further floods, each evicted, leave no more than the second one did (generous bound)
        assert tracemalloc.get_traced_memory()[0] < settled + 256 * 1024
    finally:
        tracemalloc.stop()


def test_rate_is_a_counters_increase_per_second_over_the_window():
    (restarts,) = policies("""\
  - name: restart-rate
    checklist: "C: the bot does not crash-loop"
    source: process
    metric: restarts
    aggregate: rate
    window: 10m
    condition: "< 0.005"
    on_breach: rollback
""")
    ev = Evaluator([restarts])
    ev.heartbeat(Heartbeat("process", T0 + 300))
    for t, total in ((0, 7), (100, 8), (200, 0), (300, 2)):      # a reset at 200: the counter restarted
        ev.observe(obs("restarts", total, T0 + t, source="process"))
    verdict = ev.evaluate(T0 + 300)[0]
    assert verdict.value == pytest.approx(3 / 600) and verdict.outcome is Outcome.FAIL


def test_a_rank_test_ranks_every_observation_of_a_histogram_the_sparse_tail_too():
    """100 000 observations with 9 slow ones: all ranked, none rounded away."""
    baseline = Evaluator(RANKED)
    canary = Evaluator(RANKED, baseline=baseline)
    buckets = ("0.05", "0.1", "1", "2.5", "+Inf")
    for ev, counts in ((baseline, [100_000, 0, 0, 0, 0]), (canary, [99_991, 0, 0, 9, 0])):
        scrape_histogram(ev, T0, [(le, 0) for le in buckets])
        scrape_histogram(ev, T0 + 60, list(zip(buckets, counts)))
    verdict = canary.evaluate(T0 + 60)[0]
    assert verdict.samples == 100_000
    slow = {value: count for value, count in canary.distribution("latency-like-baseline", (), T0 + 60).items()
            if value > 1}
    assert slow == {1.75: 9}  # the (1, 2.5] bucket's midpoint


MEASURED = policies("""\
  - name: usage-max
    checklist: "A: usage"
    source: bot
    metric: strategy_bucket_usage_ratio
    per: [bucket]
    aggregate: max
    window: 60s
    condition: "< 0.5"
    on_breach: rollback
  - name: usage-mean
    checklist: "A: usage"
    source: bot
    metric: strategy_bucket_usage_ratio
    per: [bucket]
    aggregate: mean
    window: 90s
    condition: "< 0.5"
    on_breach: rollback
  - name: usage-p90
    checklist: "A: usage"
    source: bot
    metric: strategy_bucket_usage_ratio
    per: [bucket]
    aggregate: p90
    window: 45s
    condition: "< 0.5"
    on_breach: rollback
  - name: orders-increase
    checklist: "A: orders"
    source: bot
    metric: strategy_orders_total
    per: [symbol]
    aggregate: increase
    window: 120s
    condition: "< 1000"
    on_breach: rollback
  - name: usage-sum-over-buckets
    checklist: "A: usage"
    source: bot
    metric: strategy_bucket_usage_ratio
    aggregate: sum
    window: 75s
    condition: "< 5"
    on_breach: rollback
  - name: usage-mean-over-buckets
    checklist: "A: usage"
    source: bot
    metric: strategy_bucket_usage_ratio
    aggregate: mean
    window: 50s
    condition: "< 0.5"
    on_breach: rollback
  - name: usage-min-over-buckets
    checklist: "A: usage"
    source: bot
    metric: strategy_bucket_usage_ratio
    aggregate: min
    window: 40s
    condition: "< 0.5"
    on_breach: rollback
""")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 15), st.sampled_from(["a", "b", "c"]), st.floats(0, 1), st.booleans()),
                min_size=1, max_size=120))
def test_measures_kept_between_ticks_equal_a_fresh_evaluators(steps):
    """The evaluator measures and judges a group again only when one of its windows moved (a group of
    several series: only the series that moved): at every tick its verdicts and values equal those
    of an evaluator fed the same samples and judging for the first time."""
    kept = Evaluator(MEASURED)
    fed: list[Observation] = []
    t = T0
    for gap, label, value, tick in steps:
        t += gap
        sample = ([obs("strategy_bucket_usage_ratio", value, t, bucket=label)] if value < 0.7 else
                  [obs("strategy_orders_total", round(value * 100), t, symbol=label)])
        for item in [*sample, Heartbeat("bot", t)]:
            kept.feed(item)
            fed.append(item)
        if tick:
            fresh = Evaluator(MEASURED)
            for item in fed:
                fresh.feed(item)
            for ours, theirs in zip(kept.evaluate(t), fresh.evaluate(t), strict=True):
                assert (ours.policy, ours.outcome, ours.samples, ours.at) == \
                    (theirs.policy, theirs.outcome, theirs.samples, theirs.at)
                assert (ours.value is None and theirs.value is None) or \
                    ours.value == pytest.approx(theirs.value, rel=1e-12, abs=1e-12)
            for policy in MEASURED:
                for group in [(("bucket", x),) for x in "abc"] + [(("symbol", x),) for x in "abc"] + [()]:
                    ours, theirs = kept.value(policy.name, group, t), fresh.value(policy.name, group, t)
                    assert (ours is None and theirs is None) or ours == pytest.approx(theirs, rel=1e-12, abs=1e-12), \
                        (policy.name, group, ours, theirs)


def test_a_group_of_several_series_is_measured_again_as_samples_leave_one_of_them():
    """Measured once, then the windows expire: the group's figures follow what each series still holds."""
    ev = Evaluator(MEASURED)
    for t, bucket, value in ((T0, "a", 0.6), (T0 + 10, "a", 0.1), (T0 + 20, "b", 0.2)):
        ev.feed(obs("strategy_bucket_usage_ratio", value, t, bucket=bucket))
        ev.feed(Heartbeat("bot", t))
    assert ev.value("usage-min-over-buckets", (), T0 + 20) == 0.1
    ev.feed(Heartbeat("bot", T0 + 60))
    judged = {v.policy: (v.value, v.samples) for v in ev.evaluate(T0 + 60)}
    assert judged["usage-min-over-buckets"] == (0.2, 1)  # a's samples left its 40 s window
    assert judged["usage-mean-over-buckets"] == (pytest.approx(0.15), 2)  # a's first sample left its 50 s
    assert judged["usage-sum-over-buckets"] == (pytest.approx(0.9), 3)
    ev.feed(Heartbeat("bot", T0 + 80))
    assert ev.value("usage-sum-over-buckets", (), T0 + 80) == pytest.approx(0.3)


def test_a_pending_group_speaks_for_its_policy_over_plain_passes_and_says_when_it_fails():
    """Of passing groups, one whose breach is in the making is the policy's verdict: a person must see it;
    the outcome the gate reads is a pass either way."""
    (policy,) = policies("""\
  - name: fill-ratio
    checklist: "C3: sizing"
    source: exchange
    metric: fill_notional_ratio
    aggregate: max
    per: [symbol]
    window: 10m
    condition: "<= 1.0"
    for: 5m
    on_breach: rollback
    on_nodata: {action: hold, stale_after: 2m}
""")
    ev = Evaluator([policy])
    ev.heartbeat(Heartbeat("exchange", T0))
    ev.observe(obs("fill_notional_ratio", 0.5, T0, source="exchange", symbol="BTCUSDT"))
    ev.observe(obs("fill_notional_ratio", 1.5, T0 + 10, source="exchange", symbol="SOLUSDT"))
    ev.heartbeat(Heartbeat("exchange", T0 + 30))
    (verdict,) = ev.evaluate(T0 + 30)
    assert (verdict.outcome, verdict.group, verdict.pending) == (Outcome.PASS, (("symbol", "SOLUSDT"),), True)
    assert (verdict.breaching_since, verdict.fails_at) == (T0 + 30, T0 + 330)


def test_a_pass_judged_at_a_time_counts_the_samples_that_came_at_that_same_time_after_it():
    # The second sample leaves the minimum as it was, so the pass judged on the first stands: it must
    # still say it rests on both (found by the property test above, on a window that had just emptied).
    ev = Evaluator(MEASURED)
    ev.feed(Heartbeat("bot", T0))
    for _ in range(2):
        ev.feed(obs("strategy_bucket_usage_ratio", 0.1, T0 + 41, bucket="a"))
    [judged] = [v for v in ev.evaluate(T0 + 41) if v.policy == "usage-min-over-buckets"]
    assert (judged.outcome, judged.value, judged.samples) == (Outcome.PASS, 0.1, 2)
