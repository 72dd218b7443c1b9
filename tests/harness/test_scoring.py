"""The scoring of a harness run, rule by rule, on the shipped policies: a schedule, the
placements' spans and the verdicts in, each fault's fate and the run's outcome out, exactly."""

from __future__ import annotations

from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome, Verdict
from controller.harness.faults import parse_schedule
from controller.harness.result import Breach
from controller.harness.scoring import PlacementSpan, exit_status, score
from tests.support.checkout import REPO

POLICIES = {f.stage: tuple(f.policies) for f in load_policies([REPO / "policies"]).values()}
OTHERS = tuple(p for stage, policies in POLICIES.items() if stage != "B" for p in policies)
HOUR = 3600.0
START = 1_700_000_000.0  # the run's start on its clock: verdicts carry clock times
HEALTHY = "reference bot (5 symbols)"
B = POLICIES["B"]

APPLIED = "b-bot-applied-leverage-equals-config"
EXCHANGE = "b-exchange-leverage-matches-config"
LATENCY = "b-signal-latency-p95"
FRESH = "b-margin-fractions-fresh"


def verdict(policy: str, outcome: str, at: float, *, action: str | None = None, symbol: str | None = None) -> Verdict:
    """A verdict ``at`` seconds into the run; a failure asks for its policy's rollback by default."""
    if action is None and outcome == "fail":
        action = "rollback"
    return Verdict(policy=policy, outcome=Outcome(outcome), at=START + at, value=None, threshold=None,
                   condition="", window=60.0, samples=1, group=(("symbol", symbol),) if symbol else (),
                   action=action)


def run(spec: str, placements: list[PlacementSpan], verdicts: list[tuple[int, Verdict]], *,
        injected: dict[int, float] | None = None, duration: float = 4 * HOUR, simulated: float | None = None,
        stage: str = "B", policies=None, others=OTHERS):
    faults = parse_schedule(spec) if spec else []
    return score(faults, stage=stage, release=HEALTHY, duration=duration, policies=POLICIES[stage] if policies is None else policies,
                 other_policies=others, placements=placements, verdicts=verdicts, start=START,
                 injected={i: f.at for i, f in enumerate(faults)} if injected is None else injected,
                 simulated=duration if simulated is None else simulated)


def passing(at: float) -> list[Verdict]:
    return [verdict(p.name, "pass", at) for p in B]


def test_a_defect_caught_in_time_is_rolled_back_and_the_run_passes():
    caught = verdict(APPLIED, "fail", 1800, symbol="SOLUSDT")
    result = run("20m:defect=wrong_leverage:SOLUSDT=20", [
        PlacementSpan(HEALTHY, 1.5, 1200.0, why_ended=f"{HEALTHY} + wrong_leverage was placed"),
        PlacementSpan(f"{HEALTHY} + wrong_leverage", 1201.5, 1801.0, defect=0, why_ended=f"{HEALTHY} was placed"),
        PlacementSpan(HEALTHY, 1802.5, 4 * HOUR),
    ], [(0, v) for v in passing(600)] + [
        (1, caught),
        (1, verdict(EXCHANGE, "fail", 1800, symbol="SOLUSDT")),  # the same catch, once judging is over
        *[(2, v) for v in passing(4 * HOUR - 30)],
    ])
    (fault,) = result.faults
    assert (fault.injected_at, fault.expected) == (1200, (APPLIED, EXCHANGE))
    assert (fault.caught_by, fault.caught_outcome, fault.detect_s, fault.note) == (APPLIED, "fail", 600, "")
    assert fault.ok and result.breaches == [Breach(1800, caught, fault.fault)]
    assert result.verdicts == dict.fromkeys((p.name for p in B), "pass")
    assert (result.releases_placed, result.errors, result.ok, exit_status(result)) == (3, [], True, 0)


def test_a_crashed_bot_is_caught_by_missing_data_once_its_sources_had_time_to_report():
    # b-bot-applied-leverage-equals-config: on_nodata hold after 2 min. Its crash is what the defect does.
    result = run("1h:defect=unhandled_exception_after_seconds=0", [
        PlacementSpan(HEALTHY, 0.0, HOUR),
        PlacementSpan(f"{HEALTHY} + crash", HOUR + 1, HOUR + 200, defect=0, crash="RuntimeError('boom')"),
        PlacementSpan(HEALTHY, HOUR + 201, 4 * HOUR),
    ], [(1, verdict(APPLIED, "nodata", HOUR + 60, action="hold")),   # 59 s after its placement: too soon
        (1, verdict(APPLIED, "nodata", HOUR + 121, action="hold"))])
    (fault,) = result.faults
    assert (fault.caught_by, fault.caught_outcome, fault.detect_s) == (APPLIED, "nodata", 121)
    assert result.breaches == [] and result.errors == [] and fault.ok and result.ok  # a hold is no breach


def test_a_defect_caught_only_after_its_release_was_replaced_is_not_caught():
    late = verdict(LATENCY, "fail", 2 * HOUR + 60)
    result = run("1h:defect=slow_signal_seconds=1,2h:defect=wrong_leverage:SOLUSDT=20", [
        PlacementSpan(HEALTHY, 0.0, HOUR),
        PlacementSpan(f"{HEALTHY} + slow", HOUR, 2 * HOUR, defect=0, why_ended=f"{HEALTHY} + wrong_leverage was placed"),
        PlacementSpan(f"{HEALTHY} + wrong_leverage", 2 * HOUR, 2 * HOUR + 100, defect=1),
        PlacementSpan(HEALTHY, 2 * HOUR + 100, 4 * HOUR),
    ], [(1, late),  # its verification had already stopped: its deadline was the next placement
        (2, verdict(LATENCY, "fail", 2 * HOUR + 50)),  # not the defect this release carries: the release failing
        (2, verdict(APPLIED, "fail", 2 * HOUR + 90))])
    slow, leverage = result.faults
    assert (slow.caught_by, slow.ok) == (None, False)
    assert slow.note == f"not caught before {HEALTHY} + wrong_leverage was placed (2.00 h)"
    assert (leverage.caught_by, leverage.detect_s, leverage.ok) == (APPLIED, 90, True)
    assert [(b.at, b.verdict.policy, b.fault) for b in result.breaches] == [
        (2 * HOUR + 50, LATENCY, None), (2 * HOUR + 90, APPLIED, leverage.fault)]
    assert (result.ok, exit_status(result)) == (False, 1)


def test_faults_never_caught_say_why_and_fail_the_run():
    result = run("10m:defect=oversized_orders=5,2h:sim=latency_ms=900:expect=b-signal-latency-p95", [
        PlacementSpan(HEALTHY, 0.0, 600),
        PlacementSpan(f"{HEALTHY} + oversized_orders", 601, 3 * HOUR, defect=0),
    ], [], duration=HOUR * 3)
    oversized, latency = result.faults
    assert (oversized.expected, oversized.must_be_caught, oversized.caught_by) == ((), True, None)
    assert oversized.note == ("no policy of stage B watches what oversized_orders moves (a-bucket-usage-within-"
                              "allocation, c-fills-sized-within-bucket, c-bucket-usage-within-allocation, d-fills-"
                              "sized-within-bucket, d-bucket-usage-within-allocation do, in other stages); not caught "
                              "before the run ended (3.00 h)")
    assert (latency.expected, latency.note) == ((LATENCY,), "not caught by the end of the run")
    assert not oversized.ok and not latency.ok and result.breaches == [] and not result.ok


def test_a_breach_no_fault_explains_is_the_release_failing_once_per_episode():
    result = run("", [PlacementSpan(HEALTHY, 0.0, 4 * HOUR, crash="OSError('gone')")], [
        (0, first := verdict(LATENCY, "fail", 100)),
        (0, verdict(LATENCY, "fail", 130)),                     # the same episode
        (0, verdict(LATENCY, "pass", 160)),
        (0, second := verdict(LATENCY, "fail", 190)),           # a new one
        (0, verdict(FRESH, "nodata", 200, action="hold")),      # missing data on hold: no breach
        (0, third := verdict(FRESH, "nodata", 230, action="rollback")),
        (0, verdict(FRESH, "fail", 260)),                       # still that episode
    ])
    assert result.breaches == [Breach(100, first, None), Breach(190, second, None), Breach(230, third, None)]
    assert result.unexpected_breaches == result.breaches
    assert result.errors == [f"the bot of {HEALTHY} crashed: OSError('gone')"]
    assert result.verdicts[LATENCY] == "fail" and result.verdicts[FRESH] == "fail"
    assert result.verdicts[APPLIED] == "none"
    assert (result.ok, exit_status(result)) == (False, 1)


def test_a_healthy_run_cut_short_is_not_ok():
    result = run("", [PlacementSpan(HEALTHY, 0.0, HOUR)], [(0, v) for v in passing(HOUR - 1)], simulated=HOUR)
    assert result.breaches == [] and result.errors == [] and result.simulated_s == HOUR
    assert (result.ok, exit_status(result)) == (False, 1)


def test_a_fault_only_an_unjudged_policy_watches_cannot_be_caught():
    # Stage A without its bot policies: what sees a crash there reads the logs, which the harness has not.
    policies = tuple(p for p in POLICIES["A"] if p.source != "bot")
    result = run("1h:defect=unhandled_exception_after_seconds=0", [
        PlacementSpan(HEALTHY, 0.0, HOUR),
        PlacementSpan(f"{HEALTHY} + crash", HOUR + 1, 4 * HOUR, defect=0, crash="RuntimeError('boom')"),
    ], [(1, verdict("a-no-unhandled-exceptions", "fail", HOUR + 600))], stage="A", policies=policies,
                 others=())
    (fault,) = result.faults
    assert result.not_judged == {"a-no-unhandled-exceptions": "the harness has no logs source",
                                 "a-audit-chain-verifies": "the harness has no audit source"}
    assert (fault.expected, fault.caught_by, fault.ok) == ((), None, False)
    assert fault.note == ("no policy of stage A that the harness judges watches what unhandled_exception_after_"
                          "seconds moves (a-no-unhandled-exceptions: the harness has no logs source); "
                          "not caught before the run ended (4.00 h)")
    assert result.breaches == [] and result.errors == [] and not result.ok  # its verdicts count for nothing


def test_a_sim_fault_expected_of_an_unjudged_policy_says_so():
    result = run("1h:sim=ws_stall:for=1h:expect=a-no-unhandled-exceptions", [PlacementSpan(HEALTHY, 0.0, 4 * HOUR)],
                 [], stage="A", others=())
    (fault,) = result.faults
    assert fault.note == "a-no-unhandled-exceptions cannot catch it here: the harness has no logs source"
    assert not fault.ok and not result.ok


def test_overlapping_faults_are_each_caught_by_their_own_policy_and_breaches_count_against_the_knobs_on():
    latency_on, disconnect_on, defect_at = HOUR, HOUR + 600, HOUR + 1800
    stale = verdict(FRESH, "fail", HOUR + 900)               # while the stream is down and the latency on
    caught_defect = verdict(APPLIED, "fail", defect_at + 120, symbol="SOLUSDT")
    caught_latency = verdict(LATENCY, "fail", defect_at + 600)
    after = verdict(FRESH, "fail", defect_at + 900)          # the latency's knob went off with its rollback
    result = run("1h:sim=latency_ms=900:for=1h:expect=b-signal-latency-p95, 1h10m:sim=ws_disconnect, "
                 "1h30m:defect=wrong_leverage:SOLUSDT=20", [
                     PlacementSpan(HEALTHY, 0.0, defect_at + 1),
                     PlacementSpan(f"{HEALTHY} + wrong_leverage", defect_at + 2, defect_at + 121, defect=2),
                     PlacementSpan(HEALTHY, defect_at + 122, defect_at + 601),
                     PlacementSpan(HEALTHY, defect_at + 602, 4 * HOUR),
                 ], [
                     (0, stale),
                     (1, verdict(LATENCY, "pass", defect_at + 60)),
                     (1, caught_defect),
                     (2, caught_latency),
                     (2, verdict(FRESH, "fail", defect_at + 600)),  # judging is over: the rollback under way
                     (3, after),
                 ], injected={0: latency_on, 1: disconnect_on, 2: defect_at})
    latency, disconnect, defect = result.faults
    assert (latency.caught_by, latency.detect_s, latency.breaches, latency.ok) == (LATENCY, 2400, [FRESH], True)
    assert (disconnect.expected, disconnect.caught_by, disconnect.breaches, disconnect.ok) == ((), None, [FRESH],
                                                                                             False)
    assert (defect.caught_by, defect.detect_s, defect.ok) == (APPLIED, 120, True)
    assert result.breaches == [Breach(HOUR + 900, stale, None), Breach(defect_at + 120, caught_defect, defect.fault),
                               Breach(defect_at + 600, caught_latency, latency.fault), Breach(defect_at + 900, after,
                                                                                              None)]
    assert result.releases_placed == 4 and not result.ok
