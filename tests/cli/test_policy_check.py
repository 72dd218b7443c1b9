"""canaryctl policy check: what the daemon would refuse at load is refused here, exit 2, no traceback."""

from __future__ import annotations

from tests.support.canaryctl import assert_refused, canaryctl

POLICY = """\
stage: C
policies:
  - name: c-usage-bounded
    checklist: "C: usage bounded"
    source: bot
    metric: strategy_bucket_usage_ratio
    aggregate: max
    window: 5m
    condition: "{condition}"
    on_breach: rollback
"""


def test_a_threshold_that_divides_by_zero_is_refused_naming_file_policy_and_field(tmp_path):
    bad = tmp_path / "stage-c.yaml"
    bad.write_text(POLICY.format(condition="< 1/0"))
    assert_refused(canaryctl("policy", "check", str(bad)),
                   f"{bad}:9: policies[0].condition: division by zero in the threshold", "policy 'c-usage-bounded'")


def test_an_infinite_window_is_refused(tmp_path):
    bad = tmp_path / "stage-c.yaml"
    bad.write_text(POLICY.format(condition="< 0.5").replace("window: 5m", "window: .inf"))
    assert_refused(canaryctl("policy", "check", str(bad)), f"{bad}:8: policies[0].window: expected a finite duration")
