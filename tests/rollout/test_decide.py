"""The rollout's decision, one behaviour per test: what each verdict, command and notice does."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from controller.rollout.decide import (
    Ack,
    AskConfirmation,
    Audit,
    Command,
    Confirmation,
    Decision,
    FinishStage,
    Limits,
    Notice,
    Place,
    Plan,
    StartRollback,
    State,
    Status,
    decide,
    time_left,
)
from controller.rollout.pipeline import ConfirmPromotion, Pipeline, Stage

from tests.support.decisions import (
    A,
    C,
    D,
    FAIL,
    INCONCLUSIVE,
    NODATA,
    PASS,
    PIPELINE,
    PLAN,
    ack,
    at,
    audited,
    breach,
    command,
    of,
    passing,
    run,
    signed,
    transitions,
    verdict,
)


# ---------------------------------------------------------------- placing a stage

def test_a_pending_rollout_starts_promoting_its_first_stage():
    decision = run(State())
    assert decision.state.status is Status.PROMOTING and decision.state.stage == A
    assert of(decision, Place) == [Place(A)]
    assert transitions(decision) == [("pending", "promoting")]


def test_placed_starts_the_stage_clock_at_the_moment_of_placement():
    decision = run(State(Status.PROMOTING, stage=C), Notice("placed", at=7.0, stage=C), now=9.0)
    assert decision.state.status is Status.RUNNING
    assert decision.state.stage_started == 7.0
    assert transitions(decision) == [("promoting", "running")]


def test_placed_for_another_stage_is_ignored():
    decision = run(State(Status.PROMOTING, stage=C), Notice("placed", at=7.0, stage=A))
    assert decision.state == State(Status.PROMOTING, stage=C)
    assert decision.actions == ()


def test_a_failed_placement_rolls_back():
    decision = run(State(Status.PROMOTING, stage=C), Notice("place_failed", at=7.0, stage=C, detail="unit failed"))
    assert decision.state.status is Status.ROLLING_BACK
    (start,) = of(decision, StartRollback)
    assert start.trigger == "placement"
    assert start.reason == "placing stage C failed: unit failed"


def test_verdicts_while_promoting_are_ignored():
    state = State(Status.PROMOTING, stage=C)
    decision = run(state, verdicts=[breach("c-cap"), verdict("c-cap", FAIL, action="hold")])
    assert decision.state == state
    assert decision.actions == ()


def test_verdicts_in_the_batch_that_reports_placement_count_for_the_new_stage():
    decision = run(State(Status.PROMOTING, stage=C), Notice("placed", at=5.0, stage=C), verdicts=[breach("c-cap")])
    assert decision.state.status is Status.ROLLING_BACK
    assert transitions(decision) == [("promoting", "running"), ("running", "rolling_back")]


# ---------------------------------------------------------------- breaches

@pytest.mark.parametrize("status", [Status.RUNNING, Status.AWAITING_SIGNOFF, Status.PAUSED])
def test_a_rollback_policy_failing_rolls_back_from_every_judged_state(status):
    paused_from = Status.RUNNING if status is Status.PAUSED else None
    the_breach = breach("a-errors")
    decision = run(at(status, paused_from=paused_from), verdicts=[the_breach])
    assert decision.state.status is Status.ROLLING_BACK
    assert decision.state.paused_from is None
    assert of(decision, StartRollback) == [StartRollback("policy", "a-errors failed: 3 is not == 0", "a-errors",
                                                         the_breach)]
    assert of(decision, FinishStage) == [FinishStage(A, "rolled_back")]
    assert transitions(decision) == [(status.value, "rolling_back")]


def test_missing_data_with_action_rollback_rolls_back():
    decision = run(at(Status.RUNNING), verdicts=[verdict("a-info", NODATA, action="rollback",
                                                         reason="no samples in the window")])
    assert decision.state.status is Status.ROLLING_BACK
    (start,) = of(decision, StartRollback)
    assert (start.trigger, start.policy) == ("policy", "a-info")
    assert start.reason == "a-info has no data: no samples in the window"


@pytest.mark.parametrize("outcome, action", [(NODATA, "hold"), (NODATA, None), (INCONCLUSIVE, "rollback"),
                                             (PASS, "rollback"), (FAIL, "hold"), (FAIL, "alert")])
def test_only_a_failure_or_missing_data_asking_for_rollback_rolls_back(outcome, action):
    decision = run(at(Status.RUNNING), verdicts=[verdict("a-errors", outcome, action=action)])
    assert decision.state.status is Status.RUNNING
    assert of(decision, StartRollback) == []


def test_only_the_first_breach_of_a_batch_starts_the_rollback():
    decision = run(at(Status.RUNNING), verdicts=[breach("a-errors"), breach("a-latency")])
    assert [s.policy for s in of(decision, StartRollback)] == ["a-errors"]


def test_a_breach_in_the_same_batch_as_a_forced_promote_wins():
    decision = run(at(Status.RUNNING), command("promote", force=True, reason="trust me"), verdicts=[breach()])
    assert decision.state.status is Status.ROLLING_BACK
    assert of(decision, Place) == []
    assert ack(decision) == Ack(1, False, "the rollout is rolling_back; only rollback applies")
    assert not [a for a in of(decision, Audit) if a.kind == "rollout.forced_promote"]


# ---------------------------------------------------------------- the gate

def test_the_gate_opens_at_the_stage_end_when_every_gate_policy_passes():
    running = run(at(Status.RUNNING), verdicts=[verdict("a-latency", PASS), verdict("a-errors", PASS)], now=99.0)
    assert running.state.status is Status.RUNNING and of(running, Place) == []
    decision = run(running.state, now=100.0)
    assert of(decision, FinishStage) == [FinishStage(A, "passed")]
    assert of(decision, Place) == [Place(C)]
    assert decision.state == State(Status.PROMOTING, stage=C, signoffs={})
    assert transitions(decision) == [("running", "promoting")]


def test_a_failing_policy_outside_the_gate_does_not_shut_it():
    decision = run(at(Status.RUNNING, passing=passing(A)), verdicts=[verdict("a-info", FAIL, action="hold")],
                   now=100.0)
    assert of(decision, Place) == [Place(C)]


def test_the_gate_of_the_last_stage_promotes_the_release():
    state = at(Status.RUNNING, D, passing=passing(D), signoffs=signed(D))
    decision = run(state, command("promote"), now=100.0)
    assert decision.state.status is Status.PROMOTED
    assert decision.state.reason == "every stage passed"
    assert of(decision, FinishStage) == [FinishStage(D, "passed")]
    assert of(decision, Place) == []
    assert ack(decision) == Ack(1, True, "stage D promoted")
    assert transitions(decision) == [("running", "promoted")]


def test_a_gate_policy_failing_on_hold_spoils_the_gate_even_if_it_passes_again():
    spoiled = run(at(Status.RUNNING), verdicts=[verdict("a-errors", FAIL, 30.0, action="hold", reason="2 > 0")])
    assert spoiled.state.spoiled == {"a-errors": 30.0}
    assert audited(spoiled, "gate.spoiled").payload == {"stage": "A", "policy": "a-errors", "value": 1.0,
                                                        "threshold": 0.0, "reason": "2 > 0"}
    recovered = run(spoiled.state, verdicts=[verdict("a-errors", PASS, 40.0), verdict("a-latency", PASS, 40.0)])
    assert recovered.state.passing == passing(A, clean_at=80.0) and recovered.state.spoiled == {"a-errors": 30.0}

    decision = run(recovered.state, now=100.0)
    assert decision.state.status is Status.PAUSED and decision.state.paused_from is Status.RUNNING
    assert decision.state.reason == "a-errors failed during the stage (at 30): promote --force or rollback"
    assert of(decision, Place) == []


def test_a_gate_failed_during_the_stage_cannot_be_resumed_past():
    state = at(Status.PAUSED, passing=passing(A), spoiled={"a-errors": 30.0}, paused_from=Status.RUNNING)
    decision = run(state, command("resume"), now=100.0)
    assert decision.state == state
    assert ack(decision) == Ack(1, False, "the gate failed (a-errors failed during the stage (at 30)): "
                                          "promote --force --reason, or rollback")


def test_a_gate_policy_not_passing_at_the_stage_end_waits_for_its_progress_deadline():
    state = at(Status.RUNNING, passing=dict.fromkeys({"a-latency"}, 0.0))
    waiting = run(state, now=149.0)
    assert waiting.state == state and waiting.actions == ()

    decision = run(state, now=150.0)
    assert decision.state.status is Status.ROLLING_BACK
    assert of(decision, StartRollback) == [StartRollback(
        "deadline", "stage A passed its progress deadline; not passing: a-errors")]
    assert of(decision, FinishStage) == [FinishStage(A, "rolled_back")]


def test_a_gate_policy_passing_from_its_first_full_window_opens_the_gate_at_the_stage_end():
    # Duration 100, window 60: a policy passing from 40 on has passed over the whole stage.
    first = run(at(Status.RUNNING, passing={"a-latency": 0.0}), verdicts=[verdict("a-errors", PASS, 40.0)], now=40.0)
    assert first.state.passing == {"a-latency": 0.0, "a-errors": 80.0}
    assert of(run(first.state, now=100.0), Place) == [Place(C)]


def test_a_gate_policy_passing_late_keeps_the_gate_shut_until_its_clean_run_is_long_enough():
    # Passing only from 80 on: its clean run covers the stage's 100 s less the 60 s window at 120.
    late = run(at(Status.RUNNING, passing={"a-latency": 0.0}), verdicts=[verdict("a-errors", PASS, 80.0)], now=80.0)
    at_end = run(late.state, command("promote"), now=100.0)
    assert at_end.state.status is Status.RUNNING and of(at_end, Place) == []
    assert ack(at_end).message.startswith(
        "the gate is shut: passing only lately: a-errors (clean for the stage in 20 s)")
    assert of(run(late.state, now=120.0), Place) == [Place(C)]


def test_a_gate_policy_passing_too_late_for_the_deadline_rolls_back():
    late = run(at(Status.RUNNING, passing={"a-latency": 0.0}), verdicts=[verdict("a-errors", PASS, 130.0)], now=130.0)
    assert run(late.state, now=149.0).actions == ()
    decision = run(late.state, now=150.0)
    assert of(decision, StartRollback) == [StartRollback(
        "deadline", "stage A passed its progress deadline; passing only lately: a-errors")]


def test_missing_data_interrupts_a_clean_run_which_starts_again_from_the_next_pass():
    state = at(Status.RUNNING, passing={"a-latency": 0.0, "a-errors": 0.0})
    gap = run(state, verdicts=[verdict("a-errors", INCONCLUSIVE, 70.0)], now=70.0)
    again = run(gap.state, verdicts=[verdict("a-errors", PASS, 75.0)], now=75.0)
    assert again.state.passing == {"a-latency": 0.0, "a-errors": 115.0}
    assert run(again.state, now=100.0).state.status is Status.RUNNING


def test_a_rollout_stored_before_clean_runs_reads_its_passing_policies_as_clean():
    legacy = {"status": "running", "stage": 0, "stage_started": 0.0, "passing": ["a-errors", "a-latency"]}
    assert State.from_json(legacy).passing == {"a-errors": 0.0, "a-latency": 0.0}


def test_missing_data_takes_a_gate_policy_out_of_passing():
    decision = run(at(Status.RUNNING, passing=passing(A)), verdicts=[verdict("a-errors", NODATA, action="hold")],
                   now=100.0)
    assert decision.state.passing == {"a-latency": 0.0}
    assert decision.state.status is Status.RUNNING and of(decision, Place) == []


# ---------------------------------------------------------------- sign-offs

def test_a_missing_sign_off_holds_the_open_gate_awaiting_sign_off():
    decision = run(at(Status.RUNNING, C, passing=passing(C)), now=100.0)
    assert decision.state.status is Status.AWAITING_SIGNOFF
    assert decision.state.reason == "sign-off missing: owner-review, risk-review"
    assert transitions(decision) == [("running", "awaiting_signoff")]
    assert run(decision.state, now=200.0).actions == ()


def test_the_last_sign_off_promotes_an_open_gate():
    state = at(Status.AWAITING_SIGNOFF, C, passing=passing(C), signoffs={"C/risk-review": "carol"})
    decision = run(state, command("signoff", stage="C", items=("owner-review",)), now=100.0)
    assert ack(decision) == Ack(1, True, "signed owner-review of stage C")
    assert decision.state.signoffs == {"C/risk-review": "carol", "C/owner-review": "alice"}
    assert of(decision, Place) == [Place(D)]
    assert transitions(decision) == [("awaiting_signoff", "promoting")]


def test_a_sign_off_without_items_signs_every_item_of_the_stage():
    decision = run(at(Status.RUNNING, C), command("signoff", stage="C"))
    assert decision.state.signoffs == {"C/owner-review": "alice", "C/risk-review": "alice"}
    assert ack(decision).message == "signed owner-review, risk-review of stage C"
    assert audited(decision, "command.signoff").payload == {
        "command": 1, "accepted": True, "message": "signed owner-review, risk-review of stage C", "reason": None,
        "stage": "C", "items": []}


@pytest.mark.parametrize("fields, message", [
    ({"stage": "C", "items": ("owner-reviw",)},
     "stage C has no sign-off 'owner-reviw' (it has: owner-review, risk-review)"),
    ({"stage": "Z", "items": ("owner-review",)}, "no stage 'Z' in this pipeline (stages: A, C, D)"),
    ({"stage": "A"}, "stage A needs no sign-off"),
], ids=["unknown-item", "unknown-stage", "stage-without-sign-offs"])
def test_a_sign_off_naming_what_the_pipeline_lacks_is_refused(fields, message):
    state = at(Status.RUNNING, C)
    decision = run(state, command("signoff", **fields))
    assert decision.state == state
    assert ack(decision) == Ack(1, False, message)


def test_signing_the_same_item_twice_is_refused_naming_who_signed_it():
    state = at(Status.RUNNING, C, signoffs={"C/owner-review": "carol"})
    decision = run(state, command("signoff", stage="C", items=("owner-review",)))
    assert decision.state == state
    assert ack(decision) == Ack(1, False, "already signed: owner-review by carol")


def test_a_sign_off_repeating_a_signed_item_signs_only_the_new_one():
    state = at(Status.RUNNING, C, signoffs={"C/owner-review": "carol"})
    decision = run(state, command("signoff", stage="C", items=("owner-review", "risk-review")))
    assert decision.state.signoffs == {"C/owner-review": "carol", "C/risk-review": "alice"}
    assert ack(decision) == Ack(1, True, "signed risk-review of stage C")


def test_sign_offs_given_while_the_stage_runs_open_the_gate_at_its_end():
    signed_early = run(at(Status.RUNNING, C, passing=passing(C)), command("signoff", stage="C"), now=50.0)
    decision = run(signed_early.state, now=100.0)
    assert of(decision, Place) == [Place(D)]
    assert transitions(decision) == [("running", "promoting")]


FOUR_EYES = Plan(Pipeline(name="four-eyes", stages=[
    Stage(name="C", environment="live", account="canary", duration=100, policies="stage-c.yaml",
          signoffs=["owner-review"], signers=2),
    Stage(name="D", environment="live", account="master", duration=100, policies="stage-d.yaml"),
]), gates={"C": frozenset({"c-cap"}), "D": frozenset()})


def four_eyes(state: State, *inputs: Command, now: float = 100.0) -> Decision:
    return decide(state, [], list(inputs), now, plan=FOUR_EYES)


def test_a_four_eyes_stage_waits_for_a_second_operating_system_user_after_the_first_signs():
    state = State(Status.RUNNING, 0, 0.0, passing={"c-cap": 0.0})
    first = four_eyes(state, command("signoff", stage="C", actor="alice", os_user="alice"))
    assert ack(first) == Ack(1, True, "signed owner-review of stage C (1 of 2 signers)")
    assert first.state.status is Status.AWAITING_SIGNOFF
    assert first.state.reason == ("sign-off missing: 1 more signer (distinct operating-system users; "
                                  "signed by alice)")
    assert of(first, Place) == []

    second = four_eyes(first.state, command("signoff", 2, stage="C", actor="bob", os_user="bob"), now=101.0)
    assert ack(second) == Ack(2, True, "signed owner-review of stage C (2 of 2 signers)")
    assert second.state.signers == {"C": ("alice", "bob")}
    assert second.state.signoffs == {"C/owner-review": "alice"}
    assert of(second, Place) == [Place(1)]
    assert State.from_json(json.loads(json.dumps(second.state.to_json()))) == second.state


def test_the_same_operating_system_user_claiming_another_name_is_not_a_second_pair_of_eyes():
    state = State(Status.AWAITING_SIGNOFF, 0, 0.0, passing={"c-cap": 0.0}, signoffs={"C/owner-review": "alice"},
                  signers={"C": ("alice",)})
    decision = four_eyes(state, command("signoff", stage="C", actor="bob", os_user="alice"))
    assert decision.state == state
    assert ack(decision) == Ack(1, False, "already signed: owner-review by alice; stage C needs 2 distinct "
                                          "operating-system users and alice has signed")
    assert of(decision, Place) == []


def test_a_stage_with_signers_needs_items_to_sign():
    with pytest.raises(ValueError, match="2 signers of no sign-off item"):
        Stage(name="C", environment="live", account="canary", duration=100, policies="stage-c.yaml", signers=2)


def test_a_stage_that_waits_for_an_operator_does_not_promote_itself():
    state = at(Status.RUNNING, D, passing=passing(D), signoffs=signed(D))
    waiting = run(state, now=100.0)
    assert waiting.state.status is Status.AWAITING_SIGNOFF
    assert waiting.state.reason == "waiting for an operator's promote"
    assert of(waiting, Place) == [] and run(waiting.state, now=86_000.0).actions == ()  # inside its waiting deadline

    decision = run(waiting.state, command("promote"), now=101.0)
    assert decision.state.status is Status.PROMOTED
    assert ack(decision) == Ack(1, True, "stage D promoted")


# ---------------------------------------------------------------- promote

def test_promote_with_a_shut_gate_is_refused_listing_every_blocker():
    state = at(Status.RUNNING, C, passing={}, spoiled={"c-cap": 20.0}, signoffs={"C/owner-review": "bob"})
    decision = run(state, command("promote"), now=40.0)
    assert decision.state == state
    assert ack(decision) == Ack(1, False, "the gate is shut: stage C has 60 s left; c-cap failed during the stage "
                                          "(at 20); not passing: c-cap; sign-off missing: risk-review "
                                          "(promote --force --reason TEXT overrides, audited)")


def test_a_forced_promote_without_a_reason_is_refused():
    state = at(Status.RUNNING, C)
    decision = run(state, command("promote", force=True))
    assert decision.state == state
    assert ack(decision) == Ack(1, False, "a forced promote needs a reason (--reason TEXT)")


def test_a_forced_promote_with_a_reason_skips_the_gate_and_is_audited():
    decision = run(at(Status.RUNNING, C), command("promote", force=True, reason="owner on holiday"), now=40.0)
    assert ack(decision) == Ack(1, True, "stage C promoted by force")
    assert of(decision, FinishStage) == [FinishStage(C, "forced")]
    assert of(decision, Place) == [Place(D)]
    forced = audited(decision, "rollout.forced_promote")
    assert forced.actor == "alice"
    assert forced.payload == {"stage": "C", "reason": "owner on holiday", "blockers": [
        "stage C has 60 s left", "not passing: c-cap", "sign-off missing: owner-review, risk-review"]}
    assert transitions(decision) == [("running", "promoting")]
    assert audited(decision, "command.promote").payload["force"] is True


def test_a_forced_promote_moves_a_paused_rollout_past_its_failed_gate():
    state = at(Status.PAUSED, spoiled={"a-errors": 30.0}, paused_from=Status.RUNNING)
    decision = run(state, command("promote", force=True, reason="known flaky metric"), now=120.0)
    assert of(decision, Place) == [Place(C)]
    assert decision.state.spoiled == {} and decision.state.paused_from is None


@pytest.mark.parametrize("status", [Status.PENDING, Status.PROMOTING])
def test_promote_before_the_stage_is_placed_is_refused(status):
    decision = run(State(status, stage=A), command("promote", force=True, reason="hurry"))
    assert ack(decision) == Ack(1, False, f"cannot promote while {status.value}")
    assert of(decision, Place) == ([Place(A)] if status is Status.PENDING else [])  # pending: time starts it


def test_a_promote_naming_another_stage_than_the_current_one_is_refused():
    state = at(Status.RUNNING, D)
    decision = run(state, command("promote", force=True, reason="C looks fine", stage="C"))
    assert decision.state == state
    assert ack(decision) == Ack(1, False, "the rollout is at stage D, not C: nothing promoted")


def test_a_promote_naming_the_current_stage_goes_ahead():
    decision = run(at(Status.RUNNING, D), command("promote", force=True, reason="standup skipped", stage="D"))
    assert decision.state.status is Status.PROMOTED


# ---------------------------------------------------------------- pause, resume, rollback

def test_pause_holds_a_running_stage_and_resume_returns_to_it():
    paused = run(at(Status.RUNNING), command("pause", reason="investigating"), now=20.0)
    assert paused.state.status is Status.PAUSED and paused.state.paused_from is Status.RUNNING
    assert paused.state.reason == "investigating"
    assert ack(paused) == Ack(1, True, "paused (was running); breaches still roll back")
    assert transitions(paused) == [("running", "paused")]

    resumed = run(paused.state, command("resume", 2), now=30.0)
    assert resumed.state.status is Status.RUNNING and resumed.state.paused_from is None
    assert ack(resumed) == Ack(2, True, "resumed (running)")
    assert transitions(resumed) == [("paused", "running")]


def test_a_paused_rollout_does_not_promote_at_the_stage_end():
    state = at(Status.PAUSED, passing=passing(A), paused_from=Status.RUNNING)
    assert run(state, now=1000.0).actions == ()


def test_resume_returns_to_awaiting_sign_off():
    state = at(Status.PAUSED, C, paused_from=Status.AWAITING_SIGNOFF)
    decision = run(state, command("resume"), now=150.0)
    assert decision.state.status is Status.AWAITING_SIGNOFF


def test_a_gate_failure_during_a_pause_can_be_resumed_until_the_stage_ends():
    state = at(Status.PAUSED, spoiled={"a-errors": 5.0}, paused_from=Status.RUNNING)
    decision = run(state, command("resume"), now=50.0)
    assert decision.state.status is Status.RUNNING
    assert run(decision.state, now=100.0).state.status is Status.PAUSED


@pytest.mark.parametrize("kind, status, message", [
    ("pause", Status.PROMOTING, "cannot pause while promoting"),
    ("pause", Status.PAUSED, "cannot pause while paused"),
    ("resume", Status.RUNNING, "not paused (the rollout is running)"),
    ("pause", Status.ROLLING_BACK, "the rollout is rolling_back; only rollback applies"),
    ("resume", Status.FAILED, "the rollout is failed; only rollback applies"),
    ("promote", Status.FAILED, "the rollout is failed; only rollback applies"),
    ("launch", Status.RUNNING, "unknown command 'launch'"),
])
def test_a_command_that_does_not_apply_is_refused_saying_why(kind, status, message):
    state = at(status, paused_from=Status.RUNNING if status is Status.PAUSED else None)
    decision = run(state, command(kind, reason="because"))
    assert decision.state == state
    assert ack(decision) == Ack(1, False, message)


def test_a_rollback_command_needs_a_reason():
    state = at(Status.RUNNING)
    decision = run(state, command("rollback"))
    assert decision.state == state
    assert ack(decision) == Ack(1, False, "a rollback needs a reason (--reason TEXT)")


def test_a_rollback_command_rolls_back_in_the_operators_name():
    decision = run(at(Status.RUNNING), command("rollback", reason="PnL looks off", actor="bob"))
    assert ack(decision) == Ack(1, True, "rolling back")
    assert of(decision, StartRollback) == [StartRollback("operator", "PnL looks off")]
    assert of(decision, FinishStage) == [FinishStage(A, "rolled_back")]
    (transition,) = [a for a in of(decision, Audit) if a.kind == "rollout.transition"]
    assert transition.actor == "bob" and transition.payload["reason"] == "PnL looks off"


def test_a_rollback_after_a_promote_in_the_same_batch_cancels_the_placement():
    # The promote opens the next stage, the rollback right behind it must not place it first:
    # the release would go onto the next stage's account only to be rolled back from there.
    state = at(Status.RUNNING, passing=passing(A))
    decision = run(state, command("promote", 1), command("rollback", 2, reason="fills look wrong"), now=100.0)
    assert decision.state.status is Status.ROLLING_BACK and decision.state.stage == C
    assert of(decision, Place) == []
    assert of(decision, StartRollback) == [StartRollback("operator", "fills look wrong")]
    assert of(decision, FinishStage) == [FinishStage(A, "passed")]  # C never ran: no stage run to close
    assert [(a.accepted, a.message) for a in of(decision, Ack)] == [(True, "stage A promoted"),
                                                                     (True, "rolling back")]
    assert audited(decision, "rollout.placement_cancelled").payload == {"stage": "C", "reason": "fills look wrong"}
    assert transitions(decision) == [("running", "promoting"), ("promoting", "rolling_back")]


def test_a_rollback_of_a_placement_from_an_earlier_batch_closes_its_stage_run():
    decision = run(State(Status.PROMOTING, stage=C), command("rollback", reason="stop it"))
    assert of(decision, Place) == []
    assert of(decision, FinishStage) == [FinishStage(C, "rolled_back")]  # the placement may have run
    assert not [a for a in of(decision, Audit) if a.kind == "rollout.placement_cancelled"]


def test_a_rollback_while_rolling_back_is_refused():
    state = State(Status.ROLLING_BACK, reason="x")
    decision = run(state, command("rollback", reason="again"))
    assert decision.state == state
    assert ack(decision) == Ack(1, False, "already rolling back")


def test_a_rollback_from_failed_resumes_the_rollback():
    decision = run(at(Status.FAILED, C, reason="rollback step failed: timeout"),
                   command("rollback", reason="exchange is back"))
    assert decision.state.status is Status.ROLLING_BACK
    assert ack(decision) == Ack(1, True, "rollback resumed at the failed step")
    assert of(decision, StartRollback) == [StartRollback("operator", "exchange is back")]
    assert of(decision, FinishStage) == []  # the stage was finished when the rollback first started
    assert transitions(decision) == [("failed", "rolling_back")]


def test_the_executor_reports_the_rollback_done():
    decision = run(at(Status.ROLLING_BACK, reason="a-errors failed"), Notice("rolled_back", at=11.0))
    assert decision.state.status is Status.ROLLED_BACK
    assert decision.state.reason == "a-errors failed"
    assert transitions(decision) == [("rolling_back", "rolled_back")]


def test_a_failed_rollback_step_needs_an_operator():
    decision = run(at(Status.ROLLING_BACK), Notice("rollback_failed", at=11.0, detail="cancel timed out"))
    assert decision.state.status is Status.FAILED
    assert decision.state.reason == "rollback step failed: cancel timed out"


@pytest.mark.parametrize("kind", ["rolled_back", "rollback_failed"])
def test_rollback_notices_outside_a_rollback_are_ignored(kind):
    state = at(Status.RUNNING)
    assert run(state, Notice(kind, at=11.0)) == Decision(state, ())


@pytest.mark.parametrize("status", [Status.PROMOTED, Status.ROLLED_BACK])
@pytest.mark.parametrize("kind", ["promote", "rollback", "pause", "resume", "signoff"])
def test_commands_on_a_finished_rollout_are_refused(status, kind):
    state = at(status, C)
    decision = run(state, command(kind, reason="late", force=True, stage="C"), verdicts=[breach("c-cap")],
                   now=1e6)
    assert decision.state == state
    assert ack(decision) == Ack(1, False, f"the rollout is {status.value}: nothing to {kind}")


# ---------------------------------------------------------------- bookkeeping

def test_commands_are_handled_in_the_order_they_were_given():
    decision = run(at(Status.RUNNING), command("resume", 2), command("pause", 1, reason="look"))
    assert [(a.command_id, a.accepted) for a in of(decision, Ack)] == [(1, True), (2, True)]
    assert decision.state.status is Status.RUNNING


def test_every_command_is_audited_under_its_actor():
    decision = run(at(Status.RUNNING), command("pause", 4, actor="dave", reason="lunch"))
    (entry,) = [a for a in of(decision, Audit) if a.kind == "command.pause"]
    assert entry.actor == "dave"
    assert entry.payload == {"command": 4, "accepted": True, "reason": "lunch",
                             "message": "paused (was running); breaches still roll back"}


def test_the_state_survives_a_json_round_trip():
    state = State(Status.PAUSED, stage=C, stage_started=12.5, passing=dict.fromkeys({"c-cap"}, 0.0), spoiled={"c-x": 20.0},
                  signoffs={"C/owner-review": "bob"}, paused_from=Status.AWAITING_SIGNOFF, reason="look")
    assert State.from_json(state.to_json()) == state


@pytest.mark.parametrize("state, message", [
    (at(Status.RUNNING, C), "the rollout is at stage C: sign-offs of stage D are given while it runs"),
    (at(Status.PROMOTING, D, started=None),
     "the rollout is promoting (stage D not placed yet): sign-offs of stage D are given while it runs"),
    (at(Status.ROLLING_BACK, D), "the rollout is rolling_back; only rollback applies"),
], ids=["another-stage", "not-placed-yet", "rolling-back"])
def test_a_sign_off_counts_only_for_the_stage_that_runs(state, message):
    decision = run(state, command("signoff", stage="D"))
    assert decision.state.signoffs == {}
    assert ack(decision) == Ack(1, False, message)


# ---------------------------------------------------------------- commands that expire

@pytest.mark.parametrize("kind, fields", [
    ("promote", {"force": True, "reason": "owner accepts"}),
    ("resume", {}),
    ("signoff", {"stage": "A"}),
])
def test_a_command_that_moves_the_release_forward_is_refused_once_it_expired(kind, fields):
    # Given at 0 with the default 10 minutes, read at 601: whatever it would have done is not done.
    state = at(Status.PAUSED, passing=passing(A), paused_from=Status.RUNNING)
    decision = run(state, command(kind, created=0.0, **fields), now=601.0)
    assert decision.state == state
    assert of(decision, Place) == []
    refused = ack(decision)
    assert not refused.accepted and refused.expired
    assert refused.message == ("expired at 1970-01-01T00:10:00Z (given at 1970-01-01T00:00:00Z, valid 600 s): "
                               f"not applied; give the {kind} again if it still holds")
    assert audited(decision, f"command.{kind}").payload["expired_at"] == 600.0


def test_a_command_within_its_own_expiry_is_applied():
    state = at(Status.RUNNING, passing=passing(A))
    decision = run(state, command("promote", created=50.0, expires_in=60.0), now=100.0)
    assert ack(decision) == Ack(1, True, "stage A promoted")
    assert of(decision, Place) == [Place(C)]


def test_a_command_past_its_own_shorter_expiry_is_refused():
    decision = run(at(Status.RUNNING), command("promote", force=True, reason="owner accepts", created=30.0,
                                               expires_in=60.0), now=95.0)
    assert ack(decision).expired and of(decision, Place) == []


@pytest.mark.parametrize("expires_in", [0, -5, "10m", float("nan"), True])
def test_a_command_whose_expiry_cannot_be_read_is_refused(expires_in):
    decision = run(at(Status.RUNNING), command("promote", force=True, reason="owner accepts", created=89.0,
                                               expires_in=expires_in), now=90.0)
    refused = ack(decision)
    assert not refused.accepted and refused.message.startswith("its expiry ")
    assert of(decision, Place) == []


@pytest.mark.parametrize("kind, fields, status", [
    ("rollback", {"reason": "late safety is still safety"}, Status.ROLLING_BACK),
    ("pause", {}, Status.PAUSED),
])
def test_rollback_and_pause_never_expire(kind, fields, status):
    decision = run(at(Status.RUNNING), command(kind, created=0.0, expires_in=1.0, **fields), now=86_400.0)
    assert ack(decision).accepted and decision.state.status is status


# ---------------------------------------------------------------- failure limits and dry runs

def limited(**limits: Limits) -> Plan:
    return Plan(PIPELINE, PLAN.gates, limits=limits)


def feed(state: State, plan: Plan, outcomes: str, policy: str = "a-errors", *, start: float = 10.0,
         action: str = "rollback") -> tuple[State, list[Decision]]:
    """Give decide one verdict of ``policy`` per letter (P, F, N, I), one second apart, each in its own call."""
    letters = {"P": PASS, "F": FAIL, "N": NODATA, "I": INCONCLUSIVE}
    decisions = []
    for index, letter in enumerate(outcomes):
        when = start + index
        outcome = letters[letter]
        one = verdict(policy, outcome, when, action=action if outcome is FAIL else None,
                      reason="3 is not == 0" if outcome is FAIL else letter)
        decision = decide(state, [one], [], when, plan=plan)
        decisions.append(decision)
        state = decision.state
    return state, decisions


def test_without_a_failure_limit_the_first_failure_rolls_back_as_before():
    state, decisions = feed(at(Status.RUNNING), limited(), "PPF")
    assert state.status is Status.ROLLING_BACK and of(decisions[-1], StartRollback)
    assert state.evaluations == {}  # a policy without limits is not counted


def test_a_failure_limit_rolls_back_only_at_the_nth_failure_within_m_evaluations():
    plan = limited(**{"a-errors": Limits(failures=3, evaluations=5)})
    state, decisions = feed(at(Status.RUNNING), plan, "FPF")
    assert state.status is Status.RUNNING
    assert not any(of(d, StartRollback) for d in decisions)
    assert "a-errors" not in state.passing  # a failure below the limit still interrupts the clean run
    state, (last,) = feed(state, plan, "F", start=20.0)
    (start,) = of(last, StartRollback)
    assert state.status is Status.ROLLING_BACK and start.policy == "a-errors"
    assert start.reason == "a-errors failed 3 times within 5 evaluations: 3 is not == 0"


def test_failures_that_fall_out_of_the_last_m_evaluations_no_longer_count():
    plan = limited(**{"a-errors": Limits(failures=2, evaluations=3)})
    state, _ = feed(at(Status.RUNNING), plan, "FPPFPPF")
    assert state.status is Status.RUNNING
    assert state.evaluations["a-errors"].recent == "PPF"


def test_verdicts_of_one_instant_are_one_evaluation_the_worst():
    plan = limited(**{"a-errors": Limits(failures=2, evaluations=5)})
    groups = [verdict("a-errors", FAIL, 10.0, action="rollback"), verdict("a-errors", PASS, 10.0),
              verdict("a-errors", FAIL, 10.0, action="rollback")]
    decision = decide(at(Status.RUNNING), groups, [], 10.0, plan=plan)
    assert decision.state.status is Status.RUNNING
    assert decision.state.evaluations["a-errors"].recent == "F"


def test_a_gate_policy_on_hold_spoils_the_gate_only_at_its_failure_limit():
    plan = limited(**{"a-latency": Limits(failures=2, evaluations=10)})
    state, _ = feed(at(Status.RUNNING), plan, "PF", policy="a-latency", action="hold")
    assert state.spoiled == {}
    state, decisions = feed(state, plan, "F", policy="a-latency", action="hold", start=20.0)
    assert state.spoiled == {"a-latency": 20.0} and audited(decisions[-1], "gate.spoiled")


def test_the_counts_survive_a_restart_through_the_stored_state():
    plan = limited(**{"a-errors": Limits(failures=2, evaluations=4)})
    state, _ = feed(at(Status.RUNNING), plan, "PF")
    restored = State.from_json(json.loads(json.dumps(state.to_json())))
    assert restored == state
    state, _ = feed(restored, plan, "F", start=20.0)
    assert state.status is Status.ROLLING_BACK


def test_rows_written_before_limits_existed_still_load():
    row = at(Status.RUNNING).to_json()
    del row["evaluations"], row["dry_run"]
    assert State.from_json(row) == at(Status.RUNNING)


@pytest.mark.parametrize("letter, field, limit", [("N", "consecutive_errors", "consecutive_error_limit 3"),
                                                   ("I", "inconclusive", "inconclusive_limit 3")])
def test_a_consecutive_limit_pauses_the_rollout_for_a_person(letter, field, limit):
    plan = limited(**{"a-latency": Limits(**{field: 3})})
    state, decisions = feed(at(Status.RUNNING), plan, letter * 2 + "P" + letter * 2, policy="a-latency")
    assert state.status is Status.RUNNING  # a pass in between starts the run again
    state, (paused,) = feed(state, plan, letter, policy="a-latency", start=20.0)
    assert state.status is Status.PAUSED and state.paused_from is Status.RUNNING
    assert limit in state.reason and state.reason.startswith("a-latency: 3 ")
    assert audited(paused, "policy.limit_reached").payload["limit"] in state.reason
    assert transitions(paused) == [("running", "paused")]
    assert "a-latency" not in state.passing  # never a pass
    state, more = feed(state, plan, letter * 3, policy="a-latency", start=30.0)
    assert state.status is Status.PAUSED and not any(transitions(d) for d in more)


def test_a_resume_after_a_limit_pause_counts_the_limit_afresh():
    plan = limited(**{"a-latency": Limits(inconclusive=2)})
    state, _ = feed(at(Status.RUNNING), plan, "II", policy="a-latency")
    assert state.status is Status.PAUSED
    resumed = decide(state, [], [command("resume")], 15.0, plan=plan)
    assert ack(resumed).accepted and resumed.state.status is Status.RUNNING
    state, _ = feed(resumed.state, plan, "I", policy="a-latency", start=20.0)
    assert state.status is Status.RUNNING
    state, _ = feed(state, plan, "I", policy="a-latency", start=21.0)
    assert state.status is Status.PAUSED


def test_a_limit_pause_while_awaiting_signoff_resumes_there():
    plan = limited(**{"a-latency": Limits(consecutive_errors=1)})
    state, _ = feed(at(Status.AWAITING_SIGNOFF), plan, "N", policy="a-latency")
    assert state.status is Status.PAUSED and state.paused_from is Status.AWAITING_SIGNOFF


def test_a_dry_run_breach_is_recorded_and_never_acted_on():
    plan = limited(**{"a-errors": Limits(dry_run=True)})
    state, decisions = feed(at(Status.RUNNING, passing=passing(A)), plan, "PFFF")
    assert state.status is Status.RUNNING
    assert not any(of(d, StartRollback) for d in decisions)
    record = state.dry_run["a-errors"]
    assert (record.would, record.count, record.first, record.active) == ("rolled back", 1, 11.0, True)
    (event,) = [a for d in decisions for a in of(d, Audit) if a.kind == "policy.dry_run_breach"]
    assert event.payload["would_have"] == "rolled back" and event.payload["reason"] == "3 is not == 0"
    state, _ = feed(state, plan, "PF", start=20.0)
    assert state.dry_run["a-errors"].count == 2 and state.dry_run["a-errors"].last == 21.0
    assert State.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_a_dry_run_policy_with_a_failure_limit_says_when_it_would_have_acted():
    plan = limited(**{"a-errors": Limits(failures=2, evaluations=3, dry_run=True)})
    state, _ = feed(at(Status.RUNNING), plan, "FP")
    assert state.dry_run == {}
    state, _ = feed(state, plan, "F", start=20.0)
    assert state.dry_run["a-errors"].would == "rolled back" and state.status is Status.RUNNING


def test_a_dry_run_policy_would_have_paused_and_does_not():
    plan = limited(**{"a-latency": Limits(consecutive_errors=2, dry_run=True)})
    state, _ = feed(at(Status.RUNNING), plan, "NNN", policy="a-latency")
    assert state.status is Status.RUNNING
    assert state.dry_run["a-latency"].would.startswith("paused the rollout (2 evaluations in a row without data")


def test_a_dry_run_gate_policy_failing_neither_spoils_nor_interrupts_the_gate():
    plan = limited(**{"a-latency": Limits(dry_run=True)})
    state, _ = feed(at(Status.RUNNING, passing=passing(A)), plan, "F", policy="a-latency", action="hold")
    assert state.spoiled == {} and state.passing == passing(A)
    assert state.dry_run["a-latency"].would == "held the stage's gate"


# ---------------------------------------------------------------- waiting has a deadline

def waits(on_deadline: str, *, deadline: float = 1000.0) -> Plan:
    """PLAN with stage C's wait bounded by ``deadline`` seconds, ``on_waiting_deadline: on_deadline``."""
    stages = list(PIPELINE.stages)
    stages[C] = stages[C].model_copy(update={"waiting_deadline": deadline, "on_waiting_deadline": on_deadline})
    return Plan(PIPELINE.model_copy(update={"stages": stages}), PLAN.gates)


def test_a_stage_waits_at_most_a_day_by_default_and_only_alerts():
    stage = PIPELINE.stages[C]
    assert (stage.waiting_deadline, stage.on_waiting_deadline) == (86400.0, "alert")


def test_the_wait_starts_when_the_rollout_pauses_or_awaits_a_signoff_and_ends_when_it_moves_on():
    paused = run(at(Status.RUNNING, C), command("pause"), now=30.0).state
    assert paused.status is Status.PAUSED and paused.waiting_since == 30.0
    resumed = run(paused, command("resume", 2), now=40.0).state
    assert resumed.status is Status.RUNNING and resumed.waiting_since is None
    awaiting = run(at(Status.RUNNING, C, passing=passing(C)), now=100.0).state
    assert awaiting.status is Status.AWAITING_SIGNOFF and awaiting.waiting_since == 100.0


def test_pausing_while_awaiting_a_signoff_does_not_restart_the_wait():
    awaiting = at(Status.AWAITING_SIGNOFF, C, passing=passing(C), waiting_since=100.0)
    paused = run(awaiting, command("pause"), now=500.0).state
    assert paused.status is Status.PAUSED and paused.waiting_since == 100.0
    back = run(paused, command("resume", 2), now=600.0).state
    assert back.status is Status.AWAITING_SIGNOFF and back.waiting_since == 100.0


def test_a_wait_past_its_deadline_rolls_back_where_the_pipeline_says_so():
    plan = waits("rollback")
    state = at(Status.PAUSED, C, paused_from=Status.RUNNING, waiting_since=30.0)
    assert decide(state, [], [], 1029.0, plan=plan).state == state
    decision = decide(state, [], [], 1030.0, plan=plan)
    assert decision.state.status is Status.ROLLING_BACK and decision.state.waiting_since is None
    (start,) = of(decision, StartRollback)
    assert start.trigger == "waiting"
    assert start.reason == ("stage C waited 1000 s paused since 1970-01-01T00:00:30Z, past its waiting "
                            "deadline of 1000 s")
    assert of(decision, FinishStage) == [FinishStage(C, "rolled_back")]


def test_a_wait_past_its_deadline_alerts_once_and_the_rollout_goes_on_waiting():
    plan = waits("alert")
    state = at(Status.AWAITING_SIGNOFF, C, passing=passing(C), waiting_since=100.0)
    first = decide(state, [], [], 1100.0, plan=plan)
    assert first.state.status is Status.AWAITING_SIGNOFF and first.state.waiting_overdue
    (event,) = [a for a in of(first, Audit) if a.kind == "rollout.waiting_overdue"]
    assert event.payload["stage"] == "C" and event.payload["status"] == "awaiting_signoff"
    assert event.payload["waited_seconds"] == 1000.0 and "awaiting a sign-off" in event.payload["reason"]
    assert of(first, StartRollback) == []
    assert decide(first.state, [], [], 5000.0, plan=plan).actions == ()  # said once, not every tick
    # A new wait is a new deadline, said again when it passes.
    signed_off = decide(first.state, [], [command("signoff", stage="C")], 5001.0, plan=plan)
    assert signed_off.state.status is Status.PROMOTING and not signed_off.state.waiting_overdue


def test_a_signoff_read_with_a_passed_deadline_promotes_rather_than_rolls_back():
    plan = waits("rollback")
    state = at(Status.AWAITING_SIGNOFF, C, passing=passing(C), waiting_since=100.0)
    decision = decide(state, [], [command("signoff", stage="C")], 2000.0, plan=plan)
    assert decision.state.status is Status.PROMOTING and of(decision, StartRollback) == []


def test_a_wait_recorded_before_waits_were_timed_counts_from_the_stage_start():
    state = at(Status.PAUSED, C, started=0.0, paused_from=Status.RUNNING)
    assert state.waiting_since is None
    decision = decide(state, [], [], 1000.0, plan=waits("rollback"))
    assert decision.state.status is Status.ROLLING_BACK


def test_the_wait_survives_a_restart():
    state = at(Status.PAUSED, C, paused_from=Status.RUNNING, waiting_since=30.0, waiting_overdue=True)
    assert State.from_json(json.loads(json.dumps(state.to_json()))) == state
    legacy = {k: v for k, v in at(Status.PAUSED, C).to_json().items() if not k.startswith("waiting")}
    assert State.from_json(legacy).waiting_since is None


@pytest.mark.parametrize("deadline", ["0s", "-1h", "31d", "soon"])
def test_a_waiting_deadline_must_be_a_bounded_positive_duration(deadline):
    with pytest.raises(ValueError, match="waiting_deadline"):
        Stage(name="C", environment="live", account="canary", duration=100, policies="c.yaml",
              waiting_deadline=deadline)


def test_on_waiting_deadline_is_alert_or_rollback():
    with pytest.raises(ValueError, match="on_waiting_deadline"):
        Stage(name="C", environment="live", account="canary", duration=100, policies="c.yaml",
              on_waiting_deadline="page")


def test_the_time_left_exported_is_the_stage_s_and_while_the_rollout_waits_the_wait_s():
    assert time_left(at(Status.PROMOTING, C, started=None), PIPELINE, 30.0) is None
    assert time_left(at(Status.RUNNING, C, started=0.0), PIPELINE, 30.0) == 70.0
    waiting = at(Status.PAUSED, C, started=0.0, paused_from=Status.RUNNING, waiting_since=50.0)
    assert time_left(waiting, PIPELINE, 60.0) == 86390.0
    assert time_left(waiting, waits("alert").pipeline, 2000.0) == -950.0  # overdue: the gauge shows 0


# ---------------------------------------------------------------- a dry-run stage

DRY = Pipeline(name="dry", stages=[PIPELINE.stages[C].model_copy(update={"dry_run": True})])
DRY_PLAN = Plan(DRY, gates={"C": frozenset({"c-cap"})})


def dry(state: State, *inputs: Command | Notice, verdicts=(), now: float = 10.0) -> Decision:
    return decide(state, list(verdicts), list(inputs), now, plan=DRY_PLAN)


def test_a_dry_run_stage_must_be_the_pipelines_last():
    with pytest.raises(Exception, match="stage 'A' is a dry run"):
        Pipeline(name="p", stages=[PIPELINE.stages[A].model_copy(update={"dry_run": True}), PIPELINE.stages[C]])
    assert [s.dry_run for s in PIPELINE.dry_run_of("C").stages] == [True]
    assert PIPELINE.dry_run_of().stages[0].name == "A"


def test_a_breach_in_a_dry_run_stage_is_recorded_as_would_have_rolled_back_once_and_not_acted_on():
    state = at(Status.RUNNING, 0, passing={"c-cap": 0.0})
    first = dry(state, verdicts=[breach("c-cap", at=10.0)])
    assert not of(first, StartRollback) and not of(first, FinishStage) and first.state.status is Status.RUNNING
    would = first.state.would_have
    assert (would.would, would.policy, would.at) == ("rolled back", "c-cap", 10.0)
    assert would.reason == "c-cap failed: 3 is not == 0"
    (event,) = [a for a in of(first, Audit) if a.kind == "rollout.would_roll_back"]
    assert event.payload["policy"] == "c-cap" and event.payload["acted_on"] is False
    # The breach goes on, tick after tick, and another policy breaches: the rollout's decision is said once.
    later = dry(first.state, verdicts=[breach("c-cap", at=11.0), breach("c-other", at=11.0)], now=11.0)
    assert not [a for a in of(later, Audit) if a.kind.startswith("rollout.would_")]
    assert later.state.would_have == would and "c-other" in later.state.dry_run
    assert not of(later, StartRollback)


def test_a_dry_run_stage_ends_with_its_decision_and_gives_the_account_back():
    state = at(Status.RUNNING, 0, passing={"c-cap": 0.0}, signoffs=signed(C))
    ended = dry(state, now=100.0)
    assert ended.state.would_have.would == "promoted" and ended.state.status is Status.ROLLING_BACK
    assert [a.kind for a in of(ended, Audit) if a.kind.startswith("rollout.would_")] == ["rollout.would_promote"]
    assert of(ended, FinishStage) == [FinishStage(0, "dry_run")] and not of(ended, Place)
    (rollback,) = of(ended, StartRollback)
    assert rollback.trigger == "dry_run" and "would have promoted" in rollback.reason
    done = dry(ended.state, Notice("rolled_back", 101.0), now=101.0)
    assert done.state.status is Status.DRY_RUN_DONE
    assert State.from_json(json.loads(json.dumps(done.state.to_json()))) == done.state


def test_a_dry_run_stage_whose_gate_would_stay_shut_says_so_at_its_end():
    ended = dry(at(Status.RUNNING, 0), now=100.0)
    assert ended.state.would_have.would == "held"
    assert "not passing: c-cap" in ended.state.would_have.reason
    assert of(ended, StartRollback)[0].trigger == "dry_run"


def test_a_dry_run_stage_promotes_nothing_but_an_operators_rollback_acts():
    state = at(Status.RUNNING, 0, passing={"c-cap": 0.0}, signoffs=signed(C))
    refused = dry(state, command("promote", force=True, reason="ship it"), now=100.0 - 1)
    assert of(refused, Ack)[0].accepted is False and "dry run" in of(refused, Ack)[0].message
    rolled = dry(state, command("rollback", reason="enough"))
    assert of(rolled, StartRollback)[0].trigger == "operator"
    done = dry(rolled.state, Notice("rolled_back", 11.0), now=11.0)
    assert done.state.status is Status.ROLLED_BACK


# ---------------------------------------------------------------- confirm-promotion

CONFIRMED = Pipeline(name="confirmed", stages=[
    PIPELINE.stages[A].model_copy(update={"confirm_promotion": ConfirmPromotion(
        url="https://deploys.example.com/confirm?token=t", timeout=5.0)}),
    *PIPELINE.stages[1:]])
CONFIRMED_PLAN = Plan(CONFIRMED, gates=PLAN.gates)


def answer(ok: bool, detail: str, stage: str = "A") -> Confirmation:
    return Confirmation(stage, ok, detail, 99.0, "https://deploys.example.com/confirm", 200 if ok else 503)


def test_an_open_gate_with_confirm_promotion_asks_and_waits_saying_why():
    state = at(Status.RUNNING, passing=passing(A))
    asked = decide(state, [], [], 100.0, plan=CONFIRMED_PLAN)
    assert asked.state.status is Status.AWAITING_SIGNOFF and of(asked, Place) == [] and of(asked, FinishStage) == []
    assert asked.state.reason == "waiting for confirm-promotion: not answered yet" and asked.state.waiting_since == 100.0
    (ask,) = of(asked, AskConfirmation)
    assert ask.stage == A and ask.verdicts["gate"] == {"a-errors": "pass", "a-latency": "pass"}
    assert ask.verdicts["clean"] is True
    refused = decide(asked.state, [], [answer(False, "HTTP 503 from deploys.example.com/confirm")], 101.0,
                     plan=CONFIRMED_PLAN)
    assert refused.state.status is Status.AWAITING_SIGNOFF and of(refused, Place) == []
    assert refused.state.reason == "waiting for confirm-promotion: HTTP 503 from deploys.example.com/confirm"
    assert of(refused, AskConfirmation) != []  # the engine keeps asking
    assert refused.state.waiting_since == 100.0  # a new answer does not restart the wait


def test_an_endpoint_that_never_says_yes_meets_the_waiting_deadline():
    pipeline = CONFIRMED.model_copy(update={"stages": [
        CONFIRMED.stages[0].model_copy(update={"on_waiting_deadline": "rollback"}), *CONFIRMED.stages[1:]]})
    plan = replace(CONFIRMED_PLAN, pipeline=pipeline)
    asked = decide(at(Status.RUNNING, passing=passing(A)), [], [], 100.0, plan=plan)
    deadline = 100.0 + pipeline.stages[A].waiting_deadline
    before = decide(asked.state, [], [answer(False, "HTTP 503 from x/y")], deadline - 1, plan=plan)
    assert of(before, StartRollback) == []
    past = decide(before.state, [], [answer(False, "HTTP 503 from x/y")], deadline, plan=plan)
    (rollback,) = of(past, StartRollback)
    assert rollback.trigger == "waiting" and "a confirmation" in rollback.reason


def test_a_2xx_answer_promotes_and_is_audited():
    state = at(Status.RUNNING, passing=passing(A), reason="waiting for confirm-promotion: HTTP 503 from x/y")
    decision = decide(state, [], [answer(True, "HTTP 200 from deploys.example.com/confirm")], 102.0,
                      plan=CONFIRMED_PLAN)
    assert of(decision, Place) == [Place(C)] and of(decision, AskConfirmation) == []
    assert audited(decision, "rollout.promotion_confirmed").payload == {
        "stage": "A", "endpoint": "https://deploys.example.com/confirm", "status": 200, "answered_at": 99.0,
        "detail": "HTTP 200 from deploys.example.com/confirm"}


def test_a_yes_about_another_stage_or_before_the_gate_opens_promotes_nothing():
    state = at(Status.RUNNING, passing=passing(A))
    elsewhere = decide(state, [], [answer(True, "HTTP 200", stage="C")], 100.0, plan=CONFIRMED_PLAN)
    assert of(elsewhere, Place) == []
    early = decide(at(Status.RUNNING), [], [answer(True, "HTTP 200")], 50.0, plan=CONFIRMED_PLAN)
    assert of(early, Place) == [] and of(early, AskConfirmation) == []  # not asked while the gate is shut


def test_an_operators_promote_needs_the_confirmation_unless_forced():
    state = at(Status.RUNNING, passing=passing(A))
    refused = decide(state, [], [command("promote")], 100.0, plan=CONFIRMED_PLAN)
    assert ack(refused).accepted is False and "waiting for confirm-promotion: not answered yet" in ack(refused).message
    forced = decide(state, [], [command("promote", force=True, reason="endpoint down")], 100.0, plan=CONFIRMED_PLAN)
    assert of(forced, Place) == [Place(C)]
    assert "waiting for confirm-promotion: not answered yet" in audited(forced, "rollout.forced_promote").payload[
        "blockers"]
