"""The rollout's invariants over random histories of verdicts, commands, notices, time and crashes.

A small model executor performs the decisions' actions on a model world (which release runs on
which account) and answers with the executor's notices; after every step the test checks the
issue's invariants against what it fed, computing the gate on its own:

(a) never two releases live on one account: no placement overlaps another or a rollback, the
    status agrees with the world, and a rolled-back rollout leaves the world as it found it;
(b) a rollback-policy breach in a judged state always starts a rollback;
(c) no promotion without an open gate or a forced promote audited with its reason;
(d) every status change is audited, the audits chained from the old status to the new, along
    the edges of the state machine;
(e) a finished rollout never changes;
(f) every command gets exactly one acknowledgement;
(g) a finished stage stays running only while its gate is clean, and past its progress
    deadline only while it passes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from hypothesis import given, note, settings
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

S = Status
EDGES = {  # the state machine of decide's docstring
    S.PENDING: {S.PROMOTING, S.ROLLING_BACK},
    S.PROMOTING: {S.RUNNING, S.ROLLING_BACK},
    S.RUNNING: {S.AWAITING_SIGNOFF, S.PAUSED, S.PROMOTING, S.PROMOTED, S.ROLLING_BACK},
    S.AWAITING_SIGNOFF: {S.PAUSED, S.PROMOTING, S.PROMOTED, S.ROLLING_BACK},
    S.PAUSED: {S.RUNNING, S.AWAITING_SIGNOFF, S.PROMOTING, S.PROMOTED, S.ROLLING_BACK},
    S.ROLLING_BACK: {S.ROLLED_BACK, S.FAILED},
    S.FAILED: {S.ROLLING_BACK},
    S.PROMOTED: set(), S.ROLLED_BACK: set(),
}
ACCOUNTS = ("master", "canary", "sub2")
ITEMS = ("alpha", "beta")
OLD, NEW = "v1", "v2"
NOTICES = ("placed", "place_failed", "rolled_back", "rollback_failed")
# Weighted by repetition so that histories reach later stages: the executor mostly succeeds and
# verdicts mostly pass; breaches and faltering gates have step kinds of their own.
REPORTS = ("done",) * 8 + ("failed", "stale")
OUTCOMES = (Outcome.PASS,) * 8 + (Outcome.FAIL, Outcome.NODATA, Outcome.INCONCLUSIVE)
ACTIONS = (None,) * 6 + ("hold", "alert", "rollback")


def is_breach(verdict: Verdict) -> bool:
    return verdict.action == "rollback" and verdict.outcome in (Outcome.FAIL, Outcome.NODATA)


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
        gates[name] = frozenset(draw(st.lists(st.sampled_from([f"p{index}-a", f"p{index}-b"]), unique=True,
                                              max_size=2)))
    return Plan(Pipeline(name="p", stages=stages), gates)


KINDS = ("promote", "signoff") * 3 + ("pause", "resume", "rollback") * 2 + COMMAND_KINDS + ("launch",)


def command_specs(plan: Plan, kinds=KINDS):
    return st.fixed_dictionaries({
        "kind": st.sampled_from(kinds),
        "reason": st.sampled_from([None, "", "because", "because"]),
        "force": st.booleans(),
        "stage": st.sampled_from([None, "Z", *(s.name for s in plan.pipeline.stages)]),
        "items": st.lists(st.sampled_from(ITEMS + ("gamma",)), max_size=2).map(tuple),
        "actor": st.sampled_from(["alice", "bob"]),
    })


def steps(plan: Plan):
    """One step: (kind, verdicts, commands, executor report, time advance); ``crash`` round-trips the state."""
    gates = sorted(set().union(*plan.gates.values())) or ["p0-a"]
    # A name, or an index standing for a gate policy of whatever stage is current when the step runs.
    policies = st.sampled_from(sorted({*gates, "p0-a", "p9-other", "x-info"})) | st.sampled_from([0, 1])
    verdicts = st.lists(st.tuples(policies, st.sampled_from(OUTCOMES), st.sampled_from(ACTIONS)), max_size=3)
    all_pass = st.just([(name, Outcome.PASS, None) for name in gates])
    faltering = st.sampled_from([Outcome.FAIL, Outcome.NODATA, Outcome.INCONCLUSIVE])
    gate_fail = st.tuples(st.sampled_from([0, 1]), faltering, st.sampled_from([None, "hold", "alert"]))
    breach = st.tuples(policies, st.sampled_from([Outcome.FAIL, Outcome.NODATA]), st.just("rollback"))
    commands = st.lists(command_specs(plan), min_size=1, max_size=2)
    sign_all = st.just([{"kind": "signoff", "reason": None, "force": False, "stage": stage.name, "items": (),
                         "actor": "carol"} for stage in plan.pipeline.stages if stage.signoffs])
    promotes = st.lists(command_specs(plan, ("promote", "resume")), min_size=1, max_size=2)
    report = st.tuples(st.sampled_from(REPORTS), st.sampled_from(NOTICES))
    dt = st.sampled_from([0.0, 1.0, 5.0, 20.0, 50.0, 100.0, 250.0])
    none = st.just([])
    return st.one_of(  # repeated branches weigh more: a history should reach later stages
        *[st.tuples(st.just("executor"), none, none, report, dt)] * 3,
        *[st.tuples(st.just("all pass"), all_pass, none, st.none(), dt)] * 2,
        *[st.tuples(st.just("time"), none, none, st.none(), dt)] * 2,
        st.tuples(st.just("sign all"), none, sign_all, st.none(), dt),
        st.tuples(st.just("verdicts"), verdicts, none, st.none(), dt),
        st.tuples(st.just("gate falters"), gate_fail.map(lambda v: [v]), none, st.none(), dt),
        st.tuples(st.just("commands"), none, commands, st.none(), dt),
        st.tuples(st.just("crash"), none, none, st.none(), st.just(0.0)),
        st.tuples(st.just("batch"), verdicts, st.lists(command_specs(plan), max_size=2), st.none() | report, dt),
        st.tuples(st.just("race"), breach.map(lambda v: [v]), promotes, st.none() | report, dt),
    )


@st.composite
def histories(draw):
    plan = draw(plans())
    return plan, draw(st.lists(steps(plan), min_size=15, max_size=60))


# ---------------------------------------------------------------- the model world

class Conflict(AssertionError):
    """An action would leave two releases live on one account."""


@dataclass
class World:
    """Which release runs where, and what the executor is in the middle of."""

    plan: Plan
    live: dict[str, str] = field(default_factory=lambda: dict.fromkeys(ACCOUNTS, OLD))
    previous: dict[str, str] = field(default_factory=dict)
    placing: int | None = None
    rolling_back: bool = False
    rollback_started: bool = False

    def account(self, stage: int) -> str:
        return self.plan.pipeline.stages[stage].account

    def perform(self, decision: Decision) -> None:
        kinds = {type(a) for a in decision.actions}
        if {Place, StartRollback} <= kinds:
            raise Conflict("Place and StartRollback in one decision: the release goes onto the stage's account "
                           "only to be rolled back from there")
        for action in decision.actions:
            if isinstance(action, Place):
                if self.rollback_started:
                    raise Conflict(f"Place({action.stage}) after a rollback started: the rollback restores "
                                   f"{OLD} where the placement starts {NEW}")
                if self.placing is not None:
                    raise Conflict(f"Place({action.stage}) while Place({self.placing}) is still under way")
                assert (decision.state.status, decision.state.stage) == (Status.PROMOTING, action.stage)
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
        """The executor's report on its work in flight (``done`` or ``failed``), or a ``stale`` repeat
        of an earlier notice (a placement of an earlier stage) that the decision must ignore."""
        outcome, kind = report
        if outcome != "stale" and self.placing is not None:
            stage, self.placing = self.placing, None
            if outcome == "failed":
                return Notice("place_failed", now, stage, detail="unit did not start")
            self._put_new(stage)
            return Notice("placed", now, stage)
        if outcome != "stale" and self.rolling_back:
            self.rolling_back = False
            if outcome == "failed":
                first = sorted(self.previous)[:1]  # one account restored, then a step failed
                self.live.update({a: self.previous[a] for a in first})
                return Notice("rollback_failed", now, detail="cancel timed out")
            self.live.update(self.previous)
            return Notice("rolled_back", now)
        if self.rolling_back or self.placing is not None:
            kind = "placed"  # a repeated rollback notice cannot be told from a real one
        return Notice(kind, now, state.stage - 1 if state.stage else None, detail="stale")


# ---------------------------------------------------------------- the gate, computed on its own

@dataclass
class GateWitness:
    """What the test fed since the current stage was placed: enough to say whether its gate is open."""

    plan: Plan
    stage: int = 0
    started: float | None = None
    outcomes: dict[str, list[Outcome]] = field(default_factory=dict)
    clean_from: dict[str, float] = field(default_factory=dict)
    """Per policy: the first pass of its current uninterrupted run of passes."""
    signed: set[str] = field(default_factory=set)

    def placed(self, stage: int, at: float) -> None:
        self.stage, self.started, self.outcomes, self.clean_from = stage, at, {}, {}

    def saw(self, verdict: Verdict) -> None:
        self.outcomes.setdefault(verdict.policy, []).append(verdict.outcome)
        if verdict.outcome is Outcome.PASS:
            self.clean_from.setdefault(verdict.policy, verdict.at - verdict.window)
        else:
            self.clean_from.pop(verdict.policy, None)

    def signoff(self, command: Command) -> None:
        names = [s.name for s in self.plan.pipeline.stages]
        if command.stage in names:
            stage = self.plan.pipeline.stages[names.index(command.stage)]
            items = command.items or tuple(stage.signoffs)
            if stage.signoffs and all(i in stage.signoffs for i in items):
                self.signed |= {f"{stage.name}/{i}" for i in items}

    def gate_policies(self) -> frozenset[str]:
        return self.plan.gates[self.plan.pipeline.stages[self.stage].name]

    def failed(self) -> list[str]:
        return sorted(p for p in self.gate_policies() if Outcome.FAIL in self.outcomes.get(p, []))

    def not_passing(self, now: float) -> list[str]:
        """Gate policies whose latest run of passes does not yet span the stage's duration."""
        duration = self.plan.pipeline.stages[self.stage].duration
        return sorted(p for p in self.gate_policies()
                      if self.outcomes.get(p, [None])[-1] is not Outcome.PASS or now - self.clean_from[p] < duration)

    def over(self, now: float, extra: float = 0.0) -> bool:
        stage = self.plan.pipeline.stages[self.stage]
        return self.started is not None and now >= self.started + stage.duration + extra

    def shut(self, now: float) -> list[str]:
        """Why the gate is shut; empty when it is open."""
        stage = self.plan.pipeline.stages[self.stage]
        unsigned = [i for i in stage.signoffs if f"{stage.name}/{i}" not in self.signed]
        return ((["stage not over"] if not self.over(now) else []) + [f"{p} failed" for p in self.failed()] +
                [f"{p} not passing" for p in self.not_passing(now)] + [f"{i} unsigned" for i in unsigned])


# ---------------------------------------------------------------- the checks

def judged_in(state: State, notice: Notice | None) -> Status:
    """The status the batch's verdicts meet: notices come first."""
    status = state.status
    if notice is None:
        return status
    if notice.kind == "placed" and status is S.PROMOTING and notice.stage == state.stage:
        return S.RUNNING
    if notice.kind == "place_failed" and status is S.PROMOTING:
        return S.ROLLING_BACK
    if notice.kind == "rolled_back" and status is S.ROLLING_BACK:
        return S.ROLLED_BACK
    if notice.kind == "rollback_failed" and status is S.ROLLING_BACK:
        return S.FAILED
    return status


def check(before: State, decision: Decision, verdicts: list[Verdict], commands: list[Command],
          notice: Notice | None, witness: GateWitness, world: World, now: float) -> None:
    after, actions = decision.state, decision.actions
    audits = [a for a in actions if isinstance(a, Audit)]
    acks = [a for a in actions if isinstance(a, Ack)]
    moves = [a.payload for a in audits if a.kind == "rollout.transition"]
    stages = witness.plan.pipeline.stages

    # (d) every status change audited, chained, along the edges of the state machine
    chain = [before.status.value] + [m["to"] for m in moves]
    assert [m["from"] for m in moves] == chain[:-1], f"transitions not chained: {moves}"
    assert chain[-1] == after.status.value, f"{before.status} -> {after.status} without its audit: {moves}"
    assert all(S(m["to"]) in EDGES[S(m["from"])] for m in moves), f"a transition off the state machine: {moves}"

    # (e) a finished rollout never changes
    if before.status in TERMINAL:
        assert after == before
        assert all(isinstance(a, Ack) or a.kind.startswith("command.") for a in actions if not isinstance(a, Ack))

    # (f) every command exactly one acknowledgement, with something to read
    assert sorted(a.command_id for a in acks) == sorted(c.id for c in commands)
    assert all(a.message for a in acks)

    # (b) a breach in a judged state always starts a rollback, and nothing promotes past it
    breaches = [v for v in verdicts if is_breach(v)]
    breached = bool(breaches) and judged_in(before, notice) in JUDGED
    if breached:
        assert after.status is S.ROLLING_BACK, f"breach of {breaches[0].policy} left the rollout {after.status}"
        start = next(a for a in actions if isinstance(a, StartRollback))
        assert (start.trigger, start.policy) == ("policy", breaches[0].policy)

    # (c) no promotion without an open gate or a forced promote audited with its reason
    advances = [m for m in moves if m["to"] == "promoted" or (m["to"] == "promoting" and m["from"] != "pending")]
    assert len(advances) <= 1, f"two promotions in one decision: {moves}"
    if advances:
        assert not breached, "promoted past a breach"
        forced = [a for a in audits if a.kind == "rollout.forced_promote"]
        finished = [a for a in actions if isinstance(a, FinishStage)]
        if forced:
            assert forced[0].payload["reason"], "a forced promote without its reason"
            assert any(c.kind == "promote" and c.force and c.reason for c in commands)
            assert finished[:1] == [FinishStage(witness.stage, "forced")]  # a rollback may follow
        else:
            assert not witness.shut(now), f"stage {witness.stage} promoted with its gate shut: {witness.shut(now)}"
            assert finished[:1] == [FinishStage(witness.stage, "passed")]
            if not stages[witness.stage].auto_promote:
                promotes = {c.id for c in commands if c.kind == "promote"}
                assert any(a.accepted and a.command_id in promotes for a in acks), \
                    "a stage without auto_promote promoted itself"

    # (g) a finished stage runs on only while its gate is clean; past its deadline, only while it passes
    if after.status in (S.RUNNING, S.AWAITING_SIGNOFF) and witness.over(now):
        assert not witness.failed(), f"the gate failed ({witness.failed()}), yet the rollout is {after.status}"
        if witness.over(now, stages[witness.stage].progress_deadline):
            assert not witness.not_passing(now), f"past the deadline with {witness.not_passing(now)} not passing"


def check_world(state: State, world: World) -> None:
    """(a) The status agrees with which release runs where."""
    if state.status in JUDGED:
        account = world.account(state.stage)
        assert world.live[account] == NEW, f"{state.status} at stage {state.stage}, yet {account} runs {OLD}"
    if state.status is S.PROMOTED:
        assert world.live[world.account(state.stage)] == NEW
    if state.status is S.ROLLED_BACK:
        assert world.live == dict.fromkeys(ACCOUNTS, OLD), f"rolled back, yet {world.live}"


# ---------------------------------------------------------------- the run

@settings(max_examples=500, database=None, deadline=None, derandomize=True)
@given(histories())
def test_the_rollout_keeps_its_invariants_over_any_history(history):
    plan, history_steps = history
    state, now, ids = State(), 0.0, 0
    world, witness = World(plan), GateWitness(plan)
    for kind, verdict_specs, command_specs, report, dt in history_steps:
        now += dt
        if kind == "crash":
            restored = State.from_json(json.loads(json.dumps(state.to_json())))
            assert restored == state and restored.to_json() == state.to_json()
            state = restored
            continue
        current = sorted(plan.gates[plan.pipeline.stages[state.stage].name]) or ["x-info"]
        verdicts = [Verdict(policy=current[p % len(current)] if isinstance(p, int) else p, outcome=o, at=now,
                            value=1.0, threshold=0.0, condition="== 0", window=60.0, samples=3, action=a)
                    for p, o, a in verdict_specs]
        commands = [Command(id=ids + n, **spec) for n, spec in enumerate(command_specs, start=1)]
        ids += len(commands)
        notice = world.notice(report, state, now) if report else None

        decision = decide(state, verdicts, ([notice] if notice else []) + commands, now, plan=plan)
        note(f"t={now} {state.status.value}/{state.stage} + {kind} {notice} {verdict_specs} {command_specs}\n"
             f"  -> {decision.state.status.value}/{decision.state.stage} {decision.actions}")

        # What the witness learns from the batch, in decide's order: the notice, verdicts, commands.
        if judged_in(state, notice) is S.RUNNING and state.status is S.PROMOTING:
            witness.placed(state.stage, notice.at)
        if judged_in(state, notice) in JUDGED:
            for verdict in verdicts:
                witness.saw(verdict)
        if judged_in(state, notice) in JUDGED and not any(is_breach(v) for v in verdicts):
            for cmd in commands:  # a sign-off counts only for the stage that runs
                if cmd.kind == "signoff" and cmd.stage == witness.plan.pipeline.stages[witness.stage].name:
                    witness.signoff(cmd)

        check(state, decision, verdicts, commands, notice, witness, world, now)
        world.perform(decision)
        state = decision.state
        check_world(state, world)
