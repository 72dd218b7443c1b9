"""Policy files: validated with file, line, field and what was expected; the parser is fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.analysis.policy import PolicyFile, load_policies, load_policy_file
from controller.config.yamlfile import load_model_text
from controller.errors import ConfigError
from tests.support.canaryctl import assert_refused, canaryctl

GOOD = """\
stage: A
policies:
  - name: signal-latency-p95
    checklist: "A: signal-to-order latency p95 < 400 ms"
    source: bot
    metric: strategy_signal_latency_seconds
    aggregate: p95
    window: 1h
    condition: "< 0.400"
    min_samples: 50
    for: 5m
    on_breach: rollback
    on_nodata: {action: hold, stale_after: 2m}
  - name: order-failure-rate
    checklist: "A: order failure/rejection rate < 0.5 %"
    source: bot
    metric: strategy_orders_total
    aggregate: ratio
    numerator: {outcome: [rejected, error]}
    window: 1h
    condition: "< 0.005"
    min_samples: 200
    on_breach: hold
"""


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_model_text(PolicyFile, text, "stage-a.yaml")
    return str(caught.value)


def test_a_valid_file_gives_typed_policies_with_durations_in_seconds():
    loaded = load_model_text(PolicyFile, GOOD, "stage-a.yaml")
    latency, failures = loaded.policies
    assert latency.window == 3600 and latency.for_ == 300 and latency.on_nodata.stale_after == 120
    assert latency.parsed_condition.holds(0.3) and not latency.parsed_condition.holds(0.5)
    assert failures.instant and failures.numerator == {"outcome": ["rejected", "error"]}


@pytest.mark.parametrize("change, where", [
    (("aggregate: p95", "aggregate: p97"), "stage-a.yaml:7: policies[0].aggregate:"),
    (('condition: "< 0.400"', 'condition: "0.400"'), "stage-a.yaml:9: policies[0].condition: expected a comparison"),
    (('condition: "< 0.400"', 'condition: "<= allocaton * 1.02"'), "unknown name 'allocaton'"),
    (("window: 1h\n    condition", "window: 1 hour\n    condition"), "stage-a.yaml:8: policies[0].window: '1 hour' is not a duration"),
    (("for: 5m", "for: 2h"), "policies[0].for: a breach cannot need to last longer than the window"),
    (("on_breach: rollback", "on_breach: panic"), "policies[0].on_breach:"),
    (("min_samples: 50", "min_samples: -1"), "policies[0].min_samples:"),
    (("source: bot\n    metric: strategy_signal", "source: exchange\n    metric: strategy_signal"),
     "the exchange source has no metric 'strategy_signal_latency_seconds'"),
    (("    numerator: {outcome: [rejected, error]}\n", ""), "policies[1].numerator: aggregate: ratio needs a numerator"),
    (("name: order-failure-rate", "name: signal-latency-p95"), "policy name 'signal-latency-p95' is used twice"),
    (("stage: A", "stage: stage-a"), "stage-a.yaml:1: stage:"),
])
def test_each_kind_of_bad_policy_is_refused_where_it_is(change, where):
    old, new = change
    assert old in GOOD
    assert where in refusal(GOOD.replace(old, new, 1))


def test_policy_names_are_unique_across_files(tmp_path):
    (tmp_path / "a.yaml").write_text(GOOD)
    (tmp_path / "b.yaml").write_text(GOOD.replace("stage: A", "stage: B"))
    with pytest.raises(ConfigError, match="also used in"):
        load_policies([tmp_path])


def test_policy_check_exits_2_at_the_first_bad_file_and_0_when_all_are_good(tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text(GOOD)
    ok = canaryctl("policy", "check", str(good))
    assert ok.code == 0 and "stage A, 2 policies ok" in ok.out
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("window: 1h", "window: soon", 1))
    assert_refused(canaryctl("policy", "check", str(good), str(bad)), f"{bad}:8: policies[0].window")


YAMLISH = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 10**6) | st.floats(allow_nan=True) |
    st.sampled_from(["A", "rollback", "p95", "1h", "< 0.4", "== 0", "bot", "exchange", "ratio", "strategy_x",
                     "<= allocation * 1.02", "-1s", "", "for", "name"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(
        st.sampled_from(["stage", "policies", "name", "checklist", "source", "metric", "aggregate", "window",
                         "condition", "min_samples", "for", "on_breach", "on_nodata", "numerator", "labels",
                         "per", "severity", "action", "stale_after", "extra"]), children, max_size=8),
    max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(YAMLISH)
def test_the_policy_loader_never_raises_anything_but_its_own_error(document):
    import yaml

    text = yaml.safe_dump(document)
    try:
        load_model_text(PolicyFile, text, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text_is_refused_cleanly(text):
    try:
        load_model_text(PolicyFile, text, "fuzz.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")


@pytest.mark.parametrize("change, where", [
    # A constant threshold is evaluated at load: what it cannot be is refused there, not in the daemon.
    (('condition: "< 0.400"', 'condition: "< 1/0"'), "policies[0].condition: division by zero in the threshold"),
    (('condition: "< 0.400"', 'condition: "!= 1e308*10-1e308*10"'), "policies[0].condition: the threshold "
     "1e+308*10 is not a finite number"),
    (('condition: "< 0.400"', 'condition: "<= allocation * (2/0)"'), "policies[0].condition: division by zero"),
    # Durations are finite, bounded, and positive where 0 would mean nothing.
    (("for: 5m", "for: .inf"), "policies[0].for: expected a finite duration"),
    (("stale_after: 2m}\n  - name: order", "stale_after: .inf}\n  - name: order"),
     "policies[0].on_nodata.stale_after: expected a finite duration"),
    (("window: 1h\n    condition", "window: 1.0e+308\n    condition"), "policies[0].window: expected a duration "
     "of at most 30 days"),
    (("window: 1h\n    condition", "window: 31d\n    condition"), "policies[0].window: expected a duration "
     "of at most 30 days"),
    (("window: 1h\n    condition", "window: .nan\n    condition"), "policies[0].window: expected a finite duration"),
    (("window: 1h\n    condition", "window: 0s\n    condition"), "policies[0].window:"),
    # An aggregate must suit what the source's metric is (events, gauges, counters).
    (("source: bot\n    metric: strategy_signal_latency_seconds\n    aggregate: p95",
      "source: exchange\n    metric: fill_notional_ratio\n    aggregate: increase"),
     "policies[0].aggregate: increase needs a counter; the exchange source's fill_notional_ratio is an event"),
    (("source: bot\n    metric: strategy_signal_latency_seconds\n    aggregate: p95",
      "source: exchange\n    metric: margin_ratio\n    aggregate: rate"),
     "policies[0].aggregate: rate needs a counter; the exchange source's margin_ratio is a gauge"),
    (("source: bot\n    metric: strategy_signal_latency_seconds\n    aggregate: p95",
      "source: process\n    metric: restarts\n    aggregate: sum"),
     "policies[0].aggregate: sum adds up events; the process source's restarts is a counter"),
])
def test_what_cannot_be_judged_is_refused_at_load_naming_the_policy(change, where, tmp_path):
    old, new = change
    assert old in GOOD
    path = tmp_path / "stage-a.yaml"
    path.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as caught:
        load_policy_file(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:") and where in message
    assert "(policy 'signal-latency-p95')" in message.splitlines()[0]


def test_aggregates_that_suit_their_source_load():
    text = GOOD.replace("source: bot\n    metric: strategy_signal_latency_seconds\n    aggregate: p95",
                        "source: process\n    metric: restarts\n    aggregate: increase", 1)
    assert load_model_text(PolicyFile, text, "stage-a.yaml").policies[0].aggregate == "increase"


LIMITED = GOOD.replace("    on_nodata: {action: hold, stale_after: 2m}\n", """\
    on_nodata: {action: hold, stale_after: 2m}
    failure_limit: {failures: 3, evaluations: 10}
    consecutive_error_limit: 5
    inconclusive_limit: 4
    dry_run: true
""", 1)


def test_failure_limits_and_dry_run_load_and_default_to_acting_on_the_first_failure():
    limited, plain = load_model_text(PolicyFile, LIMITED, "stage-a.yaml").policies
    assert (limited.failure_limit.failures, limited.failure_limit.evaluations) == (3, 10)
    assert (limited.consecutive_error_limit, limited.inconclusive_limit, limited.dry_run) == (5, 4, True)
    assert limited.limited and not plain.limited
    assert plain.failure_limit is None and plain.consecutive_error_limit is None and not plain.dry_run


@pytest.mark.parametrize("old, new, where", [
    ("failures: 3, evaluations: 10", "failures: 3, evaluations: 2",
     "stage-a.yaml:14: policies[0].failure_limit.evaluations: 3 failures cannot happen within 2 evaluations"),
    ("failures: 3,", "failures: 0,", "policies[0].failure_limit.failures: expected an integer from 1 to 10000, got 0"),
    ("failures: 3,", "failures: 2.5,", "policies[0].failure_limit.failures"),
    ("failures: 3,", "failures: yes,", "policies[0].failure_limit.failures"),
    ("{failures: 3, evaluations: 10}", "3", "policies[0].failure_limit"),
    ("consecutive_error_limit: 5", "consecutive_error_limit: -1",
     "policies[0].consecutive_error_limit: expected an integer from 1 to 10000, got -1"),
    ("inconclusive_limit: 4", "inconclusive_limit: 100000",
     "policies[0].inconclusive_limit: expected an integer from 1 to 10000, got 100000"),
    ("dry_run: true", "dry_run: maybe", "policies[0].dry_run"),
    ("{action: hold, stale_after: 2m}", "{action: rollback, stale_after: 2m}",
     "policies[0].consecutive_error_limit: on_nodata: rollback rolls back on the first nodata evaluation"),
])
def test_bad_limits_are_refused_where_they_are(old, new, where):
    assert old in LIMITED
    assert where in refusal(LIMITED.replace(old, new, 1))


def test_policy_check_shows_each_policys_limits(tmp_path):
    path = tmp_path / "stage-a.yaml"
    path.write_text(LIMITED)
    shown = canaryctl("policy", "check", str(path))
    assert shown.code == 0
    assert ("signal-latency-p95: acts on 3 failures within 10 evaluations; pauses after 5 nodata in a row; "
            "pauses after 4 inconclusive in a row; dry run (never acted on)") in shown.out
    assert "order-failure-rate" not in shown.out  # a policy without limits acts on its first failure, unsaid
