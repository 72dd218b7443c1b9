"""The rollout's invariants over random histories of verdicts, commands, notices, time and crashes.

A small model executor performs the decisions' actions on a model world (which release runs on
which account) and answers with the executor's notices; after every step the test checks the
invariants of the issue against what it fed, computing the gate on its own:

(a) never two releases live on one account; a rolled-back rollout leaves the world as it found it;
(b) a rollback-policy breach in a judged state always starts a rollback;
(c) no promotion without an open gate or a forced promote audited with its reason;
(d) every status change is audited, the audits chained from the old status to the new;
(e) a finished rollout never changes;
(f) every command gets exactly one acknowledgement.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hypothesis import event, given, note, settings
from hypothesis import strategies as st

from controller.analysis.verdict import Outcome, Verdict
from controller.rollout.decide import (
    COMMAND_KINDS,
    JUDGED,
    TERMINAL,
    Ack,
    Audit,
    Command,
    Decision,
    FinishStage,
    Notice,
    Place,
    Plan,
    StartRollback,
    State,
    Status,
    decide,
)
from controller.rollout.pipeline import Pipeline, Stage

ACCOUNTS = ("master", "canary", "sub2")
ITEMS = ("alpha", "beta")
OLD, NEW = "v1", "v2"
NOTICES = ("placed", "place_failed", "rolled_back", "rollback_failed")
REPORTS = ("done",) * 9 + ("failed",)  # what the executor's work in flight comes to
# Weighted by repetition: mostly passing, seldom a breach, so that histories reach later stages.
OUTCOMES = (Outcome.PASS,) * 8 + (Outcome.FAIL, Outcome.NODATA, Outcome.INCONCLUSIVE)
ACTIONS = (None,) * 6 + ("hold", "alert", "rollback")


def gate_names(index: int) -> tuple[str, str]:
    return (f"p{index}-a", f"p{index}-b")


# ---------------------------------------------------------------- generated histories

@st.composite
def plans(draw) -> Plan:
    stages, gates = [], {}
    for index in range(draw(st.integers(1, 4))):
        name = f"S{index}"
        stages.append(Stage(
            name=name, environment="env", account=draw(st.sampled_from(ACCOUNTS)),
            duration=draw(st.sampled_from([10.0, 50.0, 100.0])), policies=f"stage-{index}.yaml",
            signoffs=draw(st.lists(st.sampled_from(ITEMS), unique=True, max_size=2)),
            progress_deadline=draw(st.sampled_from([0.0, 60.0, 300.0])), auto_promote=draw(st.booleans())))
        gates[name] = frozenset(draw(st.lists(st.sampled_from(gate_names(index)), unique=True, max_size=2)))
    return Plan(Pipeline(name="p", stages=stages), gates)


def verdict_specs(plan: Plan):
    names = sorted(set().union(*plan.gates.values()) | {"p0-a", "p9-other", "x-info"})
    return st.tuples(st.sampled_from(names), st.sampled_from(OUTCOMES), st.sampled_from(ACTIONS))


def command_specs(plan: Plan):
    stage_names = [s.name for s in plan.pipeline.stages]
    return st.fixed_dictionaries({
        "kind": st.sampled_from(("promote", "signoff") * 3 + ("pause", "resume") * 2 + COMMAND_KINDS + ("launch",)),
        "reason": st.sampled_from([None, "", "because"]),
        "force": st.booleans(),
        "stage": st.sampled_from([None, "Z", *stage_names]),
        "items": st.lists(st.sampled_from(ITEMS + ("gamma",)), max_size=2).map(tuple),
        "actor": st.sampled_from(["alice", "bob"]),
    })


def steps(plan: Plan):
    """One step: a batch of (verdicts, commands, executor report) after a time advance, or a crash."""
    gates = sorted(set().union(*plan.gates.values()))
    all_pass = st.just([(name, Outcome.PASS, None) for name in gates])
    sign_all = st.just([{"kind": "signoff", "reason": None, "force": False, "stage": stage.name, "items": (),
                         "actor": "carol"} for stage in plan.pipeline.stages if stage.signoffs])
    verdicts = st.lists(verdict_specs(plan), min_size=1, max_size=3)
    commands = st.lists(command_specs(plan), min_size=1, max_size=2)
    report = st.tuples(st.sampled_from(REPORTS), st.sampled_from(NOTICES))
    dt = st.sampled_from([0.0, 1.0, 5.0, 20.0, 50.0, 100.0, 250.0])
    none = st.just([])
    return st.one_of(
        st.tuples(st.just("verdicts"), verdicts, none, st.none(), dt),
        st.tuples(st.just("all pass"), all_pass, none, st.none(), dt),
        st.tuples(st.just("commands"), none, commands, st.none(), dt),
        st.tuples(st.just("sign all"), none, sign_all, st.none(), dt),
        st.tuples(st.just("executor"), none, none, report, dt),
        st.tuples(st.just("executor"), none, none, report, dt),
        st.tuples(st.just("time"), none, none, st.none(), dt),
        st.tuples(st.just("crash"), none, none, st.none(), st.just(0.0)),
        st.tuples(st.just("batch"), st.lists(verdict_specs(plan), max_size=3),
                  st.lists(command_specs(plan), max_size=2), st.none() | report, dt),
    )


@st.composite
def histories(draw):
    plan = draw(plans())
    return plan, draw(st.lists(steps(plan), min_size=10, max_size=60))


# ---------------------------------------------------------------- the model world

class Conflict(AssertionError):
    """An action would leave two releases live on one account, or undo what it should keep."""


@dataclass
class World:
    """Which release runs where, and what the executor is in the middle of."""

    plan: Plan
    live: dict[str, str] = field(default_factory=lambda: {a: OLD for a in ACCOUNTS})
    previous: dict[str, str] = field(default_factory=dict)
    placing: int | None = None
    rolling_back: bool = False
    rollback_started: bool = False

    def account(self, stage: int) -> str:
        return self.plan.pipeline.stages[stage].account

    def perform(self, decision: Decision) -> None:
        for action in decision.actions:
            if isinstance(action, Place):
                if self.rollback_started:
                    raise Conflict(f"Place({action.stage}) after a rollback started: the rollback restores "
                                   f"{OLD} where the placement puts {NEW}")
                if self.placing is not None:
                    raise Conflict(f"Place({action.stage}) while Place({self.placing}) is still under way")
                assert decision.state.status is Status.PROMOTING and decision.state.stage == action.stage
                self.placing = action.stage
            elif isinstance(action, StartRollback):
                if self.rolling_back:
                    raise Conflict("a second rollback while one is under way")
                if self.placing is not None:  # the worst case: the placement completed before it stopped
                    self._put_new(self.placing)
                    self.placing = None
                self.rolling_back = self.rollback_started = True

    def _put_new(self, stage: int) -> None:
        account = self.account(stage)
        self.previous.setdefault(account, self.live[account])
        self.live[account] = NEW  # stops what ran there first

    def notice(self, report: tuple[str, str], state: State, now: float) -> Notice:
        """The executor's report of its work in flight (``done`` or ``failed``); with nothing in
        flight, a stale repeat of the given kind, which the decision must ignore."""
        outcome, stale = report
        if self.placing is not None:
            stage, self.placing = self.placing, None
            if outcome == "failed":
                return Notice("place_failed", now, stage, detail="unit did not start")
            self._put_new(stage)
            return Notice("placed", now, stage)
        if self.rolling_back:
            self.rolling_back = False
            if outcome == "failed":
                first = sorted(self.previous)[:1]  # one account restored, then a step failed
                self.live.update({a: self.previous[a] for a in first})
                return Notice("rollback_failed", now, detail="cancel timed out")
            self.live.update(self.previous)
            return Notice("rolled_back", now)
        return Notice(stale, now, state.stage, detail="stale")


# ---------------------------------------------------------------- the gate, computed on its own

@dataclass
class GateWitness:
    """What the test fed, kept per stage since its placement: enough to say if its gate is open."""

    plan: Plan
    stage: int = 0
    started: float | None = None
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    signed: set[str] = field(default_factory=set)

    def placed(self, stage: int, at: float) -> None:
        self.stage, self.started, self.outcomes = stage, at, {}

    def saw(self, verdict: Verdict) -> None:
        self.outcomes.setdefault(verdict.policy, []).append(verdict.outcome)

    def signoff(self, command: Command) -> None:
        names = [s.name for s in self.plan.pipeline.stages]
        if command.stage not in names:
            return
        stage = self.plan.pipeline.stages[names.index(command.stage)]
        items = command.items or tuple(stage.signoffs)
        if stage.signoffs and all(i in stage.signoffs for i in items):
            self.signed |= {f"{stage.name}/{i}" for i in items}

    def open(self, now: float) -> list[str]:
        """Why the gate is shut; empty when it is open."""
        stage = self.plan.pipeline.stages[self.stage]
        shut = []
        if self.started is None or now < self.started + stage.duration:
            shut.append("stage not over")
        for policy in self.plan.gates[stage.name]:
            seen = self.outcomes.get(policy, [])
            if not seen or seen[-1] is not Outcome.PASS:
                shut.append(f"{policy} not passing")
            if Outcome.FAIL in seen:
                shut.append(f"{policy} failed during the stage")
        shut += [f"{item} unsigned" for item in stage.signoffs if f"{stage.name}/{item}" not in self.signed]
        return shut


# ---------------------------------------------------------------- the run

def notice_effect(status: Status, state: State, notice: Notice | None) -> Status:
    """The status the batch's verdicts are judged in: notices come first."""
    if notice is None:
        return status
    if notice.kind == "placed" and status is Status.PROMOTING and notice.stage == state.stage:
        return Status.RUNNING
    if notice.kind == "place_failed" and status is Status.PROMOTING:
        return Status.ROLLING_BACK
    if notice.kind == "rolled_back" and status is Status.ROLLING_BACK:
        return Status.ROLLED_BACK
    if notice.kind == "rollback_failed" and status is Status.ROLLING_BACK:
        return Status.FAILED
    return status


def check(before: State, decision: Decision, verdicts: list[Verdict], commands: list[Command],
          notice: Notice | None, witness: GateWitness, world: World, now: float, plan: Plan) -> None:
    after, actions = decision.state, decision.actions
    audits = [a for a in actions if isinstance(a, Audit)]
    moves = [a.payload for a in audits if a.kind == "rollout.transition"]

    # (d) every status change audited, chained from the old status to the new
    chain = [before.status.value] + [m["to"] for m in moves]
    assert [m["from"] for m in moves] == chain[:-1], f"transitions not chained: {moves}"
    assert chain[-1] == after.status.value, f"status {after.status} without a transition audit: {moves}"
    assert all(m["from"] != m["to"] for m in moves), f"a transition that changes nothing: {moves}"

    # (e) a finished rollout never changes
    if before.status in TERMINAL:
        assert after == before
        assert all(isinstance(a, Ack) or a.kind.startswith("command.") for a in actions if not isinstance(a, Ack))

    # (f) every command exactly one acknowledgement, with something to read
    acks = [a for a in actions if isinstance(a, Ack)]
    assert sorted(a.command_id for a in acks) == sorted(c.id for c in commands)
    assert all(a.message for a in acks)

    # (b) a breach in a judged state always starts a rollback
    judged_in = notice_effect(before.status, before, notice)
    breaches = [v for v in verdicts if v.action == "rollback" and v.outcome in (Outcome.FAIL, Outcome.NODATA)]
    if breaches and judged_in in JUDGED:
        assert after.status is Status.ROLLING_BACK, f"breach {breaches[0].policy} left the rollout {after.status}"
        starts = [a for a in actions if isinstance(a, StartRollback)]
        assert starts and starts[0].trigger == "policy" and starts[0].policy == breaches[0].policy

    # (c) no promotion without an open gate or a forced promote audited with its reason
    advances = [m for m in moves if m["to"] == "promoted" or (m["to"] == "promoting" and m["from"] != "pending")]
    assert len(advances) <= 1, f"two promotions in one decision: {moves}"
    if advances:
        forced = [a for a in audits if a.kind == "rollout.forced_promote"]
        finished = [a for a in actions if isinstance(a, FinishStage)]
        event("advance forced" if forced else "advance by gate")
        if advances[0]["to"] == "promoted": event("promoted")
        if forced:
            assert forced[0].payload["reason"], "a forced promote without its reason"
            assert any(c.kind == "promote" and c.force and c.reason for c in commands)
            assert finished == [FinishStage(witness.stage, "forced")]
        else:
            shut = witness.open(now)
            assert not shut, f"stage {witness.stage} promoted with its gate shut: {shut}"
            assert finished == [FinishStage(witness.stage, "passed")]
            if not plan.pipeline.stages[witness.stage].auto_promote:
                assert any(isinstance(a, Ack) and a.accepted and c.id == a.command_id and c.kind == "promote"
                           for a in acks for c in commands), "a stage without auto_promote promoted itself"
    assert not (advances and breaches and judged_in in JUDGED), "promoted past a breach"

    # (a) one release per account; a rolled-back rollout leaves the world as it found it
    assert set(world.live) == set(ACCOUNTS) and all(r in (OLD, NEW) for r in world.live.values())
    if after.status is Status.ROLLED_BACK and before.status is not Status.ROLLED_BACK:
        assert world.live == {a: OLD for a in ACCOUNTS}, f"rolled back, yet {world.live}"
    if after.status in (Status.ROLLING_BACK, Status.ROLLED_BACK, Status.FAILED):
        assert not any(isinstance(a, Place) for a in actions)


@settings(max_examples=300, database=None, deadline=None, derandomize=True)
@given(histories())
def test_the_rollout_keeps_its_invariants_over_any_history(history):
    plan, history_steps = history
    state, now, ids = State(), 0.0, 0
    world, witness = World(plan), GateWitness(plan)
    for kind, verdict_list, command_list, report, dt in history_steps:
        now += dt
        if kind == "crash":
            restored = State.from_json(json.loads(json.dumps(state.to_json())))
            assert restored == state and restored.to_json() == state.to_json()
            state = restored
            note("crash: state restored from JSON")
            continue
        verdicts = [Verdict(policy=p, outcome=o, at=now, value=1.0, threshold=0.0, condition="== 0", window=60.0,
                            samples=3, action=a) for p, o, a in verdict_list]
        commands = []
        for spec in command_list:
            ids += 1
            commands.append(Command(id=ids, **spec))
        notice = world.notice(report, state, now) if report else None
        inputs = ([notice] if notice else []) + commands

        decision = decide(state, verdicts, inputs, now, plan=plan)
        note(f"t={now}: {state.status.value}/{state.stage} + {notice} {verdict_list} {command_list} "
             f"-> {decision.state.status.value}/{decision.state.stage} {decision.actions}")

        # What the witness learns from this batch, in decide's order: notice, verdicts, commands.
        judged_in = notice_effect(state.status, state, notice)
        if judged_in is Status.RUNNING and state.status is Status.PROMOTING:
            witness.placed(state.stage, notice.at)
        if judged_in in JUDGED:
            for verdict in verdicts:
                witness.saw(verdict)
        if state.status not in TERMINAL:
            for cmd in commands:
                if cmd.kind == "signoff":
                    witness.signoff(cmd)

        check(state, decision, verdicts, commands, notice, witness, world, now, plan)
        world.perform(decision)
        state = decision.state
        for m in [a.payload for a in decision.actions if isinstance(a, Audit) and a.kind == "rollout.transition"]:
            event(f"{m['from']}->{m['to']}")
        for a in decision.actions:
            if isinstance(a, StartRollback): event(f"rollback {a.trigger}")
    event(f"final {state.status.value} stage {state.stage}")
