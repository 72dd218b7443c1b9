"""The checklist's lines: which policy enforces which, and how a line is judged from the facts."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.analysis.policy import load_policy_file
from controller.report.checklist import LINES, Facts, PolicyFacts, StageFacts, fill, line_of
from tests.support.checkout import REPO

SHIPPED = sorted((REPO / "policies").glob("*.yaml"))
C4 = "C: Ensure alerting (mismatch, bucket overuse, error spikes) is active and quiet"
C1 = "C: Deploy to live sub-account (or shadow mode) with <=2 % capital allocation"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: Path(p).name)
def test_every_shipped_policy_names_a_line_of_the_checklist(path):
    for policy in load_policy_file(path).policies:
        line = line_of(policy.checklist)
        assert line is not None, f"{policy.name}: {policy.checklist!r} names no checklist line"
        assert policy.checklist.startswith(f"{line.stage}:")


def test_a_policy_quoting_part_of_a_line_names_that_line():
    assert line_of("A: Signal-to-order latency (strategy_signal_latency_seconds) p95 < 400 ms").key == "A2"
    assert line_of("A: Signal-to-order latency (strategy_signal_latency_seconds) p50 < 150 ms").key == "A2"
    assert line_of("A: No unhandled exceptions in runtime logs for >=24 h").key == "A5"
    assert line_of("D: Monitor dashboards hourly for first 24 h — C: Validate real Binance").key == "D3"
    assert line_of("Z: nothing like it") is None
    assert line_of("A: Signal loss") is None  # a common start, but too short a part of either text


def facts(*policies: PolicyFacts, outcome: str | None = "rolled_back", signoffs=None, stages=("C",)) -> Facts:
    runs = {name: StageFacts(name, "2026-03-01 12:00:05.000Z", None if outcome is None else "2026-03-01 13:00Z",
                             outcome, 3600.0 if outcome == "passed" else 14.0, 3600.0, "canary", "0.02")
            for name in stages}
    return Facts(pipeline="canary", stages=runs, policies=list(policies), signoffs=signoffs or {},
                 required_signoffs=["C/owner-review"], release="2.0.0", status="rolled_back", baseline="1.0.0",
                 baseline_config="ebb1fae2af8a")


def lines(f: Facts) -> dict[str, dict]:
    return {line["key"]: line for line in fill(f)}


def test_a_breached_policy_breaches_its_line_and_the_stage_gate():
    out = lines(facts(PolicyFacts("c-leverage-mismatch-zero", C4, "C", "breached", "failed at T: 2 vs == 0")))
    assert out["C4"]["status"] == "breached" and out["C4"]["policies"] == ["c-leverage-mismatch-zero"]
    assert out["C4"]["evidence"] == ["c-leverage-mismatch-zero (C): failed at T: 2 vs == 0"]
    assert out["C-gate"]["status"] == "breached"
    assert "stage C breached: c-leverage-mismatch-zero" in out["C-gate"]["evidence"]


def test_passing_policies_meet_their_line_only_once_the_stage_has_passed():
    passing = PolicyFacts("c-capital-share-within-cap", C1, "C", "passing", "pass 0.015")
    cut_short = lines(facts(passing))["C1"]
    assert cut_short["status"] == "open"
    assert any(e.startswith("not yet met: stage C on account canary, capital cap 0.02: ran 14 s of 3600 s")
               for e in cut_short["evidence"])
    assert lines(facts(passing, outcome="passed"))["C1"]["status"] == "met"
    assert lines(facts(passing, outcome=None))["C1"]["status"] == "open"  # still running


def test_a_policy_without_data_leaves_its_line_open_even_after_the_stage():
    quiet = PolicyFacts("c-capital-share-within-cap", C1, "C", "nodata", "nodata (no value)")
    assert lines(facts(quiet, outcome="passed"))["C1"]["status"] == "open"


def test_lines_of_stages_outside_the_pipeline_are_not_run_and_stage_e_is_outside():
    out = lines(facts())
    assert out["A1"]["status"] == "not run"
    assert out["A1"]["evidence"] == ["stage A is not in pipeline canary (stages: C)"]
    assert out["B-gate"]["status"] == "not run"
    assert {out[k]["status"] for k in ("E1", "E2", "E3", "E4", "done-3")} == {"outside"}
    assert out["C2"]["status"] == "open"  # stage C ran, but nothing judged the line


def test_sign_offs_attest_their_lines_with_who_and_when():
    unsigned = lines(facts())
    assert unsigned["done-1"] == {**unsigned["done-1"], "status": "open", "evidence": ["not signed: C/owner-review"]}
    signed = lines(facts(signoffs={"C/owner-review": ("alice", "2026-03-01 12:30:00.000Z")}, outcome="passed"))
    assert signed["done-1"]["status"] == "met" and signed["done-1"]["evidence"] == ["signed: C/owner-review by alice"]
    assert signed["C-gate"]["status"] == "met"
    assert "C/owner-review signed by alice" in signed["C-gate"]["evidence"]


def test_the_rollback_plan_line_names_the_previous_release_and_its_snapshot():
    line = lines(facts())["D5"]
    assert line["status"] == "met"
    assert line["evidence"] == ["previous release 1.0.0 with config snapshot ebb1fae2af8a"]


def test_every_line_is_filled():
    out = fill(facts())
    assert [line["key"] for line in out] == [line.key for line in LINES]
    assert all(line["status"] and line["evidence"] for line in out)


# ---------------------------------------------------------------- a line is met only when all it says was judged

A1 = "A: strategy_leverage_mismatch_total remains 0 across >=24 h sandbox run"
A2 = "A: Signal-to-order latency (strategy_signal_latency_seconds) p50 < 150 ms, p95 < 400 ms"
A5 = "A: No unhandled exceptions in runtime logs for >=24 h"
D3 = "D: Monitor dashboards hourly for first 24 h — C: Validate real Binance /fapi/v1/leverage responses match config"
LATENCY = "strategy_signal_latency_seconds"
HOUR = 3600.0


def ran(*stages: tuple[str, float], outcome: str = "passed", policies=(), signoffs=None) -> Facts:
    """A rollout whose stages each ran (and ended with ``outcome``) for the given seconds of clock."""
    runs = {name: StageFacts(name, "2026-03-01 12:00:00.000Z", "2026-03-03 12:00Z", outcome, seconds, seconds,
                             "master") for name, seconds in stages}
    return Facts(pipeline="stabilization", stages=runs, policies=list(policies), signoffs=signoffs or {},
                 required_signoffs=[], release="2.0.0", status="running")


def latency(name: str, aggregate: str, condition: str, stage: str = "A", status: str = "passing") -> PolicyFacts:
    return PolicyFacts(name, A2, stage, status, f"{status} 0.1", LATENCY, aggregate, condition)


def test_b1_needs_a_stage_b_run_that_covered_48_hours_of_clock():
    short = lines(ran(("B", 2 * HOUR)))["B1"]
    assert short["status"] == "open"
    assert any("ran 7200 s" in e for e in short["evidence"])
    assert any("48 h" in e for e in short["evidence"])
    assert lines(ran(("B", 48 * HOUR)))["B1"]["status"] == "met"
    assert lines(ran(("B", 48 * HOUR), outcome="forced"))["B1"]["status"] == "met"
    assert lines(ran(("B", 47 * HOUR), outcome="forced"))["B1"]["status"] == "open"


def test_the_b_gate_needs_every_line_of_a_and_b_met_not_only_the_stages_passed():
    gate = lines(ran(("A", 24 * HOUR), ("B", 2 * HOUR)))["B-gate"]
    assert gate["status"] == "open"
    assert any("not met: " in e and "B1" in e for e in gate["evidence"])


def test_a2_needs_a_passing_policy_for_the_median_and_for_the_95th_percentile():
    p95_only = lines(ran(("A", 24 * HOUR), ("B", 48 * HOUR),
                         policies=[latency("b-signal-latency-p95", "p95", "< 0.400", stage="B")]))["A2"]
    assert p95_only["status"] == "open"
    assert any("p50 < 150 ms" in e and "no passing policy" in e for e in p95_only["evidence"])
    both = lines(ran(("A", 24 * HOUR), ("B", 48 * HOUR),
                     policies=[latency("b-signal-latency-p95", "p95", "< 0.400", stage="B"),
                               latency("a-signal-latency-p50", "p50", "< 0.150")]))["A2"]
    assert both["status"] == "met"
    looser = lines(ran(("A", 24 * HOUR), policies=[latency("a-signal-latency-p95", "p95", "< 0.400"),
                                                   latency("a-signal-latency-p50", "p50", "< 0.200")]))["A2"]
    assert looser["status"] == "open"  # a bound of 200 ms does not show 150 ms
    nodata = lines(ran(("A", 24 * HOUR), policies=[latency("a-signal-latency-p95", "p95", "< 0.400"),
                                                   latency("a-signal-latency-p50", "p50", "< 0.150",
                                                           status="nodata")]))["A2"]
    assert nodata["status"] == "open"


def test_a1_needs_its_policies_judged_over_a_run_of_24_hours():
    zero = PolicyFacts("a-leverage-mismatch-zero", A1, "A", "passing", "pass 0", "strategy_leverage_mismatch_total",
                       "max", "== 0")
    short = lines(ran(("A", 2 * HOUR), policies=[zero]))["A1"]
    assert short["status"] == "open" and any("ran 7200 s" in e and "24 h" in e for e in short["evidence"])
    assert lines(ran(("A", 24 * HOUR), policies=[zero]))["A1"]["status"] == "met"


def test_a5_needs_its_policy_judged_over_a_run_of_24_hours():
    clean = PolicyFacts("a-no-unhandled-exceptions", A5, "A", "passing", "pass 0")
    assert lines(ran(("A", 2 * HOUR), policies=[clean]))["A5"]["status"] == "open"
    assert lines(ran(("A", 24 * HOUR), policies=[clean]))["A5"]["status"] == "met"


def test_d3_needs_stage_d_judged_for_a_week_not_only_its_first_day():
    watch = PolicyFacts("d-exchange-leverage-matches-config", D3, "D", "passing", "pass 0")
    day = lines(ran(("D", 24 * HOUR), policies=[watch]))["D3"]
    assert day["status"] == "open" and any("ran 86400 s" in e and "168 h" in e for e in day["evidence"])
    assert lines(ran(("D", 7 * 24 * HOUR), policies=[watch]))["D3"]["status"] == "met"


def test_every_line_stating_a_duration_or_several_figures_demands_each():
    """The lines read by hand: each states a duration (covers) or several figures (figures)."""
    demands = {line.key: (line.covers, [f.label for f in line.figures]) for line in LINES
               if line.covers or line.figures}
    assert demands == {"A1": (24 * HOUR, []), "A2": (0.0, ["p50 < 150 ms", "p95 < 400 ms"]),
                       "A5": (24 * HOUR, []), "B1": (48 * HOUR, []), "D3": (7 * 24 * HOUR, [])}
