"""An open anomaly (`canaryctl note --anomaly`) keeps the last stage, or one whose pipeline says
``anomalies: block``, from being promoted until it is resolved or the promote is forced with a reason."""

from __future__ import annotations

from dataclasses import replace

from controller.rollout.decide import Audit, FinishStage, Place, Plan, Status, decide
from controller.rollout.pipeline import Pipeline
from tests.support.decisions import (
    C,
    D,
    PIPELINE,
    PLAN,
    ack,
    at,
    audited,
    command,
    of,
    passing,
    signed,
    transitions,
)

ANOMALY = "anomaly 41 (alice: fills on ETHUSDT twice the expected size)"
OPEN = replace(PLAN, open_anomalies=(ANOMALY,))


def ready(stage: int):
    """The stage over, its gate policies clean, its sign-offs given: only an anomaly can hold it."""
    return at(Status.AWAITING_SIGNOFF, stage, passing=passing(stage), signoffs=signed(stage))


def test_the_last_stage_is_not_promoted_while_an_anomaly_is_open():
    decision = decide(ready(D), [], [command("promote", stage="D")], 200.0, plan=OPEN)

    refusal = ack(decision)
    assert not refusal.accepted
    assert f"open {ANOMALY} (canaryctl note --resolves ID --text TEXT)" in refusal.message
    assert "promote --force --reason TEXT overrides" in refusal.message
    assert decision.state.status is Status.AWAITING_SIGNOFF and not of(decision, FinishStage)


def test_once_resolved_the_same_promote_goes_through():
    decision = decide(ready(D), [], [command("promote", stage="D")], 200.0, plan=PLAN)

    assert ack(decision).accepted
    assert decision.state.status is Status.PROMOTED


def test_a_forced_promote_overrides_an_open_anomaly_and_audits_it_as_a_blocker():
    decision = decide(ready(D), [], [command("promote", stage="D", force=True, reason="known rounding, INC-9")],
                      200.0, plan=OPEN)

    assert ack(decision).accepted
    assert decision.state.status is Status.PROMOTED
    forced = audited(decision, "rollout.forced_promote")
    assert forced.payload["reason"] == "known rounding, INC-9"
    assert any(ANOMALY in blocker for blocker in forced.payload["blockers"])


def test_an_anomaly_does_not_hold_a_stage_before_the_last_unless_its_pipeline_says_block():
    assert decide(ready(C), [], [], 200.0, plan=OPEN).state.status is Status.PROMOTING

    stages = list(PIPELINE.stages)
    stages[C] = stages[C].model_copy(update={"anomalies": "block"})
    blocking = Plan(Pipeline(name="test", stages=stages), PLAN.gates, open_anomalies=(ANOMALY,))
    held = decide(ready(C), [], [], 200.0, plan=blocking)
    assert held.state.status is Status.AWAITING_SIGNOFF and not of(held, Place)


def test_a_last_stage_that_says_note_is_not_held():
    stages = list(PIPELINE.stages)
    stages[D] = stages[D].model_copy(update={"anomalies": "note"})
    noting = Plan(Pipeline(name="test", stages=stages), PLAN.gates, open_anomalies=(ANOMALY,))

    assert ack(decide(ready(D), [], [command("promote", stage="D")], 200.0, plan=noting)).accepted


def test_an_auto_promoting_last_stage_waits_with_the_anomaly_as_its_reason_then_promotes_when_resolved():
    stages = list(PIPELINE.stages)
    stages[D] = stages[D].model_copy(update={"auto_promote": True})
    pipeline = Pipeline(name="test", stages=stages)
    running = at(Status.RUNNING, D, passing=passing(D), signoffs=signed(D))

    held = decide(running, [], [], 200.0, plan=Plan(pipeline, PLAN.gates, open_anomalies=(ANOMALY,)))
    assert transitions(held) == [("running", "awaiting_signoff")]
    assert held.state.reason == f"open {ANOMALY}"

    resolved = decide(held.state, [], [], 201.0, plan=Plan(pipeline, PLAN.gates))
    assert resolved.state.status is Status.PROMOTED
    assert [a.kind for a in of(resolved, Audit)] == ["rollout.transition"]
