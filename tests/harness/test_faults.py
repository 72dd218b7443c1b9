"""The fault schedule's grammar: what a SPEC means, what it refuses and how the refusal reads,
and which policies of a stage are expected to catch each fault."""

from __future__ import annotations

from decimal import Decimal

import pytest

from controller.analysis.policy import load_policies
from controller.harness.faults import AFTERMATH, FaultSpecError, check_schedule, load_schedule, parse_schedule
from controller.harness.release import limit_symbols, load_strategy
from tests.support.checkout import REPO

POLICIES = {f.stage: f.policies for f in load_policies([REPO / "policies"]).values()}
ELSEWHERE = {p.name: stage for stage, policies in POLICIES.items() if stage != "B" for p in policies}
STRATEGY = load_strategy()


def check(spec: str, *, duration: float = 48 * 3600, strategy=STRATEGY):
    faults = parse_schedule(spec)
    check_schedule(faults, duration=duration, strategy=strategy, stage="B", policies=list(POLICIES["B"]),
                   elsewhere=ELSEWHERE)
    return faults


def test_the_schedule_of_the_example_is_three_faults_in_time_order():
    faults = parse_schedule("30h:sim=latency_ms=200, 2h:defect=wrong_leverage:SOLUSDT=20,10h:sim=ws_disconnect")
    assert [(f.at, f.kind, f.name) for f in faults] == [
        (7200, "defect", "wrong_leverage"), (36000, "sim", "ws_disconnect"), (108000, "sim", "latency_ms")]
    assert faults[0].value == {"symbol": "SOLUSDT", "leverage": 20}
    assert faults[0].defects == {"wrong_leverage": {"symbol": "SOLUSDT", "leverage": 20}}
    assert faults[2].value == 200.0 and faults[2].lasts is None and faults[2].expect is None
    assert faults[1].text == "10h:sim=ws_disconnect" and faults[1].where == "--faults item 3"


@pytest.mark.parametrize(("item", "defects"), [
    ("1h:defect=oversized_orders=3", {"oversized_orders": Decimal(3)}),
    ("1h:defect=slow_signal_seconds=0.5", {"slow_signal_seconds": Decimal("0.5")}),
    ("1h:defect=unhandled_exception_after_seconds=600", {"unhandled_exception_after_seconds": Decimal(600)}),
    ("1h:defect=rejected_orders_burst=20", {"rejected_orders_burst": 20}),
    ("1h:defect=oversized_exits=2", {"oversized_exits": Decimal(2)}),
    ("1h:defect=exits_never_sent", {"exits_never_sent": True}),
])
def test_each_defect_of_the_strategy_config_can_be_scheduled(item, defects):
    (fault,) = parse_schedule(item)
    assert fault.kind == "defect" and fault.defects == defects


def test_a_sim_fault_stays_on_for_its_duration_and_may_name_the_policy_that_must_catch_it():
    (fault,) = parse_schedule("2h:sim=latency_ms=900:for=30m:expect=b-signal-latency-p95")
    assert (fault.name, fault.value, fault.lasts, fault.expect) == ("latency_ms", 900.0, 1800.0,
                                                                    "b-signal-latency-p95")
    (storm,) = parse_schedule("1h:sim=rate_limit_storm=2m")
    assert storm.value == 120.0


def test_a_yaml_file_lists_the_same_items_and_its_errors_name_the_line(tmp_path):
    path = tmp_path / "faults.yaml"
    path.write_text("# tonight\n- 2h:defect=wrong_leverage:SOLUSDT=20\n- 10h:sim=ws_disconnect\n")
    assert [f.name for f in load_schedule(str(path))] == ["wrong_leverage", "ws_disconnect"]
    assert load_schedule(str(path))[1].where == f"{path}:3"
    path.write_text("- 2h:defect=wrong_leverage:SOLUSDT=20\n- 10h:sim=ws_disconect\n")
    with pytest.raises(FaultSpecError, match=rf"{path}:2 \('10h:sim=ws_disconect'\): unknown sim fault"):
        load_schedule(str(path))


@pytest.mark.parametrize(("spec", "message"), [
    ("", "--faults is empty"),
    ("2h:defect=wrong_leverage:SOLUSDT=20,,3h:sim=ws_disconnect", "item 2 ('')"),
    ("2h", "expected AT:KIND=NAME"),
    ("soon:sim=ws_disconnect", "'soon' is not a time into the run"),
    ("2h:bug=wrong_leverage", "KIND being defect or sim"),
    ("2h:defect=wrong_levrage:SOLUSDT=20", "unknown defect 'wrong_levrage'; defects: wrong_leverage,"),
    ("2h:defect=wrong_leverage", "wrong_leverage needs the symbol and the wrong leverage"),
    ("2h:defect=wrong_leverage=20", "takes no value after '='; write wrong_leverage:SOLUSDT=20"),
    ("2h:defect=wrong_leverage:SOLUSDT=twenty", "SOLUSDT=twenty: expected a whole leverage"),
    ("2h:defect=wrong_leverage:SOLUSDT=500", "wrong_leverage: SOLUSDT=500: expected a leverage from 1 to 125"),
    ("2h:defect=oversized_orders", "oversized_orders needs a value, e.g. oversized_orders=3"),
    ("2h:defect=oversized_orders=0.5", "oversized_orders=0.5: expected a factor greater than 1 and at most 100"),
    ("2h:defect=slow_signal_seconds=fast", "expected a number, e.g. slow_signal_seconds=0.5"),
    ("2h:defect=exits_never_sent=yes", "exits_never_sent takes no value"),
    ("2h:sim=ws_disconect", "unknown sim fault 'ws_disconect'; sim faults: ws_disconnect,"),
    ("2h:sim=ws_disconnect=3", "ws_disconnect takes no value"),
    ("2h:sim=latency_ms", "latency_ms needs a value: milliseconds added"),
    ("2h:sim=latency_ms=-5", "latency_ms=-5 is out of range"),
    ("2h:sim=error_rate=2", "error_rate=2 is out of range"),
    ("2h:sim=ws_disconnect:for=1h", "for= applies to sim faults that stay on"),
    ("2h:sim=ws_stall:for=ever", "for=ever: expected a duration"),
    ("2h:sim=ws_stall:for=1h:for=2h", "option for is given twice"),
    ("2h:sim=ws_stall:until=3h", "unknown option 'until'"),
    ("2h:sim=ws_stall:expect=Not_A_Policy", "expected a policy name"),
    ("2h:defect=exits_never_sent,2h:defect=oversized_orders=3", "item 1 already places a defective release"),
])
def test_a_bad_schedule_is_refused_naming_the_item_and_what_is_wrong(spec, message):
    with pytest.raises(FaultSpecError) as refused:
        parse_schedule(spec)
    assert message in str(refused.value)
    assert refused.value.exit_code == 2


def test_a_missing_schedule_file_is_refused_with_what_to_give_instead(tmp_path):
    with pytest.raises(FaultSpecError, match="no such file; give items such as 2h:defect="):
        load_schedule(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize(("spec", "message"), [
    ("49h:sim=ws_disconnect", "comes at or after the end of the run (48 h)"),
    ("2h:sim=latency_ms=900:expect=a-signal-latency-p95",
     "stage B has no such policy (it is a policy of stage A)"),
    ("2h:sim=latency_ms=900:expect=b-no-such-policy", "stage B has no such policy (no policy file has it)"),
    ("2h:defect=wrong_leverage:DOGEUSDT=20", "symbol DOGEUSDT is not defined under symbols"),
    ("2h:defect=wrong_leverage:SOLUSDT=3", "leverage 3 is the configured leverage of SOLUSDT"),
])
def test_a_schedule_the_run_cannot_honour_is_refused_before_it_runs(spec, message):
    with pytest.raises(FaultSpecError) as refused:
        check(spec)
    assert message in str(refused.value)


def test_a_wrong_leverage_for_a_symbol_left_out_by_symbols_is_refused():
    with pytest.raises(FaultSpecError, match="symbol SOLUSDT is not defined.*trades BTCUSDT, ETHUSDT"):
        check("2h:defect=wrong_leverage:SOLUSDT=20", strategy=limit_symbols(STRATEGY, 2))


def test_a_defect_is_expected_to_be_caught_by_the_stage_policies_that_watch_what_it_moves():
    stage_b = list(POLICIES["B"])

    def expected(item):
        return set(parse_schedule(item)[0].expected(stage_b))

    assert expected("1h:defect=wrong_leverage:SOLUSDT=20") == {"b-bot-applied-leverage-equals-config",
                                                               "b-exchange-leverage-matches-config"}
    assert expected("1h:defect=slow_signal_seconds=1") == {"b-signal-latency-p95"}
    assert expected("1h:defect=exits_never_sent") == {"b-bucket-locks-released"}
    # A crashed bot's /metrics goes away: every bot policy loses its data.
    assert expected("1h:defect=unhandled_exception_after_seconds=60") == {
        p.name for p in stage_b if p.source == "bot"}
    # Stage B watches no bucket usage: oversized orders are stage A's and C's to catch.
    assert expected("1h:defect=oversized_orders=3") == set()
    assert "a-bucket-usage-within-allocation" in parse_schedule("1h:defect=oversized_orders=3")[0].expected(
        POLICIES["A"])


def test_a_sim_fault_must_cause_no_breach_unless_it_names_the_policy_that_must_catch_it():
    stage_b = list(POLICIES["B"])
    assert parse_schedule("1h:sim=ws_disconnect")[0].expected(stage_b) == ()
    assert parse_schedule("1h:sim=latency_ms=900:expect=b-signal-latency-p95")[0].expected(stage_b) == (
        "b-signal-latency-p95",)
    assert parse_schedule("1h:defect=exits_never_sent:expect=none")[0].expected(stage_b) == ()


def test_a_sim_fault_is_on_for_its_for_a_storm_for_its_length_and_an_instant_one_for_its_aftermath():
    spans = {f.name: f.span for f in parse_schedule(
        "1h:sim=ws_disconnect,2h:sim=rate_limit_storm=90s,3h:sim=ws_stall:for=10m,4h:sim=latency_ms=50,"
        "5h:defect=exits_never_sent")}
    assert spans == {"ws_disconnect": AFTERMATH, "rate_limit_storm": 90.0, "ws_stall": 600.0, "latency_ms": None,
                     "exits_never_sent": None}
