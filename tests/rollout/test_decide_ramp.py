"""A capital ramp in decide (pure): step 0 is funded as the stage is placed, the next step only once the
gate has been clean for the whole of the step before, a step not funded rolls back, and the gate stays
shut until the last step is funded."""

from __future__ import annotations

from decimal import Decimal

from controller.analysis.verdict import Outcome
from controller.rollout.decide import Fund, Funded, Notice, Place, Plan, Ramp, State, StartRollback, Status, decide
from controller.rollout.pipeline import Pipeline, RampStep, Stage
from tests.support.decisions import ack, audited, command, of, verdict

PIPELINE = Pipeline(name="ramp", stages=[
    Stage(name="C", environment="live", account="canary", duration=1000, policies="stage-c.yaml",
          capital_cap=Decimal("0.02"), progress_deadline=100,
          ramp=[RampStep(share=Decimal("0.005"), **{"for": 300}), RampStep(share=Decimal("0.01"), **{"for": 300}),
                RampStep(share=Decimal("0.02"))]),
])
PLAN = Plan(PIPELINE, gates={"C": frozenset({"c-cap", "c-leverage"})})
BASE = {"capital": "1500", "since": 0.0}
CLEAN = {"c-cap": 0.0, "c-leverage": 0.0}


def running(step: int, *, funded_at: float | None = 0.0, clean_since: float | None = None, **fields) -> State:
    return State(status=Status.RUNNING, stage=0, stage_started=0.0, passing=dict(CLEAN),
                 ramp=Ramp(step, funded_at, clean_since), ramp_base={"live/canary": BASE}, **fields)


def funds(decision) -> list[Fund]:
    return of(decision, Fund)


def test_a_ramping_stage_has_its_first_step_funded_before_its_release_is_placed():
    decision = decide(State(), [], [], 0.0, plan=PLAN)

    assert [a for a in decision.actions if isinstance(a, (Fund, Place))] == [Fund(0, 0), Place(0)]
    assert decision.state.status is Status.PROMOTING and decision.state.ramp == Ramp(0)
    # Reported while the placement runs, it counts.
    funded = decide(decision.state, [], [Funded(0, 0, 1.0, True, "live/canary", base=BASE)], 1.0, plan=PLAN)
    assert funded.state.ramp == Ramp(0, funded_at=1.0)
    placed = decide(funded.state, [], [Notice("placed", 2.0, 0)], 2.0, plan=PLAN)
    assert placed.state.status is Status.RUNNING and placed.state.ramp == Ramp(0, funded_at=1.0)
    assert funds(placed) == []


def test_the_first_report_records_the_base_the_rollback_gives_back():
    asked = State(status=Status.RUNNING, stage=0, stage_started=5.0, ramp=Ramp(0))

    decision = decide(asked, [], [Funded(0, 0, 6.0, True, "live/canary", base=BASE)], 6.0, plan=PLAN)

    assert decision.state.ramp == Ramp(0, funded_at=6.0)
    assert decision.state.ramp_base == {"live/canary": BASE}
    assert State.from_json(decision.state.to_json()) == decision.state  # kept across a restart


def test_the_next_step_waits_for_a_clean_gate_over_the_whole_step():
    # Clean from 0: at 299 s the step has not lasted, at 300 s it has.
    waiting = decide(running(0, clean_since=0.0), [], [], 299.0, plan=PLAN)
    assert funds(waiting) == []

    due = decide(running(0, clean_since=0.0), [], [], 300.0, plan=PLAN)
    assert funds(due) == [Fund(0, 1)]
    assert due.state.ramp == Ramp(1)
    assert audited(due, "rollout.ramp_step").payload["share"] == "0.01"


def test_a_gate_that_is_not_clean_funds_nothing_and_its_clean_run_starts_again():
    dirty = decide(running(0, clean_since=0.0), [verdict("c-leverage", Outcome.NODATA, 250.0)], [], 400.0, plan=PLAN)
    assert funds(dirty) == [] and dirty.state.ramp.clean_since is None

    again = decide(dirty.state, [verdict("c-leverage", Outcome.PASS, 410.0)], [], 410.0, plan=PLAN)
    assert funds(again) == [] and again.state.ramp.clean_since == 410.0
    assert funds(decide(again.state, [], [], 709.0, plan=PLAN)) == []
    assert funds(decide(again.state, [], [], 710.0, plan=PLAN)) == [Fund(0, 1)]


def test_a_gate_policy_that_failed_during_the_stage_stops_the_ramp():
    spoiled = running(0, clean_since=0.0, spoiled={"c-cap": 100.0})

    assert funds(decide(spoiled, [], [], 900.0, plan=PLAN)) == []


def test_a_paused_rollout_funds_nothing():
    paused = running(0, clean_since=0.0, paused_from=Status.RUNNING)
    paused = State.from_json({**paused.to_json(), "status": "paused"})

    assert funds(decide(paused, [], [], 900.0, plan=PLAN)) == []


def test_a_step_not_yet_reported_funded_is_not_followed_by_the_next():
    assert funds(decide(running(0, funded_at=None, clean_since=0.0), [], [], 900.0, plan=PLAN)) == []


def test_a_step_that_could_not_be_funded_rolls_back():
    asked = running(1, funded_at=None)

    decision = decide(asked, [], [Funded(0, 1, 320.0, False, "live/canary", detail="Rejected: -2015")], 320.0,
                      plan=PLAN)

    assert decision.state.status is Status.ROLLING_BACK
    (rollback,) = of(decision, StartRollback)
    assert rollback.trigger == "ramp" and "step 2" in rollback.reason and "Rejected: -2015" in rollback.reason


def test_the_gate_stays_shut_until_the_last_step_is_funded_and_then_opens():
    refused = decide(running(1, funded_at=990.0), [], [command("promote", stage="C")], 1000.0, plan=PLAN)
    assert not ack(refused).accepted and "capital ramp at 2 of 3 steps funded" in ack(refused).message
    # At the stage's end the unfinished ramp holds the gate like a policy not passing: no promotion.
    assert decide(running(1, funded_at=990.0, clean_since=0.0), [], [], 1000.0, plan=PLAN).state.status \
        is Status.RUNNING

    done = running(2, funded_at=700.0, clean_since=0.0)
    assert decide(done, [], [], 1000.0, plan=PLAN).state.status is Status.PROMOTED


def test_a_ramp_that_never_finishes_rolls_back_at_the_progress_deadline():
    stuck = running(1, funded_at=900.0)  # funded late: its 300 s cannot pass before the deadline

    decision = decide(stuck, [], [], 1100.0, plan=PLAN)

    assert decision.state.status is Status.ROLLING_BACK
    assert "capital ramp at" in of(decision, StartRollback)[0].reason


def test_a_stage_without_a_ramp_funds_nothing():
    plain = Pipeline(name="plain", stages=[PIPELINE.stages[0].model_copy(update={"ramp": None})])

    decision = decide(State(), [], [], 0.0, plan=Plan(plain, PLAN.gates))

    assert funds(decision) == [] and decision.state.ramp is None and of(decision, Place) == [Place(0)]
