"""canaryctl review: the weekly review of checklist stage E holds exactly the period's items.

Two weeks of records, written through the store's own API as the daemon and the harness write
them: the week before last, a healthy rollout (promoted) whose bucket-usage policy alerted, and a
harness run that passed; last week, a rollout rolled back on an exchange-side leverage breach, a
rollout under way whose wait passed its deadline, and a harness run that failed (its injected
fault caught). The review of the last 7 days holds last week's items and none of the other's;
the one before holds the other week's; a period with nothing in it says so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from controller.analysis.verdict import Outcome, Verdict
from controller.clock import SimulatedClock
from controller.harness.faults import parse_schedule
from controller.harness.record import record_run
from controller.harness.result import Breach, FaultResult, HarnessResult
from controller.release_files import read_release
from controller.rollout.decide import Audit, State, Status
from controller.rollout.info import create_rollout, save_decision, start_stage_run
from controller.store.releases import add_release
from controller.store.review import HARNESS_EVENT, HARNESS_PIPELINE
from controller.store.rollouts import finish_stage_run
from controller.store.verdicts import VerdictLog
from tests.support.ops_rollout import PIPELINE
from tests.support.canaryctl import assert_refused, canaryctl
from tests.support.checkout import EXAMPLES, REPO

LEVERAGE = "c-exchange-leverage-matches-config"   # exchange, leverage_mismatch, per symbol
BUCKET = "c-bucket-usage-within-allocation"       # bot, strategy_bucket_usage_ratio, per bucket
LATENCY = "c-queue-latency-p95"                   # neither leverage nor bucket usage
RETIRED = "c-retired-policy"                      # in no policy file any more
DAY = 86400.0


def _verdict(policy: str, outcome: Outcome, at: float, value: float | None, *, condition: str, group: tuple = (),
             action: str | None = None, reason: str = "") -> Verdict:
    return Verdict(policy, outcome, at, value, None, condition, 600.0, 0 if value is None else 30, group, reason,
                   action)


@dataclass
class TwoWeeks:
    old_rollout: int
    rolled_back: int
    under_way: int
    old_harness: int
    new_harness: int


def _clock(now: datetime, days_ago: float) -> SimulatedClock:
    return SimulatedClock(now - timedelta(days=days_ago))


def _harness_result(*, ok: bool, at: float) -> HarnessResult:
    fault = parse_schedule("2h:defect=wrong_leverage:SOLUSDT=20")[0]
    caught = FaultResult(fault, expected=(LEVERAGE,), injected_at=7200.0, caught_by=LEVERAGE if not ok else None,
                         caught_outcome="fail" if not ok else None, detect_s=30.0 if not ok else None, ok=True)
    breach = _verdict(LEVERAGE, Outcome.FAIL, at + 7230, 20.0, condition="== 0", group=(("symbol", "SOLUSDT"),),
                      action="rollback")
    return HarnessResult(stage="B", release="1.0.0", duration_s=6 * 3600.0, simulated_s=6 * 3600.0, wall_s=12.0,
                         breaches=[] if ok else [Breach(7230.0, breach, fault)], faults=[] if ok else [caught],
                         errors=[] if ok else ["the bot stopped once"], ok=ok)


async def two_weeks(db, now: datetime) -> TwoWeeks:
    for version in ("1.0.0", "1.1.0", "1.2.0", "1.3.0"):
        await add_release(db, _clock(now, 20), read_release(version, EXAMPLES / "demo" / "manifest.yaml",
                                                            EXAMPLES / "reference-bot" / "strategy.yaml"),
                          actor="tester")

    # The week before last: 1.1.0 through C and D, promoted; its bucket usage alerted once.
    clock = _clock(now, 13)
    old = await create_rollout(db, clock, version="1.1.0", pipeline=PIPELINE, actor="tester")
    started = clock.time()
    run = await start_stage_run(db, old, 0, started)
    old = await save_decision(db, clock, old, State(Status.RUNNING, 0, started))
    await VerdictLog(db, old.id, run).record([
        _verdict(LEVERAGE, Outcome.PASS, started + 60, 0.0, condition="== 0", group=(("symbol", "BTCUSDT"),)),
        _verdict(BUCKET, Outcome.FAIL, started + 120, 0.9, condition="<= allocation * 1.02",
                 group=(("bucket", "majors"),), action="alert", reason="0.9 is not <= 0.306")])
    clock = _clock(now, 12)
    await finish_stage_run(db, clock, old.id, "C", "passed")
    run = await start_stage_run(db, old, 1, clock.time())
    old = await save_decision(db, clock, old, State(Status.RUNNING, 1, clock.time()))
    clock = _clock(now, 10)
    await finish_stage_run(db, clock, old.id, "D", "passed")
    old = await save_decision(db, clock, old, State(Status.PROMOTED, 1, clock.time() - 2 * DAY))

    clock = _clock(now, 9)
    old_harness = await record_run(db, clock, _harness_result(ok=True, at=clock.time() - DAY / 4), [],
                                   version="1.0.0", policies_file="stage-b.yaml", started=clock.time() - DAY / 4)

    # Last week: 1.2.0 rolled back on a leverage breach the exchange showed.
    clock = _clock(now, 4)
    bad = await create_rollout(db, clock, version="1.2.0", pipeline=PIPELINE, actor="tester")
    started = clock.time()
    run = await start_stage_run(db, bad, 0, started)
    bad = await save_decision(db, clock, bad, State(Status.RUNNING, 0, started))
    log = VerdictLog(db, bad.id, run)
    await log.record([
        _verdict(LEVERAGE, Outcome.PASS, started + 60, 0.0, condition="== 0", group=(("symbol", "SOLUSDT"),)),
        _verdict(BUCKET, Outcome.PASS, started + 60, 0.31, condition="<= allocation * 1.02",
                 group=(("bucket", "majors"),)),
        _verdict(BUCKET, Outcome.PASS, started + 60, 0.47, condition="<= allocation * 1.02",
                 group=(("bucket", "alts"),)),
        _verdict(LATENCY, Outcome.PASS, started + 60, 0.2, condition="< 0.500"),
        _verdict(RETIRED, Outcome.PASS, started + 60, 1.0, condition="== 1")])
    reason = f"{LEVERAGE} failed: 3 is not == 0"
    await log.record([_verdict(LEVERAGE, Outcome.FAIL, started + 3600, 3.0, condition="== 0",
                               group=(("symbol", "SOLUSDT"),), action="rollback", reason="3 is not == 0")])
    clock.advance(3605)
    await finish_stage_run(db, clock, bad.id, "C", "rolled_back")
    bad = await save_decision(db, clock, bad, State(Status.ROLLING_BACK, 0, started, reason=reason), audits=[
        Audit("rollback.planned", "controller", {"trigger": "policy", "reason": reason, "policy": LEVERAGE,
                                                 "steps": ["stop_release canary", "restore_leverage canary"]})])
    clock.advance(20)
    bad = await save_decision(db, clock, bad, State(Status.ROLLED_BACK, 0, started, reason=reason), audits=[
        Audit("rollback.step.done", "controller", {"position": 0, "step": "stop_release"}),
        Audit("rollback.step.done", "controller", {"position": 1, "step": "restore_leverage"})])

    clock = _clock(now, 2)
    new_harness = await record_run(db, clock, _harness_result(ok=False, at=clock.time() - DAY / 4), [
        _verdict(LEVERAGE, Outcome.FAIL, clock.time() - DAY / 4 + 7230, 20.0, condition="== 0",
                 group=(("symbol", "SOLUSDT"),), action="rollback")],
        version="1.0.0", policies_file="stage-b.yaml", started=clock.time() - DAY / 4)

    # Under way: 1.3.0 at C, awaiting its sign-off past the waiting deadline.
    clock = _clock(now, 1.5)
    live = await create_rollout(db, clock, version="1.3.0", pipeline=PIPELINE, actor="tester")
    started = clock.time()
    run = await start_stage_run(db, live, 0, started)
    live = await save_decision(db, clock, live, State(Status.RUNNING, 0, started))
    await VerdictLog(db, live.id, run).record([
        _verdict(LEVERAGE, Outcome.PASS, started + 60, 0.0, condition="== 0", group=(("symbol", "ETHUSDT"),))])
    clock = _clock(now, 0.2)
    live = await save_decision(db, clock, live, State(Status.AWAITING_SIGNOFF, 0, started, waiting_overdue=True),
                               audits=[Audit("rollout.waiting_overdue", "controller", {
                                   "stage": "C", "reason": "stage C waited 90000 s awaiting a sign-off"})])
    return TwoWeeks(old.id, bad.id, live.id, old_harness, new_harness)


def _review(url: str, *args: str) -> dict:
    result = canaryctl("review", *args, "--json", db=url)
    assert result.code == 0, result
    return json.loads(result.out)


async def test_the_review_of_the_last_7_days_holds_exactly_that_weeks_items(db, db_url):
    """On each backend: SQLite read with the standard library, PostgreSQL through the usual Database."""
    made = await two_weeks(db, datetime.now(tz=UTC))
    doc = _review(db_url, "--since", "7d")

    assert doc["version"] == 1 and doc["kind"] == "weekly-review" and doc["empty"] is False
    assert doc["period"]["seconds"] == 7 * DAY
    assert [(r["id"], r["release"], r["outcome"], [(s["name"], s["outcome"]) for s in r["stages"]])
            for r in doc["rollouts"]] == [
        (made.rolled_back, "1.2.0", "rolled_back", [("C", "rolled_back")]),
        (made.under_way, "1.3.0", "under way (awaiting_signoff)", [("C", None)])]
    assert doc["rollouts"][0]["finished"] is True and doc["rollouts"][0]["reason"].startswith(LEVERAGE)

    # Leverage: the exchange-side policy's changes of this week, its worst value the breach; the
    # harness run's injected 20x (a fault, on purpose) is no figure of a rollout.
    [leverage] = doc["leverage"]
    assert (leverage["policy"], leverage["source"], leverage["metric"]) == (LEVERAGE, "exchange", "leverage_mismatch")
    assert leverage["outcomes"] == {"fail": 1, "pass": 2}
    assert [(c["rollout"], c["verdict"], c["value"]) for c in leverage["changes"]] == [
        (made.rolled_back, "pass", 0.0), (made.rolled_back, "fail", 3.0), (made.under_way, "pass", 0.0)]
    worst = leverage["worst"]
    assert (worst["value"], worst["group"], worst["rollout"], worst["verdict"]) == (
        3.0, {"symbol": "SOLUSDT"}, made.rolled_back, "fail")

    # Bucket usage: this week's worst (0.47), not the week before's 0.9.
    [bucket] = doc["bucket_usage"]
    assert (bucket["policy"], bucket["worst"]["value"], bucket["worst"]["group"]) == (BUCKET, 0.47, {"bucket": "alts"})
    assert doc["policies"]["unclassified"] == [RETIRED]

    assert [(b["rollout"], b["policy"], b["verdict"], b["action"], b["stage"]) for b in doc["breaches"]] == [
        (made.rolled_back, LEVERAGE, "fail", "rollback", "C")]
    assert [(r["rollout"], r["trigger"], r["policy"], r["steps_done"], r["steps_failed"]) for r in doc["rollbacks"]] == [
        (made.rolled_back, "policy", LEVERAGE, 2, 0)]
    alerts = doc["alerts"]
    assert (alerts["recorded"], alerts["note"]) == (False, "not recorded by the controller: see Alertmanager")
    assert [(a["rollout"], a["what"]) for a in alerts["controller_alerts"]] == [
        (made.under_way, "stage C waited past its deadline")]

    harness = doc["harness"]
    assert (harness["passed"], harness["failed"]) == (0, 1)
    [run] = harness["runs"]
    assert (run["rollout"], run["result"], run["stage"], run["faults_caught"], run["unexpected_breaches"]) == (
        made.new_harness, "fail", "B", 1, 0)
    assert run["faults"] == [{"spec": "2h:defect=wrong_leverage:SOLUSDT=20", "caught_by": LEVERAGE, "ok": True}]
    assert run["errors"] == ["the bot stopped once"]


async def test_the_week_before_holds_its_own_items_and_an_empty_period_says_so(sqlite_db, sqlite_url):
    made = await two_weeks(sqlite_db, datetime.now(tz=UTC))
    doc = _review(sqlite_url, "--since", "14d", "--until", "7d")
    assert [(r["id"], r["outcome"], [s["name"] for s in r["stages"]]) for r in doc["rollouts"]] == [
        (made.old_rollout, "promoted", ["C", "D"])]
    assert [(b["policy"], b["value"], b["action"]) for b in doc["breaches"]] == [(BUCKET, 0.9, "alert")]
    assert doc["bucket_usage"][0]["worst"]["value"] == 0.9
    assert doc["rollbacks"] == [] and doc["policies"]["unclassified"] == []
    assert [a["what"] for a in doc["alerts"]["controller_alerts"]] == [f"policy {BUCKET} (on_breach: alert)"]
    assert [(r["rollout"], r["result"]) for r in doc["harness"]["runs"]] == [(made.old_harness, "pass")]

    empty = _review(sqlite_url, "--since", "40d", "--until", "30d")
    assert empty["empty"] is True and empty["rollouts"] == [] and empty["harness"]["runs"] == []
    text = canaryctl("review", "--since", "40d", "--until", "30d", db=sqlite_url)
    assert text.code == 0 and "Nothing was recorded in this period" in text.out


async def test_the_text_review_has_a_section_and_a_table_for_each_part(sqlite_db, sqlite_url):
    made = await two_weeks(sqlite_db, datetime.now(tz=UTC))
    result = canaryctl("review", db=sqlite_url)  # --since 7d by default
    assert result.code == 0, result
    text = result.out
    for title in ("# Weekly review", "## Rollouts", "## Leverage metrics", "## Bucket usage", "## Breaches",
                  "## Rollbacks", "## Alerts", "## Nightly harness runs"):
        assert f"\n{title}" in f"\n{text}", title
    assert "Alert firings: not recorded by the controller: see Alertmanager." in text
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    assert any(f"| {made.rolled_back} " in row and "| 1.2.0 " in row and "C (rolled_back)" in row for row in rows)
    assert any(row.startswith(f"| {LEVERAGE} ") and "| exchange " in row and "| 3 " in row for row in rows), rows
    assert any(row.startswith(f"| {BUCKET} ") and "| 0.47 " in row and "bucket=alts" in row for row in rows), rows
    assert "0 of 1 runs passed." in text
    assert RETIRED in text
    assert "1.1.0" not in text  # the week before last's rollout


async def test_the_archive_verifies_and_holds_the_weeks_audit_events(sqlite_db, sqlite_url, tmp_path):
    await two_weeks(sqlite_db, datetime.now(tz=UTC))
    folder = tmp_path / "reviews"
    folder.mkdir()
    written = _review(sqlite_url, "--since", "7d", "--archive", str(folder))
    archive = folder / written["archive"].rsplit("/", 1)[-1]
    assert archive.name.startswith("review-") and archive.name.endswith(".tar.gz") and archive.exists()
    assert written["members"] == 4 and written["empty"] is False

    verified = canaryctl("report", "verify", str(archive), "--json")
    assert verified.code == 0, verified
    check = json.loads(verified.out)
    assert check["ok"] is True and check["audit_events"] > 0 and check["problems"] == []
    with tarfile.open(archive) as tar:
        names = sorted(name.split("/", 1)[1] for name in tar.getnames())
        root = tar.getnames()[0].split("/", 1)[0]
        inside = json.load(tar.extractfile(f"{root}/review.json"))
        kinds = [json.loads(line)["kind"] for line in tar.extractfile(f"{root}/audit/excerpt.jsonl")]
    assert names == ["MANIFEST.sha256", "audit/excerpt.jsonl", "review.json", "review.md"]
    assert inside["version"] == 1 and len(inside["rollouts"]) == 2
    assert "rollback.planned" in kinds and HARNESS_EVENT in kinds and "release.added" not in kinds  # releases: day -20

    again = canaryctl("review", "--archive", str(archive), db=sqlite_url)
    assert_refused(again, "exists", "--force")
    named = tmp_path / "week.tar.gz"
    assert canaryctl("review", "--archive", str(named), db=sqlite_url).code == 0
    assert canaryctl("report", "verify", str(named)).code == 0


@pytest.mark.parametrize(("args", "fragments"), [
    (["--since", "last tuesday"], ["--since", "neither an ISO 8601 time", "nor a duration ago"]),
    (["--since", "7d", "--until", "soon"], ["--until", "'soon'"]),
    (["--since", "1d", "--until", "2d"], ["--since must be before --until"]),
    (["--since", "2026-03-09T00:00Z", "--until", "2026-03-02T00:00Z"], ["--since must be before --until"]),
    (["--archive", "/no/such/folder/review.tar.gz"], ["folder /no/such/folder does not exist"]),
])
async def test_bad_input_exits_2_with_a_clear_message(sqlite_db, sqlite_url, args, fragments):
    assert_refused(canaryctl("review", *args, db=sqlite_url), *fragments)


async def test_the_review_imports_no_sqlalchemy_on_sqlite(sqlite_db, sqlite_url):
    await two_weeks(sqlite_db, datetime.now(tz=UTC))
    probe = ("import sys\nfrom controller.cli.app import main\n"
             "try:\n    main(['review', '--json'])\nexcept SystemExit as e:\n    code = e.code\n"
             "heavy = sorted(m for m in ('sqlalchemy', 'aiosqlite', 'aiohttp', 'binance', 'controller.daemon')"
             " if m in sys.modules)\n"
             "print(code, ','.join(heavy), file=sys.stderr)")
    env = {**os.environ, "CANARY_DB": sqlite_url}
    env.pop("CANARY_CONFIG", None)
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env=env, cwd=REPO)
    code, _, heavy = proc.stderr.strip().splitlines()[-1].partition(" ")
    assert (code, heavy) == ("0", ""), proc.stderr


def test_the_harness_pipeline_is_the_one_the_harness_records():
    from controller.harness import record

    source = (REPO / "controller" / "harness" / "record.py").read_text()
    assert record.ENVIRONMENT == HARNESS_PIPELINE and f'{{"name": "{HARNESS_PIPELINE}"' in source
    assert f'kind="{HARNESS_EVENT}"' in source

