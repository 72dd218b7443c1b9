"""The controller's canary_* metrics, read back from the exposition: verdicts (a breach counts once
until it clears), rollouts, rollbacks, detection latency, exchange accounts, operator commands."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from controller.analysis.verdict import Outcome, Verdict, group_text
from controller.metrics import EXPORTED_NAMES, ROLLBACK_TRIGGERS, ROLLOUT_STATES, ControllerMetrics
from tests.support.controller_metrics import every_family_set


def verdict(outcome, value, action=None):
    return Verdict(policy="a-mismatch", outcome=outcome, at=0.0, value=value, threshold=0.0, condition="== 0",
                   window=60.0, samples=1, action=action)


def samples(metrics):
    text = metrics.render().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_the_current_outcome_value_and_breaches_are_exported():
    metrics = ControllerMetrics()
    metrics.record_verdicts([verdict(Outcome.PASS, 0.0)])
    metrics.record_verdicts([verdict(Outcome.FAIL, 2.0, "rollback")] * 3)
    got = samples(metrics)
    assert got[("canary_policy_verdict", (("group", ""), ("outcome", "fail"), ("policy", "a-mismatch")))] == 1
    assert got[("canary_policy_verdict", (("group", ""), ("outcome", "pass"), ("policy", "a-mismatch")))] == 0
    assert got[("canary_policy_value", (("group", ""), ("policy", "a-mismatch")))] == 2.0
    assert got[("canary_policy_breaches_total", (("action", "rollback"), ("group", ""), ("policy", "a-mismatch")))] == 1
    metrics.record_verdicts([verdict(Outcome.NODATA, None, "hold"), verdict(Outcome.FAIL, 3.0, "rollback")])
    got = samples(metrics)
    assert got[("canary_policy_breaches_total", (("action", "rollback"), ("group", ""), ("policy", "a-mismatch")))] == 2
    metrics.record_verdicts([verdict(Outcome.NODATA, None, "hold")])
    assert math.isnan(samples(metrics)[("canary_policy_value", (("group", ""), ("policy", "a-mismatch")))])


def series(metrics, name, **labels):
    """The samples named ``name`` whose labels include ``labels``, keyed by their full label set."""
    return {key[1]: value for key, value in samples(metrics).items()
            if key[0] == name and set(labels.items()) <= set(key[1])}


def test_a_rollout_exports_every_known_state_with_only_the_current_one_at_1():
    metrics = ControllerMetrics()
    metrics.set_rollout_state(7, "v1.4.0", "running")
    metrics.set_rollout_state(7, "v1.4.0", "awaiting_signoff")
    got = series(metrics, "canary_rollout_state", rollout="7")
    assert {dict(labels)["state"] for labels in got} == set(ROLLOUT_STATES)
    assert [dict(labels)["state"] for labels, value in got.items() if value == 1] == ["awaiting_signoff"]
    assert sum(got.values()) == 1


def test_a_rollout_state_outside_the_known_list_is_refused():
    with pytest.raises(ValueError, match="unknown rollout state 'exploded'"):
        ControllerMetrics().set_rollout_state(1, "v1", "exploded")


def test_a_rollout_under_a_new_release_label_drops_the_old_release_series():
    metrics = ControllerMetrics()
    metrics.set_rollout_state(3, "v1", "running")
    metrics.set_rollout_state(3, "v2", "paused")
    assert {dict(labels)["release"] for labels in series(metrics, "canary_rollout_state", rollout="3")} == {"v2"}


def test_a_stage_change_replaces_the_old_stage_series():
    metrics = ControllerMetrics()
    metrics.set_rollout_stage(7, "v1.4.0", "A")
    metrics.set_rollout_stage(8, "v1.5.0", "A")
    metrics.set_rollout_stage(7, "v1.4.0", "B")
    assert series(metrics, "canary_rollout_stage_info") == {
        (("release", "v1.4.0"), ("rollout", "7"), ("stage", "B")): 1,
        (("release", "v1.5.0"), ("rollout", "8"), ("stage", "A")): 1,
    }


def test_stage_time_remaining_is_per_rollout_and_never_negative():
    metrics = ControllerMetrics()
    metrics.set_stage_remaining(7, 90.5)
    metrics.set_stage_remaining(8, -3.0)
    assert series(metrics, "canary_stage_time_remaining_seconds") == {
        (("rollout", "7"),): 90.5, (("rollout", "8"),): 0.0}


def test_rollbacks_count_by_trigger_from_zero_and_failures_by_step():
    metrics = ControllerMetrics()
    assert series(metrics, "canary_rollbacks_total") == {(("trigger", t),): 0 for t in ROLLBACK_TRIGGERS}
    metrics.rollback_started("policy")
    metrics.rollback_started("policy")
    metrics.rollback_failed("restore_unit")
    got = series(metrics, "canary_rollbacks_total")
    assert got[(("trigger", "policy"),)] == 2 and sum(got.values()) == 2
    assert series(metrics, "canary_rollback_failures_total") == {(("step", "restore_unit"),): 1}


def test_rollback_duration_is_a_histogram_from_50_ms_to_2_minutes():
    metrics = ControllerMetrics()
    metrics.rollback_finished(3.0)
    buckets = {dict(labels)["le"]: value for labels, value in series(metrics, "canary_rollback_duration_seconds_bucket").items()}
    assert buckets["0.05"] == 0 and buckets["2.5"] == 0 and buckets["5.0"] == 1 and buckets["120.0"] == 1
    assert sorted(float(le) for le in buckets)[-2:] == [120.0, math.inf]
    assert series(metrics, "canary_rollback_duration_seconds_count") == {(): 1}
    assert series(metrics, "canary_rollback_duration_seconds_sum") == {(): 3.0}


def test_detection_latency_is_a_histogram_from_5_ms_to_a_minute():
    metrics = ControllerMetrics()
    metrics.observe_detection(0.02)
    metrics.observe_detection(45.0)
    buckets = {dict(labels)["le"]: value for labels, value in series(metrics, "canary_detection_latency_seconds_bucket").items()}
    assert buckets["0.005"] == 0 and buckets["0.025"] == 1 and buckets["30.0"] == 1 and buckets["60.0"] == 2
    assert sorted(float(le) for le in buckets)[0] == 0.005
    assert series(metrics, "canary_detection_latency_seconds_count") == {(): 2}


def test_exchange_weight_and_stream_connection_are_per_account():
    metrics = ControllerMetrics()
    metrics.set_weight_used("canary", 120)
    metrics.set_stream_connected("canary", True)
    metrics.set_stream_connected("master", True)
    metrics.set_stream_connected("canary", False)
    assert series(metrics, "canary_exchange_weight_used") == {(("account", "canary"),): 120}
    assert series(metrics, "canary_stream_connected") == {(("account", "canary"),): 0, (("account", "master"),): 1}


def test_operator_commands_count_by_kind_and_outcome():
    metrics = ControllerMetrics()
    metrics.command_handled("pause", "done")
    metrics.command_handled("pause", "done")
    metrics.command_handled("promote", "refused")
    assert series(metrics, "canary_operator_commands_total") == {
        (("kind", "pause"), ("outcome", "done")): 2, (("kind", "promote"), ("outcome", "refused")): 1}


def test_runner_crashes_count_per_rollout_from_zero_and_store_errors_count():
    metrics = ControllerMetrics()
    metrics.runner_started(4)
    assert series(metrics, "canary_runner_crashes_total") == {(("rollout", "4"),): 0}
    metrics.runner_crashed(4)
    metrics.runner_crashed(4)
    metrics.store_error()
    assert series(metrics, "canary_runner_crashes_total") == {(("rollout", "4"),): 2}
    assert series(metrics, "canary_store_errors_total") == {(): 1}


def test_the_daemon_start_time_is_exported():
    metrics = ControllerMetrics()
    metrics.started(1_700_000_000.5)
    assert series(metrics, "canary_daemon_start_time_seconds") == {(): 1_700_000_000.5}


def test_exported_names_are_the_sample_names_the_exposition_carries():
    metrics = every_family_set()
    exposed = {name for name, _labels in samples(metrics)}
    assert exposed <= EXPORTED_NAMES
    # _created series follow a library switch (PROMETHEUS_DISABLE_CREATED_SERIES); every other name must appear.
    assert {name for name in EXPORTED_NAMES if not name.endswith("_created")} <= exposed
    assert {"canary_rollbacks_total", "canary_rollback_duration_seconds_bucket",
            "canary_rollback_duration_seconds_sum", "canary_rollback_duration_seconds_count"} <= EXPORTED_NAMES


def test_verdicts_are_exported_per_group_and_a_breach_counts_once_per_group_transition():
    metrics = ControllerMetrics()
    btc, eth = (("symbol", "BTCUSDT"),), (("symbol", "ETHUSDT"),)

    def judged(outcome, group, action=None):
        return Verdict(policy="c-leverage", outcome=outcome, at=0.0, value=1.0, threshold=0.0, condition="== 0",
                       window=60.0, samples=1, group=group, action=action)

    # One continuous breach on BTC while ETH keeps passing: the verdicts alternate between groups.
    for _ in range(50):
        metrics.record_verdicts([judged(Outcome.FAIL, btc, "rollback"), judged(Outcome.PASS, eth)])
    value = metrics.registry.get_sample_value
    assert value("canary_policy_breaches_total", {"policy": "c-leverage", "group": "symbol=BTCUSDT",
                                                  "action": "rollback"}) == 1
    assert value("canary_policy_verdict", {"policy": "c-leverage", "group": "symbol=BTCUSDT", "outcome": "fail"}) == 1
    assert value("canary_policy_verdict", {"policy": "c-leverage", "group": "symbol=ETHUSDT", "outcome": "pass"}) == 1


def test_rejected_observations_count_by_reason_from_zero():
    metrics = ControllerMetrics()
    assert series(metrics, "canary_observations_rejected_total") == {(("reason", "nan"),): 0, (("reason", "inf"),): 0}
    metrics.observations_were_rejected({"nan": 2, "inf": 1})
    metrics.observations_were_rejected({"nan": 1})
    metrics.observations_were_rejected({})
    assert series(metrics, "canary_observations_rejected_total") == {(("reason", "nan"),): 3, (("reason", "inf"),): 1}


def test_a_pending_group_is_exported_until_the_policy_speaks_otherwise():
    """A policy's verdict speaks for its worst group: once another group speaks with a plain pass,
    the group that was pending is pending no more."""
    metrics = ControllerMetrics()
    btc, eth = (("symbol", "BTCUSDT"),), (("symbol", "ETHUSDT"),)

    def judged(group, breaching_since=None):
        return Verdict(policy="c-latency", outcome=Outcome.PASS, at=10.0, value=0.7, threshold=0.5,
                       condition="< 0.5", window=600.0, samples=9, group=group, breaching_since=breaching_since)

    def pending(group):
        return metrics.registry.get_sample_value("canary_policy_pending", {"policy": "c-latency",
                                                                           "group": group_text(group)})

    metrics.record_verdicts([judged(btc, breaching_since=5.0)])
    assert (pending(btc), metrics.registry.get_sample_value(
        "canary_policy_verdict", {"policy": "c-latency", "group": "symbol=BTCUSDT", "outcome": "pass"})) == (1, 1)
    metrics.record_verdicts([judged(eth)])
    assert (pending(btc), pending(eth)) == (0, 0)
