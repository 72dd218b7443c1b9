"""The rollout's decision: a pure function of its state, what happened, and the time.

    decide(state, verdicts, inputs, now, plan=...) -> Decision(state, actions)

No I/O, no clock: the engine passes verdicts (from verification), inputs (operator commands
and the executor's notices) and ``now`` (Clock seconds), then performs the actions. Within one
call notices come first, then verdicts, then commands, then time: a breach that arrives with an
operator's promote wins, because safety comes before progress, and a rollback that follows a
promote in the same call cancels the placement the promote asked for (it has not run yet). A
command that moves the release forward and is read after its expiry is refused as expired
(`expiry`), never applied late; ``rollback`` and ``pause`` never expire.

States::

    pending -> promoting(stage) -> running(stage) -> [awaiting_signoff] -> promoting(next) ... -> promoted
    running | awaiting_signoff | paused | promoting  --breach or operator-->  rolling_back -> rolled_back
    rolling_back --a step failed--> failed --operator rollback--> rolling_back (resumes at that step)

A stage's gate opens when its duration has passed, every gate policy has passed over the whole
stage and none failed during it, every sign-off of the stage is present, and (on the last stage, or
one whose pipeline says ``anomalies: block``) no anomaly an operator noted is open. "Over the whole
stage" means an uninterrupted run of passing verdicts as long as the stage's duration less the
policy's window (the time its first full window needs): a policy that had no data for most of
the stage and passes only near its end keeps the gate shut until its clean run is long enough,
and past the progress deadline the rollout rolls back. Missing data or an inconclusive verdict
interrupts the run. A gate policy
that failed (without asking for a rollback) leaves the gate shut: at the stage's end the rollout
pauses and asks a person (``promote --force --reason`` or ``rollback``). A gate that never
passes rolls back at the stage's progress deadline.

A policy may carry limits (`Limits`, from its file): its verdicts are then counted as evaluations,
the recent ones kept in the state so that a restarted daemon keeps counting. With a failure limit
its breach is acted on only at the N-th failure within its last M evaluations (a failure below the
limit still interrupts the gate's clean run); ``consecutive_errors`` nodata or ``inconclusive``
inconclusive evaluations in a row pause the rollout for a person, audited with the reason (a
resume starts the count again); a dry-run policy is judged and counted, and what it would have
done is recorded (`State.dry_run`, a ``policy.dry_run_breach`` audit event) but never done.

Waiting has a deadline: a rollout paused or awaiting a sign-off, a promote or a
confirm-promotion endpoint's yes still has the release
on its account, and nobody may be looking. The wait starts when it enters either state (moving
between the two does not restart it; `State.waiting_since`) and past the stage's
``waiting_deadline`` it rolls back (``on_waiting_deadline: rollback``, trigger ``waiting``) or is
said overdue once (``alert``: a ``rollout.waiting_overdue`` audit event), after everything else of
the call: a sign-off or a promote read in the same call wins over a deadline that passed meanwhile.

A dry-run stage (``dry_run: true``, the pipeline's last) is judged like any other, but every policy
in it is treated as a dry-run policy: nothing a verdict asks for is done. The first breach that
would have rolled the rollout back is recorded as its decision (`State.would_have`, audited
``rollout.would_roll_back`` once); at the stage's end, without one, the decision is what the gate
says (``rollout.would_promote`` or ``rollout.would_hold``). The rollout then gives the account its
previous release back (the rollback plan, trigger ``dry_run``) and ends ``dry_run_done``::

    running(dry-run stage) --stage over--> rolling_back --rolled back--> dry_run_done

An operator's rollback still acts (a person decided); a promote is refused: a dry run promotes nothing.

A stage with a ``digest`` schedule has its verdicts digested per period (`WriteDigest`): decide says
which periods have ended and not been digested (`Plan.digests_written`, counted from the store by the
engine, which writes them), while the stage is judged. A recurring sign-off asks for one item per
period of the stage (``standup-review/day-3``); the gate needs them all, a person signs the current
period's (or names one that has begun), and a period that ends unsigned is said overdue once
(``signoff.overdue``; `State.overdue_signoffs`).

A stage with ``confirm_promotion`` promotes only once its endpoint said yes (Flagger's
confirm-promotion). decide does not ask: with the rest of the gate open, it emits `AskConfirmation`
(on every call while it waits; the engine keeps one question under way) and reads the endpoint's
latest answer as an input (`Confirmation`). Anything but a 2xx keeps the gate shut, the answer in
the state's reason; a 2xx promotes, audited ``rollout.promotion_confirmed``. A forced promote
needs no answer (the blockers it overrode are audited).

A stage with a ``ramp`` raises its account's capital share step by step, like Argo's ``setWeight``
steps. decide moves no money: it emits `Fund` (step 0 with the stage's `Place`, before it; step N+1
once the gate has been clean, every gate policy passing and none failed, for the whole duration of
step N since it was funded) and reads the executor's `Funded` report. A step that could not be
funded rolls the rollout back (trigger ``ramp``); the stage's gate stays shut until the ramp's last
step is funded; the executor does not place a stage whose first step it could not fund (it reports the
placement failed). The account's base (its capital before the ramp) is kept in the state
(`State.ramp_base`): the rollback plan gives it back.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from controller import signoffs
from controller.analysis.policy import Policy
from controller.analysis.verdict import SEVERITY_ORDER, Outcome, Verdict
from controller.rollout.pipeline import Pipeline, digest_period, digests_ended


class Status(enum.StrEnum):
    PENDING = "pending"
    PROMOTING = "promoting"
    RUNNING = "running"
    AWAITING_SIGNOFF = "awaiting_signoff"
    PAUSED = "paused"
    PROMOTED = "promoted"
    ROLLING_BACK = "rolling_back"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    DRY_RUN_DONE = "dry_run_done"
    """A dry-run stage ended and its account has its previous release back (see the module's docstring)."""


TERMINAL = frozenset({Status.PROMOTED, Status.ROLLED_BACK, Status.DRY_RUN_DONE})
JUDGED = frozenset({Status.RUNNING, Status.AWAITING_SIGNOFF, Status.PAUSED})
"""States in which the stage's verdicts count (while promoting, the stage is not placed yet)."""
WAITING = frozenset({Status.AWAITING_SIGNOFF, Status.PAUSED})
"""States in which the rollout waits for a person, against the stage's ``waiting_deadline``."""
COMMAND_KINDS = ("promote", "rollback", "pause", "resume", "signoff")
EXPIRING_KINDS = frozenset({"promote", "resume", "signoff", "place"})
"""Commands that move a release forward (``place`` is `canaryctl baseline`): applied late, they would
act on a rollout that has moved on since they were given. ``rollback`` and ``pause`` never expire:
late safety is still safety."""
DEFAULT_EXPIRY = 600.0
"""Seconds a forward command stays valid when it names no expiry of its own."""


def asks_rollback(verdict: Verdict) -> bool:
    """A failure or missing data of a policy whose answer to it is ``rollback``."""
    return verdict.action == "rollback" and verdict.outcome in (Outcome.FAIL, Outcome.NODATA)


# ---------------------------------------------------------------- inputs

@dataclass(frozen=True)
class Command:
    """An operator's command row, as the engine read it."""

    id: int
    kind: str
    actor: str
    reason: str | None = None
    force: bool = False
    stage: str | None = None
    items: tuple[str, ...] = ()
    created: float | None = None
    """When it was given (Clock seconds, the clock of its row's ``created_at``); None: not known, as in
    a command built by hand, which is then never expired."""
    expires_in: Any = None
    """Its ``expires_in`` argument as stored (seconds; None: `DEFAULT_EXPIRY`); checked, not trusted."""
    os_user: str | None = None
    """The operating-system user that ran the `canaryctl` giving it (``actor`` is who it says it is)."""


def expiry(kind: str, created: float | None, expires_in: Any, now: float) -> tuple[str, float | None] | None:
    """Why a command may not be applied at ``now`` because of its age, and when it expired; None: it may.

    Pure, so that the daemon's commands outside a rollout (a baseline) expire by the same rule. An
    expiry that is not a positive number of seconds is refused rather than guessed (fail closed).
    """
    if kind not in EXPIRING_KINDS or created is None:
        return None
    valid = DEFAULT_EXPIRY if expires_in is None else expires_in
    if isinstance(valid, bool) or not isinstance(valid, (int, float)) or not math.isfinite(valid) or valid <= 0:
        return f"its expiry {expires_in!r} is not a positive number of seconds: not applied", None
    deadline = created + valid
    if now < deadline:
        return None
    return (f"expired at {_instant(deadline)} (given at {_instant(created)}, valid {valid:g} s): not applied; "
            f"give the {kind} again if it still holds"), deadline


def _instant(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Notice:
    """What the executor reports back: ``placed``, ``place_failed``, ``rolled_back``, ``rollback_failed``."""

    kind: str
    at: float
    stage: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class Confirmation:
    """A confirm-promotion endpoint's latest answer to the question about ``stage`` (its name)."""

    stage: str
    ok: bool
    detail: str
    """What it answered, as status shows it: ``HTTP 503 from host/path``."""
    at: float
    endpoint: str = ""
    """``scheme://host/path`` of the endpoint (never its query)."""
    status: int | None = None


@dataclass(frozen=True)
class Funded:
    """The executor's report on a `Fund`: the step's share is in the account (``ok``), or why not."""

    stage: int
    step: int
    at: float
    ok: bool
    account: str = ""
    """``environment/account``."""
    base: Mapping[str, Any] | None = None
    """The account's capital before the ramp (`controller.rollout.capital.Base` as JSON), reported with step 0."""
    detail: str = ""


@dataclass(frozen=True)
class Limits:
    """How decide counts one policy's evaluations before it acts on them (see `Policy`)."""

    failures: int = 1
    evaluations: int = 1
    """Act on a failure only once ``failures`` of the last ``evaluations`` failed."""
    consecutive_errors: int | None = None
    """Nodata evaluations in a row that pause the rollout (None: never)."""
    inconclusive: int | None = None
    """Inconclusive evaluations in a row that pause the rollout (None: never)."""
    dry_run: bool = False
    """Record what the policy would have done; never do it."""

    @classmethod
    def of(cls, policy: Policy) -> Limits | None:
        """A policy's limits; None for a policy with none (its first failure acts, as it always did)."""
        if not policy.limited:
            return None
        failure = policy.failure_limit
        return cls(failure.failures if failure else 1, failure.evaluations if failure else 1,
                   policy.consecutive_error_limit, policy.inconclusive_limit, policy.dry_run)

    @property
    def kept(self) -> int:
        """How many recent evaluations the state must keep to apply every limit."""
        return max(self.evaluations, self.consecutive_errors or 1, self.inconclusive or 1)


@dataclass(frozen=True)
class Plan:
    """What decide needs to know of the rollout besides its state: the stages and their gates."""

    pipeline: Pipeline
    gates: Mapping[str, frozenset[str]]
    """Per stage name: the policies whose passing opens the gate."""
    limits: Mapping[str, Limits] = field(default_factory=dict)
    """Per policy name (of every stage): its limits; a policy not named has none."""
    open_anomalies: tuple[str, ...] = ()
    """The rollout's open anomalies (`store.anomalies.Anomaly.label`), read where the stage's pipeline
    says they block its promotion (`Pipeline.blocks_on_anomalies`)."""
    digests_written: int | None = None
    """How many digests of the current stage the store holds (None: not known, so none is asked for)."""


# ---------------------------------------------------------------- actions

@dataclass(frozen=True)
class Place:
    """Put the release on the stage's account (stopping what ran there), then report ``placed``."""

    stage: int


@dataclass(frozen=True)
class StartRollback:
    """Run (or resume) the persisted rollback plan, then report ``rolled_back`` or ``rollback_failed``."""

    trigger: str  # policy | operator | deadline | waiting | placement | ramp
    reason: str
    policy: str | None = None
    verdict: Verdict | None = None


@dataclass(frozen=True)
class AskConfirmation:
    """Ask stage ``stage``'s confirm-promotion endpoint (unless a question is under way), reporting its
    answers as `Confirmation`s; ``verdicts``: the gate's standing, for the question's body."""

    stage: int
    verdicts: Mapping[str, Any]


@dataclass(frozen=True)
class WriteDigest:
    """Digest the verdicts of stage ``stage`` over period ``number`` (from 1): [start, end), Clock seconds."""

    stage: int
    number: int
    start: float
    end: float


@dataclass(frozen=True)
class FinishStage:
    """The stage ended: record its outcome (passed, forced, rolled_back)."""

    stage: int
    outcome: str


@dataclass(frozen=True)
class Ack:
    command_id: int
    accepted: bool
    message: str
    expired: bool = False
    """Refused because it was read after its expiry."""


@dataclass(frozen=True)
class Audit:
    kind: str
    actor: str
    payload: Mapping[str, Any]


@dataclass(frozen=True)
class Fund:
    """Bring the stage's account to ramp step ``step``'s share of the firm's capital, then report `Funded`."""

    stage: int
    step: int


Action = Place | StartRollback | AskConfirmation | WriteDigest | FinishStage | Ack | Audit | Fund


# ---------------------------------------------------------------- state

@dataclass(frozen=True)
class State:
    status: Status = Status.PENDING
    stage: int = 0
    stage_started: float | None = None
    passing: Mapping[str, float] = field(default_factory=dict)
    """Gate policies passing without interruption, with when their clean run is long enough."""
    spoiled: Mapping[str, float] = field(default_factory=dict)
    """Gate policies that failed during the stage, with when."""
    signoffs: Mapping[str, str] = field(default_factory=dict)
    """``STAGE/item`` -> who signed it."""
    signers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """Stage -> the distinct operating-system users who signed its items, in order (their claimed
    name where a command carries no user, as one built by hand)."""
    paused_from: Status | None = None
    reason: str | None = None
    evaluations: Mapping[str, Evaluations] = field(default_factory=dict)
    """Policies with limits: their recent evaluations."""
    dry_run: Mapping[str, DryRun] = field(default_factory=dict)
    """Dry-run policies that would have acted: what they would have done."""
    waiting_since: float | None = None
    """When the rollout began to wait (paused or awaiting sign-off); None while it does not wait."""
    waiting_overdue: bool = False
    """The wait passed its deadline and was said to (``on_waiting_deadline: alert``): said once."""
    would_have: WouldHave | None = None
    """A dry-run stage's decision, never acted on: the first would-be rollback, else the gate's at its end."""
    dry_run_over: bool = False
    """The dry-run stage ended: the rollback under way gives the account back and ends ``dry_run_done``."""
    overdue_signoffs: tuple[str, ...] = ()
    """``STAGE/item`` of recurring sign-offs whose period ended unsigned, said once each."""
    # -- the capital ramp (see the module's docstring)
    ramp: Ramp | None = None
    """The running stage's ramp: the step asked for, when it was funded, since when the gate is clean."""
    ramp_base: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """``environment/account`` -> its capital before its ramp (`capital.Base` as JSON), for the rollback."""

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status.value, "stage": self.stage, "stage_started": self.stage_started,
                "passing": dict(sorted(self.passing.items())), "spoiled": dict(sorted(self.spoiled.items())),
                "signoffs": dict(sorted(self.signoffs.items())),
                "signers": {k: list(v) for k, v in sorted(self.signers.items())},
                "paused_from": self.paused_from.value if self.paused_from else None, "reason": self.reason,
                "evaluations": {k: {"at": v.at, "recent": v.recent} for k, v in sorted(self.evaluations.items())},
                "dry_run": {k: v.to_json() for k, v in sorted(self.dry_run.items())},
                "waiting_since": self.waiting_since, "waiting_overdue": self.waiting_overdue,
                "would_have": self.would_have.to_json() if self.would_have else None,
                "dry_run_over": self.dry_run_over, "overdue_signoffs": list(self.overdue_signoffs),
                **({"ramp": self.ramp.to_json()} if self.ramp else {}),
                **({"ramp_base": {k: dict(v) for k, v in sorted(self.ramp_base.items())}} if self.ramp_base else {})}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> State:
        return cls(Status(data["status"]), int(data["stage"]), data.get("stage_started"),
                   _passing(data.get("passing", {})), dict(data.get("spoiled", {})), dict(data.get("signoffs", {})),
                   {k: tuple(v) for k, v in data.get("signers", {}).items()},
                   Status(data["paused_from"]) if data.get("paused_from") else None, data.get("reason"),
                   {k: Evaluations(float(v["at"]), str(v["recent"])) for k, v in data.get("evaluations", {}).items()},
                   {k: DryRun.from_json(v) for k, v in data.get("dry_run", {}).items()},
                   None if data.get("waiting_since") is None else float(data["waiting_since"]),
                   bool(data.get("waiting_overdue", False)),
                   WouldHave.from_json(data["would_have"]) if data.get("would_have") else None,
                   bool(data.get("dry_run_over", False)), tuple(data.get("overdue_signoffs", ())),
                   Ramp.from_json(data["ramp"]) if data.get("ramp") else None,
                   {k: dict(v) for k, v in data.get("ramp_base", {}).items()})


LETTERS = {Outcome.PASS: "P", Outcome.FAIL: "F", Outcome.NODATA: "N", Outcome.INCONCLUSIVE: "I"}
"""An evaluation's outcome as the state keeps it: one letter each, the newest last."""
_SEVERITY = {LETTERS[outcome]: rank for outcome, rank in SEVERITY_ORDER.items()}


@dataclass(frozen=True)
class Evaluations:
    """A policy's recent evaluations: when the newest was, and their outcomes as letters (`LETTERS`)."""

    at: float
    recent: str

    def failures(self, within: int) -> int:
        return self.recent[-within:].count("F")

    def run_of(self, letter: str) -> int:
        """How many of the newest evaluations in a row are ``letter``."""
        return len(self.recent) - len(self.recent.rstrip(letter))


@dataclass(frozen=True)
class DryRun:
    """What a dry-run policy would have done, and how often (each time from a verdict that would not)."""

    would: str
    reason: str
    first: float
    last: float
    count: int = 1
    active: bool = True
    """Its newest evaluation would still act (a new breach is counted only after one that would not)."""

    def to_json(self) -> dict[str, Any]:
        return {"would": self.would, "reason": self.reason, "first": self.first, "last": self.last,
                "count": self.count, "active": self.active}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DryRun:
        return cls(str(data["would"]), str(data.get("reason", "")), float(data["first"]), float(data["last"]),
                   int(data.get("count", 1)), bool(data.get("active", False)))


@dataclass(frozen=True)
class WouldHave:
    """What a dry-run stage would have done with the rollout (``rolled back``, ``promoted``, ``held``), with
    its evidence: why, when, and the policy's verdict where one decided it."""

    would: str
    reason: str
    at: float
    policy: str | None = None
    value: float | None = None
    threshold: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"would": self.would, "reason": self.reason, "at": self.at, "policy": self.policy,
                "value": self.value, "threshold": self.threshold}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> WouldHave:
        return cls(str(data["would"]), str(data.get("reason", "")), float(data["at"]), data.get("policy"),
                   data.get("value"), data.get("threshold"))


@dataclass(frozen=True)
class Ramp:
    """Where the running stage's capital ramp is: step ``step`` asked for, funded at ``funded_at`` (None: not
    reported yet), the gate clean without interruption since ``clean_since`` (None: not clean now)."""

    step: int
    funded_at: float | None = None
    clean_since: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "funded_at": self.funded_at, "clean_since": self.clean_since}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Ramp:
        return cls(int(data["step"]), data.get("funded_at"), data.get("clean_since"))


def _passing(data: Any) -> dict[str, float]:
    # Rows written before the clean-run rule held a list of names: they count as clean already.
    return dict.fromkeys(data, 0.0) if isinstance(data, list) else {k: float(v) for k, v in data.items()}


def waiting_from(state: State) -> float | None:
    """When the rollout's wait began; None while it does not wait. A state written before waits were
    timed has none recorded: its wait counts from the stage's start, no later than the wait's (fail closed)."""
    if state.status not in WAITING:
        return None
    return state.waiting_since if state.waiting_since is not None else state.stage_started


def waiting_left(state: State, pipeline: Pipeline, now: float) -> float | None:
    """Seconds before the waiting rollout's deadline (negative once past it); None while it does not wait."""
    since = waiting_from(state)
    return None if since is None else since + pipeline.stages[state.stage].waiting_deadline - now


def time_left(state: State, pipeline: Pipeline, now: float) -> float | None:
    """What ``canary_stage_time_remaining_seconds`` shows: while the rollout waits, the seconds before
    its waiting deadline; otherwise before its stage may complete; None while no stage runs."""
    waiting = waiting_left(state, pipeline, now)
    if waiting is not None:
        return waiting
    if state.stage_started is None:
        return None
    return state.stage_started + pipeline.stages[state.stage].duration - now


@dataclass(frozen=True)
class Decision:
    state: State
    actions: tuple[Action, ...]


# ---------------------------------------------------------------- the decision

def decide(state: State, verdicts: Iterable[Verdict], inputs: Sequence[Command | Notice | Confirmation | Funded],
           now: float,
           *, plan: Plan) -> Decision:
    step = _Step(state, plan, now)
    step.confirmations = {i.stage: i for i in inputs if isinstance(i, Confirmation)}
    for notice in (i for i in inputs if isinstance(i, Notice)):
        step.notice(notice)
    for funded in (i for i in inputs if isinstance(i, Funded)):
        step.funded(funded)
    if step.state.status in JUDGED:
        for verdict in verdicts:
            step.verdict(verdict)
    for command in sorted((i for i in inputs if isinstance(i, Command)), key=lambda c: c.id):
        step.command(command)
    step.time()
    step.ramp()
    step.waited()
    step.recurring()
    return Decision(step.state, tuple(step.actions))


class _Step:
    """One call of decide: the state as it evolves and the actions it emits."""

    def __init__(self, state: State, plan: Plan, now: float) -> None:
        self.state = state
        self.plan = plan
        self.now = now
        self.actions: list[Action] = []
        self.confirmations: dict[str, Confirmation] = {}
        """Per stage name: its confirm-promotion endpoint's latest answer."""

    # -- helpers

    @property
    def stages(self):
        return self.plan.pipeline.stages

    @property
    def stage(self):
        return self.stages[self.state.stage]

    def move(self, status: Status, *, actor: str = "controller", reason: str | None = None, **changes: Any) -> None:
        before = self.state
        if status not in WAITING:
            changes.update(waiting_since=None, waiting_overdue=False)
        elif before.status not in WAITING:
            changes.update(waiting_since=self.now, waiting_overdue=False)
        self.state = replace(before, status=status, reason=reason, **changes)
        self.actions.append(Audit("rollout.transition", actor, {
            "from": before.status.value, "to": status.value, "stage": self.stages[self.state.stage].name,
            "reason": reason}))

    def rollback(self, trigger: str, reason: str, *, actor: str = "controller", policy: str | None = None,
                 verdict: Verdict | None = None) -> None:
        pending = [a for a in self.actions if isinstance(a, Place)]
        if pending:
            # A promote of this same batch asked for the placement, which has not run: cancel it, so
            # the release never reaches the next stage's account and the rollback restores only what
            # was placed. That stage never ran, so there is no stage run of it to close. (Its ramp's
            # first step, asked for with it, is cancelled too.)
            self.actions = [a for a in self.actions if not isinstance(a, (Place, Fund))]
            self.actions.append(Audit("rollout.placement_cancelled", actor, {
                "stage": self.stages[pending[0].stage].name, "reason": reason}))
        elif self.state.status in (Status.RUNNING, Status.AWAITING_SIGNOFF, Status.PAUSED, Status.PROMOTING):
            self.actions.append(FinishStage(self.state.stage, "rolled_back"))
        self.move(Status.ROLLING_BACK, actor=actor, reason=reason, paused_from=None)
        self.actions.append(StartRollback(trigger, reason, policy, verdict))

    def gate_policies(self) -> frozenset[str]:
        return self.plan.gates.get(self.stage.name, frozenset())

    def missing_signoffs(self) -> list[str]:
        return signoffs.pending(self.stage.name, self.stage.signoff_items, self.stage.signers, self.state.signoffs,
                                self.state.signers.get(self.stage.name, ()))

    def stage_over(self) -> bool:
        return self.state.stage_started is not None and self.now >= self.state.stage_started + self.stage.duration

    def not_passing(self) -> list[str]:
        return sorted(self.gate_policies() - self.state.passing.keys())

    def not_clean_yet(self) -> list[str]:
        """Gate policies that pass, but not yet for long enough to speak for the whole stage."""
        return sorted(p for p in self.gate_policies() & self.state.passing.keys() if self.state.passing[p] > self.now)

    def gate_blockers(self) -> list[str]:
        """Why the gate is shut (empty: it is open)."""
        blockers = []
        if not self.stage_over():
            started = self.now if self.state.stage_started is None else self.state.stage_started
            left = started + self.stage.duration - self.now  # (a stage may start at 0.0)
            blockers.append(f"stage {self.stage.name} has {left:.0f} s left")
        for name, at in sorted(self.state.spoiled.items()):
            blockers.append(f"{name} failed during the stage (at {at:.0f})")
        waiting = self.not_passing()
        if waiting:
            blockers.append("not passing: " + ", ".join(waiting))
        short = self.not_clean_yet()
        if short:
            blockers.append("passing only lately: " + ", ".join(
                f"{name} (clean for the stage in {self.state.passing[name] - self.now:.0f} s)" for name in short))
        missing = self.missing_signoffs()
        if missing:
            blockers.append("sign-off missing: " + ", ".join(missing))
        anomalies = self.open_anomalies()
        if anomalies:
            blockers.append("open " + ", ".join(anomalies) + " (canaryctl note --resolves ID --text TEXT)")
        unconfirmed = self.unconfirmed()
        if unconfirmed:
            blockers.append(unconfirmed)
        ramping = self.ramp_left()
        if ramping:
            blockers.append(ramping)
        return blockers

    def open_anomalies(self) -> tuple[str, ...]:
        """Open anomalies that keep this stage from being promoted (none where its pipeline does not block on them)."""
        if not self.plan.pipeline.blocks_on_anomalies(self.state.stage):
            return ()
        return self.plan.open_anomalies

    def unconfirmed(self) -> str | None:
        """Why the stage's confirm-promotion keeps the gate shut (None: the stage has none, or it said yes)."""
        confirm = self.stage.confirm_promotion
        if confirm is None:
            return None
        answer = self.confirmations.get(self.stage.name)
        if answer is not None and answer.ok:
            return None
        return "waiting for confirm-promotion: " + (answer.detail if answer is not None else "not answered yet")

    def ask_confirmation(self) -> None:
        """Have the engine ask the stage's confirm-promotion endpoint (it keeps one question under way)."""
        if self.stage.confirm_promotion is None or self.unconfirmed() is None:
            return
        gate = sorted(self.gate_policies())
        self.actions.append(AskConfirmation(self.state.stage, {
            "gate": {name: "pass" for name in gate}, "clean": not self.not_passing() and not self.not_clean_yet(),
            "spoiled": dict(sorted(self.state.spoiled.items())),
            "signoffs": {k: v for k, v in sorted(self.state.signoffs.items()) if k.startswith(f"{self.stage.name}/")},
            "stage_started": self.state.stage_started, "duration_seconds": self.stage.duration}))

    def advance(self, *, actor: str = "controller", forced: bool = False, reason: str | None = None) -> None:
        self.actions.append(FinishStage(self.state.stage, "forced" if forced else "passed"))
        answer = self.confirmations.get(self.stage.name)
        if self.stage.confirm_promotion is not None and not forced and answer is not None and answer.ok:
            self.actions.append(Audit("rollout.promotion_confirmed", "controller", {
                "stage": self.stage.name, "endpoint": answer.endpoint, "status": answer.status,
                "answered_at": answer.at, "detail": answer.detail}))
        if forced:
            self.actions.append(Audit("rollout.forced_promote", actor, {
                "stage": self.stage.name, "reason": reason, "blockers": self.gate_blockers()}))
        if self.state.stage + 1 >= len(self.stages):
            self.move(Status.PROMOTED, actor=actor, reason=reason or "every stage passed", paused_from=None)
            return
        self.move(Status.PROMOTING, actor=actor, reason=reason, stage=self.state.stage + 1, stage_started=None,
                  passing={}, spoiled={}, paused_from=None, ramp=None)
        self.place()

    def ack(self, command: Command, accepted: bool, message: str, *, expired_at: float | None = None) -> None:
        self.actions.append(Ack(command.id, accepted, message, expired=expired_at is not None))
        self.actions.append(Audit(f"command.{command.kind}", command.actor, {
            "command": command.id, "accepted": accepted, "message": message, "reason": command.reason,
            **({"os_user": command.os_user} if command.os_user else {}),
            **({"force": True} if command.force else {}),
            **({"expired_at": expired_at} if expired_at is not None else {}),
            **({"stage": command.stage, "items": list(command.items)} if command.kind == "signoff" else {})}))

    # -- inputs

    def notice(self, notice: Notice) -> None:
        status = self.state.status
        if notice.kind == "placed" and status is Status.PROMOTING and notice.stage == self.state.stage:
            self.move(Status.RUNNING, stage_started=notice.at, passing={}, spoiled={})
        elif notice.kind == "place_failed" and status is Status.PROMOTING:
            self.rollback("placement", f"placing stage {self.stage.name} failed: {notice.detail}")
        elif notice.kind == "rolled_back" and status is Status.ROLLING_BACK:
            self.move(Status.DRY_RUN_DONE if self.state.dry_run_over else Status.ROLLED_BACK, reason=self.state.reason)
        elif notice.kind == "rollback_failed" and status is Status.ROLLING_BACK:
            self.move(Status.FAILED, reason=f"rollback step failed: {notice.detail}")

    def count(self, verdict: Verdict, limits: Limits) -> Evaluations:
        """Record ``verdict`` as an evaluation of its policy (one at the same instant as the newest
        counts with it, the worse of the two) and return the policy's recent evaluations."""
        seen = self.state.evaluations.get(verdict.policy)
        letter = LETTERS[verdict.outcome]
        if seen is not None and seen.at == verdict.at and seen.recent:
            newest = seen.recent[-1]
            recent = seen.recent[:-1] + (letter if _SEVERITY[letter] > _SEVERITY[newest] else newest)
        else:
            recent = (seen.recent if seen is not None else "") + letter
        counted = Evaluations(verdict.at, recent[-limits.kept:])
        if counted != seen:
            self.state = replace(self.state, evaluations={**self.state.evaluations, verdict.policy: counted})
        return counted

    @staticmethod
    def pause_limit(counted: Evaluations, limits: Limits) -> str | None:
        """Why the policy's recent evaluations pause the rollout (None: they do not)."""
        if limits.consecutive_errors is not None and counted.run_of("N") >= limits.consecutive_errors:
            return f"{counted.run_of('N')} evaluations in a row without data (consecutive_error_limit " \
                   f"{limits.consecutive_errors})"
        if limits.inconclusive is not None and counted.run_of("I") >= limits.inconclusive:
            return f"{counted.run_of('I')} inconclusive evaluations in a row (inconclusive_limit {limits.inconclusive})"
        return None

    def verdict(self, verdict: Verdict) -> None:
        if self.state.status not in JUDGED:
            return  # an earlier verdict of this batch already started a rollback
        limits = self.plan.limits.get(verdict.policy)
        counted = self.count(verdict, limits) if limits is not None else None
        # A failure acts at once without a failure limit; with one, only at its N-th within the last M.
        acts = (counted is None or verdict.outcome is not Outcome.FAIL
                or counted.recent[-1] == "F" and counted.failures(limits.evaluations) >= limits.failures)
        paused_by = self.pause_limit(counted, limits) if counted is not None else None
        dry_policy = limits is not None and limits.dry_run
        if dry_policy or self.stage.dry_run:
            # A dry-run stage judges its gate as usual (what it would have decided at its end) and acts on nothing.
            self.dry(verdict, acts, paused_by)
            if dry_policy:
                return
        elif asks_rollback(verdict) and acts:
            self.rollback("policy", f"{verdict.policy} {self.failed(verdict, limits)}: {verdict.reason}".rstrip(": "),
                          policy=verdict.policy, verdict=verdict)
            return
        if paused_by is not None and self.state.status is not Status.PAUSED and not self.stage.dry_run:
            reason = f"{verdict.policy}: {paused_by}: a person decides (resume, promote --force or rollback)"
            self.actions.append(Audit("policy.limit_reached", "controller", {
                "stage": self.stage.name, "policy": verdict.policy, "outcome": verdict.outcome.value,
                "limit": paused_by, "reason": verdict.reason}))
            self.move(Status.PAUSED, reason=reason, paused_from=self.state.status)
        if verdict.policy not in self.gate_policies():
            return
        passing = dict(self.state.passing)
        if verdict.outcome is Outcome.PASS:
            # The clean run starts with its first pass; it must cover the stage but for the window's warm-up.
            passing.setdefault(verdict.policy, verdict.at + max(0.0, self.stage.duration - verdict.window))
        else:
            passing.pop(verdict.policy, None)
        self.state = replace(self.state, passing=passing)
        if verdict.outcome is Outcome.FAIL and acts and verdict.policy not in self.state.spoiled:
            self.state = replace(self.state, spoiled={**self.state.spoiled, verdict.policy: verdict.at})
            self.actions.append(Audit("gate.spoiled", "controller", {
                "stage": self.stage.name, "policy": verdict.policy, "value": verdict.value,
                "threshold": verdict.threshold, "reason": verdict.reason}))

    @staticmethod
    def failed(verdict: Verdict, limits: Limits | None) -> str:
        """How a breach is said: "failed" (N times within M evaluations) or "has no data"."""
        what = "failed" if verdict.outcome is Outcome.FAIL else "has no data"
        if verdict.outcome is Outcome.FAIL and limits is not None and limits.failures > 1:
            what += f" {limits.failures} times within {limits.evaluations} evaluations"
        return what

    def dry(self, verdict: Verdict, acts: bool, paused_by: str | None) -> None:
        """A dry-run policy's verdict: what it would have done is recorded, once per breach, and nothing is done."""
        would = None
        if asks_rollback(verdict) and acts:
            would = "rolled back"
        elif verdict.outcome is Outcome.FAIL and acts and verdict.action == "hold":
            would = "held the stage's gate"
        elif verdict.outcome is Outcome.FAIL and acts and verdict.action == "alert":
            would = "alerted"
        elif paused_by is not None:
            would = f"paused the rollout ({paused_by})"
        seen = self.state.dry_run.get(verdict.policy)
        if would is None:
            if seen is not None and seen.active:
                self.state = replace(self.state, dry_run={**self.state.dry_run,
                                                          verdict.policy: replace(seen, active=False)})
            return
        if seen is not None and seen.active:
            return  # the same breach goes on: counted once
        reason = verdict.reason or verdict.outcome.value
        record = (DryRun(would, reason, verdict.at, verdict.at) if seen is None else
                  replace(seen, would=would, reason=reason, last=verdict.at, count=seen.count + 1, active=True))
        self.state = replace(self.state, dry_run={**self.state.dry_run, verdict.policy: record})
        self.actions.append(Audit("policy.dry_run_breach", "controller", {
            "stage": self.stage.name, "policy": verdict.policy, "would_have": would, "outcome": verdict.outcome.value,
            "value": verdict.value, "threshold": verdict.threshold, "reason": reason}))
        if would == "rolled back" and self.stage.dry_run and self.state.would_have is None:
            # The rollout's own decision: a real one would have ended here, so only the first counts.
            limits = self.plan.limits.get(verdict.policy)
            why = f"{verdict.policy} {self.failed(verdict, limits)}: {verdict.reason}".rstrip(": ")
            self.would(WouldHave("rolled back", why, verdict.at, verdict.policy, verdict.value, verdict.threshold))

    def would(self, decision: WouldHave) -> None:
        """Record a dry-run stage's decision (once) with its evidence, audited as ``rollout.would_<verb>``."""
        self.state = replace(self.state, would_have=decision)
        verb = {"rolled back": "roll_back", "promoted": "promote"}.get(decision.would, "hold")
        self.actions.append(Audit(f"rollout.would_{verb}", "controller", {
            "stage": self.stage.name, **decision.to_json(), "acted_on": False}))

    def end_dry_run(self) -> None:
        """The dry-run stage is over: its decision stands (the gate's, without an earlier would-be rollback),
        and the account gets its previous release back."""
        if self.state.would_have is None:
            shut = [b for b in self.gate_blockers() if not b.startswith("sign-off missing")]
            if shut:
                self.would(WouldHave("held", "the gate would have stayed shut: " + "; ".join(shut), self.now))
            else:
                then = self.missing_signoffs()
                after = (f" after sign-off: {', '.join(then)}" if then else
                         "" if self.stage.auto_promote else " at an operator's promote")
                self.would(WouldHave("promoted", f"the gate would have opened{after}", self.now))
        decision = self.state.would_have
        self.actions.append(FinishStage(self.state.stage, "dry_run"))
        reason = (f"dry run of stage {self.stage.name} over: it would have {decision.would} ({decision.reason}); "
                  "nothing was acted on, and the account gets its previous release back")
        self.state = replace(self.state, dry_run_over=True)
        self.move(Status.ROLLING_BACK, reason=reason, paused_from=None)
        self.actions.append(StartRollback("dry_run", reason))

    def command(self, command: Command) -> None:
        status = self.state.status
        too_old = expiry(command.kind, command.created, command.expires_in, self.now)
        if command.kind not in COMMAND_KINDS:
            self.ack(command, False, f"unknown command {command.kind!r}")
        elif too_old is not None:
            self.ack(command, False, too_old[0], expired_at=too_old[1])
        elif status in TERMINAL:
            self.ack(command, False, f"the rollout is {status.value}: nothing to {command.kind}")
        elif command.kind == "rollback":
            self._rollback_command(command)
        elif status in (Status.ROLLING_BACK, Status.FAILED):
            self.ack(command, False, f"the rollout is {status.value}; only rollback applies")
        elif command.kind == "signoff":
            self._signoff(command)
        elif command.kind == "promote":
            self._promote(command)
        elif command.kind == "pause":
            if status in (Status.RUNNING, Status.AWAITING_SIGNOFF):
                self.move(Status.PAUSED, actor=command.actor, reason=command.reason or "paused by an operator",
                          paused_from=status)
                self.ack(command, True, f"paused (was {status.value}); breaches still roll back")
            else:
                self.ack(command, False, f"cannot pause while {status.value}")
        elif command.kind == "resume":
            if status is not Status.PAUSED:
                self.ack(command, False, f"not paused (the rollout is {status.value})")
            elif self.state.spoiled and self.stage_over():
                self.ack(command, False, "the gate failed (" + "; ".join(self.gate_blockers()) +
                         "): promote --force --reason, or rollback")
            else:
                # A person looked: the limits that paused the rollout count afresh from here.
                evaluations = {name: (replace(seen, recent="") if name in self.plan.limits
                                      and self.pause_limit(seen, self.plan.limits[name]) else seen)
                               for name, seen in self.state.evaluations.items()}
                self.move(self.state.paused_from or Status.RUNNING, actor=command.actor, paused_from=None,
                          evaluations=evaluations)
                self.ack(command, True, f"resumed ({self.state.status.value})")

    def _rollback_command(self, command: Command) -> None:
        if not command.reason:
            self.ack(command, False, "a rollback needs a reason (--reason TEXT)")
        elif self.state.status is Status.ROLLING_BACK:
            self.ack(command, False, "already rolling back")
        else:
            retry = self.state.status is Status.FAILED
            self.rollback("operator", command.reason, actor=command.actor)
            self.ack(command, True, "rollback resumed at the failed step" if retry else "rolling back")

    def _signoff(self, command: Command) -> None:
        names = [s.name for s in self.stages]
        if command.stage not in names:
            self.ack(command, False, f"no stage {command.stage!r} in this pipeline (stages: {', '.join(names)})")
            return
        stage = self.stages[names.index(command.stage)]
        items = self.signoff_items(stage, command.items)
        recurring = {name for name, every in stage.signoff_entries if every is not None}
        unknown = [i for i in items if i not in stage.signoff_items and i not in recurring]
        not_begun = self.not_begun(stage, items)
        if not stage.signoffs:
            self.ack(command, False, f"stage {stage.name} needs no sign-off")
        elif unknown:
            names = ", ".join(name if every is None else f"{name} (every {every:g} s: {name}/"
                              f"{signoffs.period_word(every)}-N)" for name, every in stage.signoff_entries)
            self.ack(command, False, f"stage {stage.name} has no sign-off {unknown[0]!r} (it has: {names})")
        elif self.state.status not in JUDGED or stage is not self.stage:
            # A sign-off vouches for evidence the stage produced: only the stage that runs has any.
            where = (f"at stage {self.stage.name}" if self.state.status in JUDGED
                     else f"{self.state.status.value} (stage {self.stage.name} not placed yet)")
            self.ack(command, False, f"the rollout is {where}: sign-offs of stage {stage.name} are "
                                     "given while it runs")
        elif not_begun:
            self.ack(command, False, f"{not_begun}: a period is signed once it has begun")
        else:
            # Who signs is the operating-system user that ran canaryctl: a second signature under
            # another claimed name (--by) from the same user does not make four eyes.
            who = command.os_user or command.actor
            signed_by = self.state.signers.get(stage.name, ())
            new = {f"{stage.name}/{i}": command.actor for i in items if f"{stage.name}/{i}" not in self.state.signoffs}
            newcomer = stage.signers > 1 and who not in signed_by and len(signed_by) < stage.signers
            if not new and not newcomer:
                extra = (f"; stage {stage.name} needs {stage.signers} distinct operating-system users and "
                         f"{who} has signed" if stage.signers > 1 and who in signed_by else "")
                self.ack(command, False, "already signed: " + ", ".join(
                    f"{i} by {self.state.signoffs[f'{stage.name}/{i}']}" for i in items) + extra)
                return
            signers = {**self.state.signers, stage.name: (*signed_by, who)} if who not in signed_by else self.state.signers
            self.state = replace(self.state, signoffs={**self.state.signoffs, **new}, signers=signers)
            what = ", ".join(k.split("/", 1)[1] for k in new) if new else ", ".join(items)
            count = f" ({len(signers[stage.name])} of {stage.signers} signers)" if stage.signers > 1 else ""
            self.ack(command, True, f"signed {what} of stage {stage.name}{count}")

    def signoff_items(self, stage, given: Sequence[str]) -> list[str]:
        """The items a signoff command signs: those it names (a recurring sign-off named alone is its
        current period's), or, naming none, every plain item and each recurring one's current period."""
        current = {}
        if self.state.stage_started is not None and stage is self.stage:
            current = {name: signoffs.period_item(name, every, signoffs.current_period(
                every, stage.duration, self.state.stage_started, self.now))
                for name, every in stage.signoff_entries if every is not None}
        if not given:
            return [current.get(name, name) if every is not None else name for name, every in stage.signoff_entries]
        return [current.get(item, item) for item in given]

    def not_begun(self, stage, items: Sequence[str]) -> str | None:
        """Why one of ``items`` (a recurring sign-off's period) may not be signed yet; None: all may."""
        started = self.state.stage_started
        for name, every in stage.signoff_entries:
            if every is None:
                continue
            for number in range(1, signoffs.periods(every, stage.duration) + 1):
                item = signoffs.period_item(name, every, number)
                if item in items and (started is None or self.now < started + (number - 1) * every):
                    return f"{item} of stage {stage.name} has not begun"
        return None

    def _promote(self, command: Command) -> None:
        status = self.state.status
        if status not in (Status.RUNNING, Status.AWAITING_SIGNOFF, Status.PAUSED):
            self.ack(command, False, f"cannot promote while {status.value}")
        elif self.stage.dry_run:
            self.ack(command, False, f"stage {self.stage.name} is a dry run: nothing is promoted; it ends at the "
                                     "stage's end (rollback --reason ends it now)")
        elif command.stage is not None and command.stage != self.stage.name:
            # A promote given for a stage the rollout has since left must not promote the next one.
            self.ack(command, False, f"the rollout is at stage {self.stage.name}, not {command.stage}: "
                                     "nothing promoted")
        elif command.force:
            if not command.reason:
                self.ack(command, False, "a forced promote needs a reason (--reason TEXT)")
                return
            stage = self.stage.name
            self.advance(actor=command.actor, forced=True, reason=command.reason)
            self.ack(command, True, f"stage {stage} promoted by force")
        else:
            blockers = self.gate_blockers()
            if blockers:
                self.ack(command, False, "the gate is shut: " + "; ".join(blockers) +
                         " (promote --force --reason TEXT overrides, audited)")
            else:
                stage = self.stage.name
                self.advance(actor=command.actor)
                self.ack(command, True, f"stage {stage} promoted")

    def time(self) -> None:
        status = self.state.status
        if status is Status.PENDING:
            self.move(Status.PROMOTING, stage=0, stage_started=None)
            self.place()
            return
        if self.stage.dry_run and status in JUDGED and self.stage_over():
            self.end_dry_run()
            return
        if status not in (Status.RUNNING, Status.AWAITING_SIGNOFF) or not self.stage_over():
            return
        if self.state.spoiled:
            self.move(Status.PAUSED, reason="; ".join(self.gate_blockers()) + ": promote --force or rollback",
                      paused_from=status)
            return
        waiting, short, ramping = self.not_passing(), self.not_clean_yet(), self.ramp_left()
        if waiting or short or ramping:
            deadline = (self.state.stage_started or 0.0) + self.stage.duration + self.stage.progress_deadline
            if self.now >= deadline:
                why = [f"not passing: {', '.join(waiting)}"] if waiting else []
                why += [f"passing only lately: {', '.join(short)}"] if short else []
                why += [ramping] if ramping else []
                self.rollback("deadline", f"stage {self.stage.name} passed its progress deadline; "
                                          + "; ".join(why))
            return
        if self.missing_signoffs() or self.open_anomalies() or not self.stage.auto_promote:
            if status is not Status.AWAITING_SIGNOFF:
                waiting_for = self.missing_signoffs()
                anomalies = self.open_anomalies()
                self.move(Status.AWAITING_SIGNOFF, reason=("sign-off missing: " + ", ".join(waiting_for))
                          if waiting_for else ("open " + ", ".join(anomalies)) if anomalies
                          else "waiting for an operator's promote")
            if not self.missing_signoffs():
                self.ask_confirmation()  # an operator's promote needs the endpoint's yes too
            return
        unconfirmed = self.unconfirmed()
        if unconfirmed is not None:
            # The gate is open but for the endpoint: ask it, and say why the rollout does not move on.
            # The rollout waits for it as it waits for a person, so the waiting deadline bounds an
            # endpoint that never says yes.
            self.ask_confirmation()
            if status is not Status.AWAITING_SIGNOFF:
                self.move(Status.AWAITING_SIGNOFF, reason=unconfirmed)
            elif self.state.reason != unconfirmed:
                self.state = replace(self.state, reason=unconfirmed)
            return
        self.advance()

    def recurring(self) -> None:
        """What the stage asks for on a schedule while it is judged: the digests of periods that ended,
        and a recurring sign-off whose period ended unsigned, said overdue once."""
        if self.state.status not in JUDGED or self.state.stage_started is None:
            return
        started, stage = self.state.stage_started, self.stage
        if stage.digest is not None and self.plan.digests_written is not None:
            ended = digests_ended(stage.digest, self.now - started)
            for number in range(self.plan.digests_written + 1, ended + 1):
                start, end = digest_period(stage.digest, number)
                self.actions.append(WriteDigest(self.state.stage, number, started + start, started + end))
        late = [f"{stage.name}/{item}" for item in signoffs.overdue(
            stage.signoff_entries, stage.duration, started, self.now, self.state.signoffs, stage.name)]
        new = [key for key in late if key not in self.state.overdue_signoffs]
        if new:
            self.state = replace(self.state, overdue_signoffs=(*self.state.overdue_signoffs, *new))
            for key in new:
                self.actions.append(Audit("signoff.overdue", "controller", {
                    "stage": stage.name, "item": key.split("/", 1)[1],
                    "reason": f"{key.split('/', 1)[1]} of stage {stage.name} was not signed by the end of its period"}))

    # -- the capital ramp

    def place(self) -> None:
        """Place the stage's release; a stage with a ramp has its first step funded first, before the
        release trades (capital held as margin by a running bot could not be moved)."""
        if self.stage.ramp:
            self.state = replace(self.state, ramp=Ramp(0))
            self.actions.append(Fund(self.state.stage, 0))
        self.actions.append(Place(self.state.stage))

    def ramp_left(self) -> str | None:
        """Why the stage's ramp keeps its gate shut (None: it has none, or its last step is funded)."""
        steps, at = self.stage.ramp, self.state.ramp
        if not steps or self.state.status not in JUDGED:
            return None
        if at is not None and at.step == len(steps) - 1 and at.funded_at is not None:
            return None
        done = 0 if at is None else at.step + (at.funded_at is not None)
        return f"capital ramp at {done} of {len(steps)} steps funded"

    def funded(self, report: Funded) -> None:
        at = self.state.ramp
        if (at is None or report.stage != self.state.stage or report.step != at.step or at.funded_at is not None
                or self.state.status not in JUDGED | {Status.PROMOTING}):
            return  # a report about a step no longer asked for (the rollout moved on)
        if not report.ok:
            share = self.stage.ramp[report.step].share if self.stage.ramp else None
            self.rollback("ramp", f"capital ramp step {report.step + 1} of stage {self.stage.name} "
                                  f"({share:%} of capital) not funded: {report.detail}")
            return
        bases = dict(self.state.ramp_base)
        if report.base is not None and report.account not in bases:
            bases[report.account] = dict(report.base)  # the first ramp's base: what a rollback gives back
        self.state = replace(self.state, ramp=replace(at, funded_at=report.at), ramp_base=bases)

    def ramp(self) -> None:
        """Track the gate's clean run during the step funded last, and ask for the next step once it has
        lasted the step's duration."""
        steps, at = self.stage.ramp, self.state.ramp
        if not steps or at is None or at.funded_at is None or self.state.status is not Status.RUNNING:
            return
        clean = not self.state.spoiled and not self.not_passing()
        since = (at.clean_since if at.clean_since is not None else self.now) if clean else None
        if since != at.clean_since:
            at = replace(at, clean_since=since)
            self.state = replace(self.state, ramp=at)
        if since is None or at.step + 1 >= len(steps):
            return
        hold = steps[at.step].for_ or 0.0
        clean_from = max(since, at.funded_at)
        if self.now - clean_from < hold:
            return
        self.state = replace(self.state, ramp=Ramp(at.step + 1))
        self.actions.append(Fund(self.state.stage, at.step + 1))
        self.actions.append(Audit("rollout.ramp_step", "controller", {
            "stage": self.stage.name, "step": at.step + 2, "of": len(steps),
            "share": str(steps[at.step + 1].share), "clean_since": clean_from, "held_seconds": self.now - clean_from}))

    def waited(self) -> None:
        """Past the stage's waiting deadline, roll back or say so once (see the module's docstring)."""
        since = waiting_from(self.state)
        if since is None:
            return
        waited, deadline = self.now - since, self.stage.waiting_deadline
        if waited < deadline:
            return
        what = "paused" if self.state.status is Status.PAUSED else "awaiting a sign-off, a promote or a confirmation"
        reason = (f"stage {self.stage.name} waited {waited:.0f} s {what} since {_instant(since)}, "
                  f"past its waiting deadline of {deadline:.0f} s")
        if self.stage.on_waiting_deadline == "rollback":
            self.rollback("waiting", reason)
        elif not self.state.waiting_overdue:
            self.state = replace(self.state, waiting_overdue=True)
            self.actions.append(Audit("rollout.waiting_overdue", "controller", {
                "stage": self.stage.name, "status": self.state.status.value, "since": since,
                "waited_seconds": waited, "deadline_seconds": deadline, "reason": reason}))
