"""monitoring/: the alerting rules pass ``promtool check rules`` and their unit tests, and the
rules and the Grafana dashboard read only series that the controller and the bots really export
(names taken from their rendered /metrics)."""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from reference_bot.metrics import BotMetrics
from tests.ops.promql import metric_names, variable_metric_names
from tests.support.checkout import MONITORING_DIR
from tests.support.controller_metrics import every_family_set
from tests.support.tools import require_tool

RULES = MONITORING_DIR / "alerts.yaml"
RULE_TESTS = MONITORING_DIR / "alerts.test.yaml"
DASHBOARD = MONITORING_DIR / "grafana" / "canary-controller.json"
PROMETHEUS_SERIES = frozenset({"up"})
"""What Prometheus itself records for every target."""
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def rendered_names(exposition: bytes) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(exposition.decode())
            for sample in family.samples}


@pytest.fixture(scope="module")
def exported() -> frozenset[str]:
    """Every sample name a controller and a bot put in their /metrics, with every family holding
    a series (the controller's labelled ones appear once something sets them)."""
    controller = every_family_set()
    bot = BotMetrics(symbols=["BTCUSDT"], buckets=["core"])
    return frozenset(rendered_names(controller.render()) | rendered_names(bot.exposition()))


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def dashboard_queries(board: dict) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and annotation query of the dashboard."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} ({panel['title']}) {target['refId']}", target["expr"]
    for annotation in board["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']}", annotation["expr"]


def unknown_names(queries: Iterator[tuple[str, str]], known: set[str] | frozenset[str]) -> dict[str, set[str]]:
    return {where: names for where, expr in queries if (names := metric_names(expr) - known)}


# ---------------------------------------------------------------- promtool


def test_promtool_accepts_the_rules():
    promtool = require_tool("promtool", "prometheus")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_their_unit_tests():
    promtool = require_tool("promtool", "prometheus")
    result = subprocess.run([promtool, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True,
                            timeout=120, cwd=MONITORING_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_example_prometheus_config_loads_the_rules():
    promtool = require_tool("promtool", "prometheus")
    config = MONITORING_DIR / "prometheus.example.yaml"
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert yaml.safe_load(config.read_text())["rule_files"] == [RULES.name]


# ---------------------------------------------------------------- the rules


def test_every_alert_waits_has_a_severity_says_what_happened_and_links_a_runbook():
    for alert in alerts():
        assert "for" in alert, alert["alert"]
        assert alert["labels"]["severity"] in ("critical", "warning"), alert["alert"]
        assert set(alert["annotations"]) == {"summary", "description", "runbook_url"}, alert["alert"]
        assert alert["annotations"]["runbook_url"].startswith("README.md#"), alert["alert"]


def test_every_runbook_link_lands_on_a_readme_section():
    import re

    readme = (MONITORING_DIR.parent / "README.md").read_text()
    # GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
    anchors = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
               for h in re.findall(r"^#+ (.+)$", readme, flags=re.M)}
    links = {a["annotations"]["runbook_url"] for a in alerts()}
    missing = sorted(link for link in links if link.partition("#")[2] not in anchors)
    assert links and not missing, f"runbook links without a README section: {missing}"


def test_every_alert_is_tested_firing_and_quiet():
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case["exp_alerts"]))
    assert {alert["alert"]: {True, False} for alert in alerts()} == cases


def test_the_checklists_alerts_and_the_operators_are_all_there():
    names = {alert["alert"] for alert in alerts()}
    assert {"StrategyLeverageMismatch", "StrategyBucketOveruse", "StrategyOrderErrorSpike",  # the checklist's
            "CanaryRollbackStarted", "CanaryRollbackFailed", "CanaryStreamDisconnected", "CanaryObservationStale",
            "CanaryControllerDown"} <= names


def test_the_rules_read_only_exported_metrics(exported):
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    queries = ((rule.get("alert") or rule["record"], rule["expr"]) for rule in rules())
    assert unknown_names(queries, exported | PROMETHEUS_SERIES | recorded) == {}


# ---------------------------------------------------------------- the dashboard


@pytest.fixture(scope="module")
def board() -> dict:
    return json.loads(DASHBOARD.read_text())


def test_the_dashboard_reads_only_exported_metrics(board, exported):
    assert unknown_names(dashboard_queries(board), exported | PROMETHEUS_SERIES) == {}
    variables = {v["name"]: v["query"]["query"] for v in board["templating"]["list"] if v["type"] == "query"}
    assert {name: unknown for name, query in variables.items()
            if (unknown := variable_metric_names(query) - exported)} == {}


def test_the_name_check_catches_a_misspelled_metric(board, exported):
    broken = copy.deepcopy(board)
    target = next(target for panel in broken["panels"] for target in panel.get("targets", [])
                  if "canary_rollout_state" in target["expr"])
    target["expr"] = target["expr"].replace("canary_rollout_state", "canary_rollout_status")
    assert list(unknown_names(dashboard_queries(broken), exported | PROMETHEUS_SERIES).values()) == [{"canary_rollout_status"}]


def test_the_dashboard_shows_what_the_checklist_asks_to_review(board):
    shown = set().union(*(metric_names(expr) for _, expr in dashboard_queries(board)))
    assert {"strategy_leverage_configured", "strategy_leverage_applied",                      # leverage
            "strategy_bucket_usage_ratio", "strategy_bucket_allocation_ratio",                 # buckets
            "strategy_order_queue_depth", "strategy_order_queue_latency_seconds_bucket",       # queue
            "strategy_signal_latency_seconds_bucket",                                          # latency
            "canary_policy_verdict", "canary_rollbacks_total", "canary_rollback_duration_seconds_bucket",
            "canary_detection_latency_seconds_bucket", "canary_exchange_weight_used",
            "canary_stream_connected"} <= shown


def test_the_dashboard_has_unique_panel_ids_and_a_prometheus_datasource_everywhere(board):
    assert 38 <= board["schemaVersion"] <= 41
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    for panel in board["panels"]:
        if panel["type"] == "row":  # a row holds no query
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(target["datasource"] == DATASOURCE for target in panel["targets"]), panel["title"]


def test_no_two_dashboard_panels_overlap(board):
    cells: dict[tuple[int, int], str] = {}
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


# ---------------------------------------------------------------- the PromQL name tokenizer


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (trigger) (increase(canary_rollbacks_total{instance=~"$instance"}[$__rate_interval])) > 0',
     {"canary_rollbacks_total"}),
    ('a_metric > on (job, instance) group_left (bucket) b_metric * 1.02e0 offset 5m',
     {"a_metric", "b_metric"}),
    ('histogram_quantile(0.95, sum without (le_x) (rate(x_bucket{le!="+Inf", job="up"}[10m:1m]))) > bool 0.4',
     {"x_bucket"}),
    ('label_replace(up, "dst", "not_a_metric", "src", "(.*)") or vector(0) unless time() - ts_seconds',
     {"up", "ts_seconds"}),
])
def test_the_tokenizer_finds_metric_names_and_nothing_else(expr, names):
    assert metric_names(expr) == names


def test_variable_queries_read_their_metric():
    assert variable_metric_names('label_values(canary_rollout_state{instance=~"$instance"}, rollout)') == {
        "canary_rollout_state"}
    assert variable_metric_names("label_values(instance)") == set()
