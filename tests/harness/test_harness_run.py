"""`canaryctl harness run` with faults on a schedule, as operators run it: a real process, its
exit status, its JSON, its refusals. Each injected defect must be caught by a policy expected to
catch it, each environment fault ridden out or caught as the schedule says."""

from __future__ import annotations

import json

import pytest

from controller.rollout.info import get_rollout
from controller.store.database import Database, resolve_url
from tests.support.canaryctl import Result, assert_refused, canaryctl
from tests.support.checkout import REPO

LEVERAGE = {"b-bot-applied-leverage-equals-config", "b-exchange-leverage-matches-config"}
BOT_POLICIES = {"b-bot-applied-leverage-equals-config", "b-bot-configured-leverage-equals-config",
                "b-bucket-locks-released", "b-margin-fractions-fresh", "b-signal-latency-p95"}


def harness(*args: str, timeout: float = 200) -> Result:
    return canaryctl("harness", "run", "--no-record", "--json", *args, timeout=timeout)


def last_json(result: Result) -> dict:
    return json.loads(result.out.strip().splitlines()[-1])


def test_each_injected_fault_is_caught_by_the_policy_expected_to_catch_it_and_the_run_goes_on():
    schedule = ",".join([
        "20m:defect=wrong_leverage:SOLUSDT=20",
        "1h:defect=slow_signal_seconds=1",
        "2h:defect=unhandled_exception_after_seconds=600",
        "3h:sim=ws_disconnect",
        "3h30m:sim=latency_ms=900:for=1h:expect=b-signal-latency-p95",
        "5h:defect=exits_never_sent",
    ])
    result = harness("--duration", "12h", "--faults", schedule)
    assert result.code == 0, (result.err[-2000:], result.out[-3000:])
    report = last_json(result)
    faults = {f["spec"].split(":", 1)[1].split(":")[0]: f for f in report["faults"]}
    assert report["ok"] and report["simulated_s"] == 12 * 3600 and all(f["ok"] for f in report["faults"])

    leverage = faults["defect=wrong_leverage"]
    assert leverage["caught_by"] in LEVERAGE and leverage["outcome"] == "fail"
    assert leverage["detect_s"] < 60  # the leverage it read back, at its first scrape
    slow = faults["defect=slow_signal_seconds=1"]
    assert slow["caught_by"] == "b-signal-latency-p95" and slow["outcome"] == "fail"
    assert slow["detect_s"] < 3600  # 50 slow orders, then the policy's 5 min
    crash = faults["defect=unhandled_exception_after_seconds=600"]
    assert crash["caught_by"] in BOT_POLICIES and crash["outcome"] == "nodata"  # its /metrics went away
    assert 600 < crash["detect_s"] < 600 + 300  # the crash, then 2 min without data
    assert faults["sim=ws_disconnect"]["caught_by"] is None and faults["sim=ws_disconnect"]["ok"]
    latency = faults["sim=latency_ms=900"]
    assert latency["caught_by"] == "b-signal-latency-p95" and latency["detect_s"] < 3600
    locks = faults["defect=exits_never_sent"]
    assert locks["caught_by"] == "b-bucket-locks-released" and locks["outcome"] == "fail"
    assert 4 * 3600 < locks["detect_s"] < 7 * 3600  # no margin given back for 6 h, once every bucket holds some

    breaches = report["breaches"]
    assert breaches and all(b["expected"] for b in breaches)
    assert {b["fault"] for b in breaches} == {f["spec"] for f in report["faults"]
                                              if f["outcome"] == "fail"}
    # Every catch rolled back to the healthy release, judged afresh and passing at the end.
    assert report["releases_placed"] == 1 + 4 + 5
    assert set(report["verdicts"].values()) <= {"pass", "inconclusive"}


def test_a_defect_no_policy_of_the_stage_watches_goes_uncaught_and_the_run_exits_1():
    result = harness("--duration", "1h", "--faults", "10m:defect=oversized_orders=5")
    assert result.code == 1, (result.err[-2000:], result.out[-2000:])
    (fault,) = last_json(result)["faults"]
    assert fault["expected"] == [] and fault["caught_by"] is None and not fault["ok"]
    assert "no policy of stage B watches what oversized_orders moves" in fault["note"]
    assert "a-bucket-usage-within-allocation" in fault["note"]  # stage A's to catch
    assert last_json(result)["ok"] is False


def test_an_environment_fault_the_release_cannot_ride_out_is_a_breach_and_the_run_exits_1():
    # Orders go out one after another: with 200 ms on every answer, a signal's third order
    # takes 600 ms, and the latency policy (p95 < 400 ms) fails a release that did nothing wrong.
    result = harness("--duration", "2h", "--faults", "30m:sim=latency_ms=200:for=1h")
    assert result.code == 1, (result.err[-2000:], result.out[-2000:])
    report = last_json(result)
    (fault,) = report["faults"]
    assert fault["caught_by"] is None and not fault["ok"]
    assert report["breaches"][0]["policy"] == "b-signal-latency-p95"
    assert report["breaches"][0]["expected"] is False


@pytest.mark.parametrize(("spec", "fragment"), [
    ("2h:sim=ws_disconect", "--faults item 1 ('2h:sim=ws_disconect'): unknown sim fault 'ws_disconect'"),
    ("10m:defect=wrong_leverage:SOLUSDT=20,3h:sim=ws_disconnect", "item 2 ('3h:sim=ws_disconnect'): it comes "
                                                                  "at or after the end of the run (1 h)"),
    ("10m:sim=latency_ms=900:expect=a-signal-latency-p95", "it is a policy of stage A"),
])
def test_a_bad_schedule_is_refused_with_exit_2_and_nothing_is_run_or_written(tmp_path, spec, fragment):
    db = tmp_path / "canary.db"
    result = canaryctl("--db", f"sqlite:///{db}", "harness", "run", "--duration", "1h", "--faults", spec)
    assert_refused(result, fragment)
    assert not db.exists() and "harness:" not in result.err and result.out == ""


def test_bad_options_are_refused_with_exit_2():
    assert_refused(harness("--duration", "soon"), "'soon' is not a duration")
    assert_refused(harness("--symbols", "9"), "--symbols 9: the strategy trades 5 symbols")
    assert_refused(harness("--stage", "Z"), "--stage Z: no policy file")
    assert_refused(harness("--release", "1.0.0", "--strategy", "x.yaml"), "not both")
    assert_refused(harness("--speed", "5000"), "--speed")


def test_with_a_speed_the_clock_runs_that_many_times_faster_than_real_time():
    strategy = REPO / "examples" / "reference-bot" / "strategy-next.yaml"
    result = harness("--duration", "10m", "--speed", "300", "--strategy", str(strategy), "--symbols", "2",
                     timeout=60)
    assert result.code == 0, (result.err[-2000:], result.out[-2000:])
    report = last_json(result)
    assert report["simulated_s"] == 600 and report["breaches"] == []
    assert 600 / 300 <= report["wall_s"] < 600 / 300 + 5
    assert report["release"] == "strategy strategy-next.yaml (2 symbols)"


async def test_a_recorded_release_that_breaches_fails_the_run_which_is_recorded_as_rolled_back(tmp_path):
    db = f"sqlite:///{tmp_path / 'canary.db'}"
    assert canaryctl("db", "upgrade", db=db).code == 0
    reference = REPO / "examples" / "reference-bot"
    added = canaryctl("release", "add", "1.2.0", "--manifest", str(reference / "manifest.yaml"),
                      "--config", str(reference / "strategy-defect-leverage.yaml"), db=db)
    assert added.code == 0, added.err
    result = canaryctl("harness", "run", "--release", "1.2.0", "--duration", "30m", "--json", db=db, timeout=60)
    assert result.code == 1, (result.err[-2000:], result.out[-2000:])
    report = last_json(result)
    assert report["release"] == "1.2.0" and report["ok"] is False
    # Its wrong leverage on SOLUSDT, seen by the bot's gauge and the exchange, once each: the run goes on.
    assert sorted(b["policy"] for b in report["breaches"]) == sorted(LEVERAGE)
    assert all(b["group"] == {"symbol": "SOLUSDT"} and not b["expected"] for b in report["breaches"])
    assert report["releases_placed"] == 1 and report["simulated_s"] == 1800

    database = Database(resolve_url(db))
    try:
        rollout = await get_rollout(database, "1.2.0")
    finally:
        await database.close()
    assert rollout.id == report["rollout"] and rollout.status.value == "rolled_back"
    assert "2 unexpected breach(es)" in rollout.state.reason


def test_a_sim_fault_whose_span_runs_past_the_end_lets_the_run_end():
    # ws_disconnect's aftermath (10 min) would end 5 min after the run: the run ends first.
    result = harness("--duration", "1h", "--symbols", "2", "--faults", "55m:sim=ws_disconnect", timeout=60)
    assert result.code == 0, (result.err[-2000:], result.out[-2000:])
    report = last_json(result)
    assert report["simulated_s"] == 3600 and report["breaches"] == []
    (fault,) = report["faults"]
    assert fault["caught_by"] is None and fault["ok"] is True
