"""The decision tests' pipeline, plan and shorthands (tests/rollout/test_decide*.py): a three-stage
pipeline (A on sim, C a canary with a baseline and two sign-offs, D without auto-promotion), its
gates, and the verdicts, commands, states and decision reads the tests are written in."""

from __future__ import annotations

from controller.analysis.verdict import Outcome, Verdict
from controller.rollout.decide import Ack, Audit, Command, Decision, Notice, Plan, State, Status, decide
from controller.rollout.pipeline import Pipeline, Stage

PASS, FAIL, NODATA, INCONCLUSIVE = Outcome.PASS, Outcome.FAIL, Outcome.NODATA, Outcome.INCONCLUSIVE

PIPELINE = Pipeline(name="test", stages=[
    Stage(name="A", environment="sim", account="master", duration=100, policies="stage-a.yaml",
          progress_deadline=50),
    Stage(name="C", environment="live", account="canary", duration=100, policies="stage-c.yaml",
          baseline="master", signoffs=["owner-review", "risk-review"]),
    Stage(name="D", environment="live", account="master", duration=100, policies="stage-d.yaml",
          signoffs=["standup-review"], auto_promote=False),
])
PLAN = Plan(PIPELINE, gates={"A": frozenset({"a-latency", "a-errors"}), "C": frozenset({"c-cap"}),
                             "D": frozenset({"d-fills"})})
A, C, D = 0, 1, 2


def verdict(policy: str, outcome: Outcome, at: float = 10.0, *, action: str | None = None,
            reason: str = "") -> Verdict:
    return Verdict(policy=policy, outcome=outcome, at=at, value=1.0, threshold=0.0, condition="== 0",
                   window=60.0, samples=5, reason=reason, action=action)


def breach(policy: str = "a-errors", at: float = 10.0) -> Verdict:
    return verdict(policy, FAIL, at, action="rollback", reason="3 is not == 0")


def command(kind: str, id: int = 1, *, actor: str = "alice", **fields) -> Command:
    return Command(id=id, kind=kind, actor=actor, **fields)


def at(status: Status, stage: int = A, *, started: float = 0.0, **fields) -> State:
    return State(status=status, stage=stage, stage_started=started, **fields)


def passing(stage: int, *, clean_at: float = 0.0) -> dict[str, float]:
    """The stage's gate policies passing, their clean run long enough from ``clean_at``."""
    return dict.fromkeys(PLAN.gates[PIPELINE.stages[stage].name], clean_at)


def signed(stage: int) -> dict[str, str]:
    name = PIPELINE.stages[stage].name
    return {f"{name}/{item}": "bob" for item in PIPELINE.stages[stage].signoffs}


def run(state: State, *inputs: Command | Notice, verdicts=(), now: float = 10.0) -> Decision:
    return decide(state, list(verdicts), list(inputs), now, plan=PLAN)


def of(decision: Decision, kind: type) -> list:
    return [a for a in decision.actions if isinstance(a, kind)]


def transitions(decision: Decision) -> list[tuple[str, str]]:
    return [(a.payload["from"], a.payload["to"]) for a in of(decision, Audit) if a.kind == "rollout.transition"]


def ack(decision: Decision) -> Ack:
    (only,) = of(decision, Ack)
    return only


def audited(decision: Decision, kind: str) -> Audit:
    (only,) = [a for a in of(decision, Audit) if a.kind == kind]
    return only
