"""The imperative shell around `decide`: one runner per active rollout.

A runner feeds ``decide`` the verdicts of the stage's verification, the operator's commands and
the executor's notices, stores each decision (state, audit events, command acks) in one
transaction, then performs its actions: place the release for a stage, run the rollback plan,
close a stage run. A breach verdict wakes the runner at once: no polling on the hot path.

Everything a runner knows is rebuilt from the store when it starts, so a daemon restarted in
the middle of a placement places again (idempotent, in the same stage run) and one restarted
mid-rollback resumes the persisted plan. A runner that starts decides the operator's pending
commands before anything else: a ``rollback`` given while it was down is carried out instead of
re-placing the release or starting its verification. Verification that cannot start (policies
unreadable, the exchange unreachable) does not stop the runner: it says so, keeps reading
commands, and tries again with backoff; a stage whose policies cannot be read is never placed.

No account runs the release unwatched: once the next stage is placed, each account an earlier stage
left behind is either still verified with that stage's policies (``after_promotion: watch``; the
stage's running verification simply goes on, and a breach there asks for the rollback like any
other) or has its release stopped (``stop``, audited). A watch that cannot start, or a release that
cannot be stopped (then it is watched meanwhile), is tried again with backoff and shown by /readyz.

A stage's confirm-promotion endpoint is asked by a task of the runner's (`PromotionQuestion`), started
when decide asks for it and restarted if it dies; each turn hands decide its latest answer, so the
runner never waits on the endpoint.

A stage's capital ramp step (`Fund`) is funded by the runner (`controller.rollout.capital`) and reported
to decide as `Funded`; a runner that resumes a stage whose step was asked for and never reported funds
it again (the move reads the exchange first, so a step already funded moves nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from controller import failpoints, signoffs
from controller.analysis.policy import Policy, load_policy_file
from controller.analysis.verdict import Verdict
from controller.clock import Backoff, Clock
from controller.config.daemon import RollbackConfig
from controller.errors import CanaryError
from controller.logs import get_logger
from controller.metrics import ControllerMetrics
from controller.observe.audit import AuditObserver
from controller.observe.exchange import ExchangeObserver, placed_modes
from controller.observe.journald import JournaldObserver
from controller.observe.logfile import LogFileObserver
from controller.observe.metrics import MetricsScraper
from controller.observe.process import ProcessObserver
from controller.rollout import capital, placing
from controller.rollout.confirmation import PromotionQuestion
from controller.rollout.decide import (JUDGED, TERMINAL, Ack, AskConfirmation, Audit, Command, Confirmation, Decision,
                                       FinishStage, Fund, Funded, Limits, Notice, Place, Plan, StartRollback, Status,
                                       WriteDigest,
                                       asks_rollback, decide, time_left)
from controller.rollout.info import RolloutInfo, get_rollout, save_decision, start_stage_run
from controller.rollout.pipeline import Stage, digest_period
from controller.rollout.rollback import Rollback
from controller.rollout.site import Site
from controller.store.anomalies import open_anomalies
from controller.store.commands import CommandInfo, pending_commands
from controller.store.database import Database
from controller.store.deployments import live_deployment
from controller.store.leases import FencingRefused
from controller.store.rollouts import current_stage_run, finish_stage_run
from controller.store.verdicts import VerdictLog, digests_written, write_digest
from controller.verification import Verification

log = get_logger(__name__)


@dataclass(frozen=True)
class RunnerCadence:
    """How often things happen, in Clock seconds (the sources) or wall seconds (the store)."""

    evaluate: float = 1.0
    snapshot: float = 30.0
    scrape: float = 15.0
    logs: float = 1.0
    process: float = 5.0
    audit: float = 300.0
    command_poll: float = 0.5  # wall seconds: operator commands are picked up within a second


@dataclass
class RolloutReport:
    """What happened to a rollout, measured: for `canaryctl demo` and the metrics."""

    rollout: int
    release: str
    outcome: str | None = None
    policy: str | None = None
    breach_at: float | None = None          # Clock time of the breach verdict
    breach_wall: float | None = None        # time.monotonic() at the breach
    detect_seconds: float | None = None     # Clock seconds from the exchange event to the breach
    safe_wall: float | None = None
    done_wall: float | None = None
    timeline: list[tuple[float, str]] = field(default_factory=list)


Account = tuple[str, str]
"""(environment, account)."""


@dataclass
class _Watch:
    """The verification of an account an earlier stage left behind, with that stage's policies."""

    stage: str
    task: asyncio.Task
    verifier: Verification
    log: VerdictLog
    pending: list[Verdict] = field(default_factory=list)
    """Verdicts not yet handed to decide (only its breaches are) nor stored."""


class PolicySet:
    """The policy files of the daemon's policies_dir, reloaded (validated first) on SIGHUP."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._cache: dict[str, list[Policy]] = {}

    def stage(self, filename: str) -> list[Policy]:
        if filename not in self._cache:
            self._cache[filename] = load_policy_file(self.folder / filename).policies
        return self._cache[filename]

    def reload(self) -> None:
        """Load every policy file of the folder (and every one in use) again, validated; on any
        error keep the old set and raise. Validating the whole folder, not only the files in use,
        means an idle daemon refuses a broken file too instead of failing the next rollout on it."""
        self.use(self.read(self.in_use()))

    def in_use(self) -> set[str]:
        """The files loaded now (read on the event loop: the set changes as stages load theirs)."""
        return set(self._cache)

    def read(self, in_use: set[str]) -> dict[str, list[Policy]]:
        """Every policy file of the folder and of ``in_use``, loaded and validated; raises on any
        error. It only reads, so the daemon runs it in a thread, off its event loop."""
        names = {p.name for p in self.folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml")} | in_use
        return {name: load_policy_file(self.folder / name).policies for name in sorted(names)}

    def use(self, fresh: dict[str, list[Policy]]) -> None:
        """Put a set that `read` returned in force, whole."""
        self._cache = fresh


class RolloutRunner:
    def __init__(self, *, rollout_id: int, db: Database, site: Site, policies: PolicySet, metrics: ControllerMetrics,
                 cadence: RunnerCadence, report: RolloutReport | None = None,
                 on_event: Callable[[str], None] | None = None, rollback: RollbackConfig | None = None,
                 on_verdicts: Callable[[list[Verdict]], None] | None = None,
                 on_transition: Callable[[RolloutInfo, dict, StartRollback | None], None] | None = None) -> None:
        """``on_verdicts``: also given each batch of the placed stage's verdicts that counts, as it
        comes (the synthetic harness scores them). ``on_transition``: given each stored transition (its
        audit payload) with the rollback it starts, if any, for notifications; it must not block."""
        self.id = rollout_id
        self.db = db
        self.site = site
        self.clock: Clock = site.clock
        self.policies = policies
        self.metrics = metrics
        self.cadence = cadence
        self.rollback = Rollback(db, site, **(rollback or RollbackConfig()).model_dump())
        self.report = report or RolloutReport(rollout_id, "")
        self.on_event = on_event or (lambda text: None)
        self.on_verdicts = on_verdicts
        self.on_transition = on_transition
        self._verdicts: list[Verdict] = []
        self._notices: list[Notice] = []
        self._funded: list[Funded] = []  # capital ramp reports for the next turn
        self._wake = asyncio.Event()
        self._verification: asyncio.Task | None = None
        self._verifier: Verification | None = None
        self._verdict_log: VerdictLog | None = None
        self._judging = False  # verdicts count: the verification of the placed stage runs
        # Verification that failed to start is tried again at this Clock time, backing off.
        self._verify_backoff = Backoff(self.clock, initial=1.0, maximum=60.0)
        self._verify_retry_at: float | None = None
        self.verification_error: str | None = None
        """Why the verification of the placed stage could not start (None: it runs, or none is due)."""
        self._unreadable: set[str] = set()  # stages whose policies could not be read (logged once)
        self._verifying_stage: int | None = None  # the stage index the running verification judges
        self._watches: dict[Account, _Watch] = {}
        self._watch_due: dict[Account, str] = {}  # accounts to watch, with the stage that left them behind
        self._left_errors: dict[Account, str] = {}  # why an account left behind is not as the pipeline says
        self._left_backoff = Backoff(self.clock, initial=1.0, maximum=60.0)
        self._left_retry_at: float | None = None
        self._limits: dict[str, Limits] = {}  # the plan's, kept for what happens between two turns
        self._dry_run_stage = False  # the placed stage's verification judges a dry-run stage
        self._question: PromotionQuestion | None = None  # the confirm-promotion question under way, if any
        self._digests: dict[str, int] = {}  # stage name -> digests of it the store holds
        self.stopping = False

    @property
    def verifying(self) -> bool:
        """The verification of the placed stage runs."""
        return self._verification is not None and not self._verification.done()

    def verification_down(self) -> str | None:
        """Why a verification the rollout needs is not running (None: all run): the placed stage's, or
        a watch of an account left behind; read by /readyz, meaningful in a judged state."""
        problems = [] if self.verifying else [self.verification_error or "it has not started yet"]
        for (environment, account), stage in sorted(self._watch_due.items()):
            watch = self._watches.get((environment, account))
            if watch is None or watch.task.done():
                why = self._left_errors.get((environment, account),
                                            "it has not started yet" if watch is None else "it stopped")
                problems.append(f"the watch of {environment}/{account} (left by stage {stage}): {why}")
        return "; ".join(problems) or None

    def stop(self) -> None:
        """Finish the action in hand, take no new one."""
        self.stopping = True
        self._wake.set()

    def wake(self) -> None:
        """Turn now, not at the next ``command_poll``: for a command this process has just stored."""
        self._wake.set()

    # ------------------------------------------------------------ the loop

    async def run(self) -> RolloutInfo:
        info = await get_rollout(self.db, self.id)
        self.report.release = info.release
        try:
            info = await self._resume(info)
            while info.status not in TERMINAL and not self.stopping:
                await self._retry_verification(info)
                await self._retry_left_behind(info)
                info = await self._turn(info)
                if info.status in TERMINAL or self.stopping:
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.cadence.command_poll):
                        await self._wake.wait()
                self._wake.clear()
            return info
        finally:
            await self._stop_question()
            await self._stop_verification()
            await self._stop_watches()

    async def _resume(self, info: RolloutInfo) -> RolloutInfo:
        """Pick up where a previous daemon left off: the operator's commands first, then the rest."""
        self._say(f"rollout {info.id} of {info.release}: {info.status.value} at stage {info.stage.name}")
        # Decided before any side effect of the resume: a rollback (or a promote) given while no
        # runner read commands replaces re-placing the stage or starting its verification.
        commands = await self._commands(info)
        decision = decide(info.state, [], commands, self.clock.time(),
                          plan=await self._with_digests(info, await self._with_anomalies(info)))
        acted = any(isinstance(a, (Place, StartRollback)) for a in decision.actions)
        info = await self._apply(info, decision, kinds={c.id: c.kind for c in commands})
        if acted or self.stopping:
            return info
        if info.status is Status.PROMOTING:
            ramp = info.state.ramp  # its first step asked for and never reported: funded (again) first
            first = [Fund(info.state.stage, ramp.step)] if ramp is not None and ramp.funded_at is None else []
            return await self._execute(info, [*first, Place(info.state.stage)])
        if info.status is Status.ROLLING_BACK:
            return await self._execute(info, [StartRollback("resume", info.state.reason or "resumed after restart")])
        if info.status in JUDGED:
            await self._verify(info)
            await self._after_promotion(info, info.state.stage)
            ramp = info.state.ramp
            if ramp is not None and ramp.funded_at is None:  # asked for, never reported: fund it again
                await self._fund(info, Fund(info.state.stage, ramp.step))
        return info

    async def _commands(self, info: RolloutInfo) -> list[Command]:
        return [_command(c, self.clock) for c in await pending_commands(self.db, [info.id]) if c.rollout_id == info.id]

    async def _turn(self, info: RolloutInfo) -> RolloutInfo:
        commands = await self._commands(info)
        verdicts, self._verdicts = self._verdicts, []
        notices, self._notices = self._notices, []
        funded, self._funded = self._funded, []
        if self._verdict_log is not None and verdicts:
            await self._verdict_log.record(verdicts)
        verdicts += await self._watched_breaches()
        plan = await self._with_digests(info, await self._with_anomalies(info))
        decision = decide(info.state, verdicts, [*notices, *funded, *commands, *self._answers(info)],
                          self.clock.time(), plan=plan)
        info = await self._apply(info, decision, kinds={c.id: c.kind for c in commands})
        self._export_schedule(info)
        return info

    def _answers(self, info: RolloutInfo) -> list[Confirmation]:
        """The confirm-promotion endpoint's latest answer about the rollout's stage, if it gave one."""
        question = self._question
        if question is None or question.answer is None or question.stage != info.stage.name:
            return []
        return [question.answer]

    async def _apply(self, info: RolloutInfo, decision: Decision, *, kinds: dict[int, str]) -> RolloutInfo:
        audits = [a for a in decision.actions if isinstance(a, Audit)]
        acks = [a for a in decision.actions if isinstance(a, Ack)]
        if decision.state != info.state or audits or acks:
            info = await save_decision(self.db, self.clock, info, decision.state, audits=audits, acks=acks)
            for ack in acks:
                kind = kinds.get(ack.command_id, "?")
                self.metrics.command_handled(kind, "accepted" if ack.accepted else
                                             "expired" if ack.expired else "rejected")
                self._say(f"command {ack.command_id} ({kind}) {'accepted' if ack.accepted else 'refused'}: "
                          f"{ack.message}")
            self._export(info)
        rollback = next((a for a in decision.actions if isinstance(a, StartRollback)), None)
        for audit_event in audits:
            if audit_event.kind == "rollout.transition" and self.on_transition is not None:
                try:
                    self.on_transition(info, dict(audit_event.payload), rollback)
                except Exception:  # noqa: BLE001 - telling others never stops the rollout
                    log.exception("transition_not_notified", rollout=info.id)
            if audit_event.kind == "rollout.transition":
                self._say(f"{audit_event.payload['from']} -> {audit_event.payload['to']} "
                          f"(stage {audit_event.payload['stage']})" +
                          (f": {audit_event.payload['reason']}" if audit_event.payload.get("reason") else ""))
        return await self._execute(info, [a for a in decision.actions if not isinstance(a, (Audit, Ack))])

    async def _execute(self, info: RolloutInfo, actions) -> RolloutInfo:
        unfunded: dict[int, str] = {}  # stages whose ramp's first step could not be funded: not placed
        for action in actions:
            if isinstance(action, Place) and action.stage in unfunded:
                self._notices.append(Notice("place_failed", self.clock.time(), action.stage, unfunded[action.stage]))
            elif isinstance(action, Place):
                await self._place(info, action.stage)
            elif isinstance(action, FinishStage):
                await finish_stage_run(self.db, self.clock, info.id, info.pipeline.stages[action.stage].name,
                                               action.outcome)
            elif isinstance(action, StartRollback):
                await self._stop_question()
                await self._rollback(info, action)
            elif isinstance(action, AskConfirmation):
                self._ask(info, action)
            elif isinstance(action, WriteDigest):
                await self._write_digest(info, action)
            elif isinstance(action, Fund):
                if not await self._fund(info, action):
                    unfunded[action.stage] = f"capital ramp step {action.step + 1} not funded: {self._funded[-1].detail}"
        if self._notices or self._funded:
            self._wake.set()
        return info

    def _plan(self, info: RolloutInfo) -> Plan:
        gates, limits = {}, {}
        for stage in info.pipeline.stages:
            try:
                policies = self.policies.stage(stage.policies)
                # A dry-run policy opens and shuts no gate: it is judged and shown, never acted on.
                gates[stage.name] = frozenset(p.name for p in policies if p.gate and not p.dry_run)
                limits.update((p.name, Limits.of(p)) for p in policies if p.limited)
            except CanaryError as exc:
                # Commands must still be decided (a rollback above all), so the plan is made without
                # them; a gate of policies that cannot be read waits on one that never passes.
                if stage.name not in self._unreadable:  # said once, not on every turn
                    log.error("policies_unreadable", rollout=info.id, stage=stage.name, error=str(exc))
                    self._unreadable.add(stage.name)
                gates[stage.name] = frozenset({f"(policies {stage.policies} unreadable)"})
        if self.verification_error is not None:
            # Passes recorded before verification stopped speak for no time since: the gate stays shut.
            gates[info.stage.name] = gates[info.stage.name] | {"(verification not running)"}
        unwatched = sorted(f"{e}/{a}" for e, a in self._watch_due
                           if (e, a) not in self._watches or self._watches[(e, a)].task.done())
        if unwatched:
            # An account left behind that nothing watches: the rollout does not move on meanwhile.
            gates[info.stage.name] = gates[info.stage.name] | {f"(watch of {', '.join(unwatched)} not running)"}
        self._limits = limits
        return Plan(info.pipeline, gates, limits)

    async def _with_anomalies(self, info: RolloutInfo) -> Plan:
        """The plan, with the rollout's open anomalies where its stage's promotion waits on them (read
        from the audit chain only then)."""
        plan = self._plan(info)
        if not info.pipeline.blocks_on_anomalies(info.state.stage):
            return plan
        return replace(plan, open_anomalies=tuple(a.label for a in await open_anomalies(self.db, info.id)))

    # ------------------------------------------------------------ digests and recurring sign-offs

    async def _with_digests(self, info: RolloutInfo, plan: Plan) -> Plan:
        """The plan, with how many digests of the stage the store holds (read once per stage, then counted
        here as they are written) where the stage has a digest schedule."""
        stage = info.stage
        if stage.digest is None or info.status not in JUDGED:
            return plan
        if stage.name not in self._digests:
            self._digests[stage.name] = await digests_written(self.db, info.id, stage.name)
        return replace(plan, digests_written=self._digests[stage.name])

    async def _write_digest(self, info: RolloutInfo, action: WriteDigest) -> None:
        """Write one digest decide asked for; a failure is logged and the next turn asks again (the
        count does not move, so the missing digest's alert fires if it goes on failing)."""
        stage = info.pipeline.stages[action.stage]
        try:
            try:
                policies = [p.name for p in self.policies.stage(stage.policies)]
            except CanaryError:
                policies = []  # the gate says why; the digest still records what was judged
            await write_digest(self.db, self.clock, rollout_id=info.id, release=info.release, stage=stage.name,
                               stage_run_id=await current_stage_run(self.db, info.id, stage.name),
                               number=action.number, start=action.start, end=action.end, policies=policies)
        except FencingRefused:
            raise  # the rollout is another daemon's now: this runner stops
        except Exception:  # noqa: BLE001 - a digest never stops the runner
            log.exception("digest_not_written", rollout=info.id, stage=stage.name, number=action.number)
            return
        self._digests[stage.name] = max(self._digests.get(stage.name, 0), action.number)

    def _export_schedule(self, info: RolloutInfo) -> None:
        """The digest and recurring sign-off gauges of the stage being judged; none for another stage."""
        stage, started = info.stage, info.state.stage_started
        if info.status not in JUDGED or started is None:
            self.metrics.forget_schedule(info.id)
            return
        if stage.digest is not None and stage.name in self._digests:
            written = self._digests[stage.name]
            last = started + (digest_period(stage.digest, written)[1] if written else 0.0)
            start, end = digest_period(stage.digest, written + 1)
            self.metrics.set_digest(info.id, last, end - start)
        if any(every is not None for _, every in stage.signoff_entries):
            late = signoffs.overdue(stage.signoff_entries, stage.duration, started, self.clock.time(),
                                    info.state.signoffs, stage.name)
            self.metrics.set_signoffs_overdue(info.id, len(late))

    def _export(self, info: RolloutInfo) -> None:
        self.metrics.set_rollout_state(info.id, info.release, info.status.value)
        self.metrics.set_rollout_stage(info.id, info.release, info.stage.name)
        left = time_left(info.state, info.pipeline, self.clock.time())
        if left is not None:
            self.metrics.set_stage_remaining(info.id, left)

    def _say(self, text: str) -> None:
        self.report.timeline.append((time.monotonic(), text))
        log.info("rollout_event", rollout=self.id, text=text)
        self.on_event(text)

    # ------------------------------------------------------------ actions

    def _ask(self, info: RolloutInfo, action: AskConfirmation) -> None:
        """Keep one question to the stage's confirm-promotion endpoint under way: start it, or start it
        again when it died (logged), unless the endpoint already said yes."""
        stage = info.pipeline.stages[action.stage]
        question = self._question
        if question is not None and question.stage == stage.name and (
                question.asking or (question.answer is not None and question.answer.ok)):
            return
        if question is not None and question.stage == stage.name and question.answer is not None:
            log.error("confirm_promotion_question_stopped", rollout=info.id, stage=stage.name,
                      last_answer=question.answer.detail)
        body = {"rollout": info.id, "stage": stage.name, "release": info.release, "pipeline": info.pipeline.name,
                "verdicts": dict(action.verdicts)}
        self._question = PromotionQuestion(stage=stage.name, config=stage.confirm_promotion, body=body,
                                           clock=self.clock, on_answer=self._wake.set)
        self._question.start()
        self._say(f"asking {self._question.endpoint} to confirm the promotion of stage {stage.name}")

    async def _stop_question(self) -> None:
        question, self._question = self._question, None
        if question is not None:
            await question.stop()

    async def _place(self, info: RolloutInfo, index: int) -> None:
        stage = info.pipeline.stages[index]
        await self._stop_question()
        await self._hand_over(info, index)
        try:
            self.policies.stage(stage.policies)  # a release nothing can verify is not placed
            deployment, _ = await placing.place(self.db, self.site, environment=stage.environment,
                                                account=stage.account, release=info.release, rollout_id=info.id,
                                                shadow=stage.shadow, restart=info.pipeline.restarts(index),
                                                toggle=stage.toggle)
        except FencingRefused:
            raise  # the rollout is another daemon's now: this runner stops
        except Exception as exc:  # noqa: BLE001 - any failure to place is the placement failing
            log.exception("placement_failed", rollout=info.id, stage=stage.name)
            self._notices.append(Notice("place_failed", self.clock.time(), index, f"{type(exc).__name__}: {exc}"))
            return
        failpoints.hit("engine.place.after")
        started = self.clock.time()
        await start_stage_run(self.db, info, index, started)  # a placement resumed reuses its stage run
        failpoints.hit("engine.stage_run.after")
        self._say(f"{info.release} placed on {stage.environment}/{stage.account} (deployment {deployment.id}); "
                  f"stage {stage.name} runs {stage.duration:.0f} s")
        self._notices.append(Notice("placed", started, index))
        await self._after_promotion(info, index)
        await self._verify(info, stage_index=index)

    async def _fund(self, info: RolloutInfo, action: Fund) -> bool:
        """Bring the stage's account to the ramp step's share, reporting `Funded` (ok or why not) for decide;
        whether it was funded."""
        stage = info.pipeline.stages[action.stage]
        where = f"{stage.environment}/{stage.account}"
        known = info.state.ramp_base.get(where)
        share = stage.ramp[action.step].share
        try:
            base, moved = await capital.fund(
                self.db, self.site, environment=stage.environment, account=stage.account, share=share,
                base=capital.Base.from_json(known) if known else None, rollout=info.id, release=info.release,
                stage=stage.name, step=action.step)
        except FencingRefused:
            raise  # the rollout is another daemon's now: this runner stops
        except Exception as exc:  # noqa: BLE001 - a step not funded is reported, and decide rolls back
            log.exception("ramp_step_not_funded", rollout=info.id, stage=stage.name, step=action.step + 1)
            self._funded.append(Funded(action.stage, action.step, self.clock.time(), False, where,
                                       detail=f"{type(exc).__name__}: {exc}"))
            return False
        self._say(f"capital ramp of stage {stage.name}: step {action.step + 1} of {len(stage.ramp)}, "
                  f"{share:%} of capital on {where} (moved {moved.get('amount', '0')} USDT)")
        self._funded.append(Funded(action.stage, action.step, self.clock.time(), True, where,
                                   base=None if known else base.to_json()))
        return True

    async def _rollback(self, info: RolloutInfo, action: StartRollback) -> None:
        # Verification winds down beside the rollback rather than before it: the release is stopped
        # sooner, and what it would still say about a release being stopped is not kept.
        self._judging = False
        self._watch_due, self._left_errors = {}, {}  # what is left behind is the rollback's now
        winding_down = asyncio.gather(self._stop_verification(), self._stop_watches())
        # The end of a dry run gives the account back: not a rollback of a release found wanting.
        counted = action.trigger not in ("resume", "dry_run") and not info.state.dry_run_over
        if counted:
            self.metrics.rollback_started(action.trigger)
        started_wall = time.monotonic()
        try:
            await self.rollback.plan(info, trigger=action.trigger, reason=action.reason, policy=action.policy)
            outcome = await self.rollback.run(info, stopping=lambda: self.stopping)
        finally:
            await winding_down
        if outcome is None:
            self._say("rollback interrupted by shutdown between two steps; the next start resumes it")
            return
        if self.rollback.safe_wall is not None and self.report.safe_wall is None:
            self.report.safe_wall = self.rollback.safe_wall
        duration = time.monotonic() - started_wall
        if outcome.ok:
            if counted or action.trigger == "resume" and not info.state.dry_run_over:
                self.metrics.rollback_finished(duration)
            self.report.done_wall = time.monotonic()
            self._notices.append(Notice("rolled_back", self.clock.time()))
        else:
            self.metrics.rollback_failed(outcome.failed_step or "?")
            log.error("rollback_failed", rollout=info.id, step=outcome.failed_step, error=outcome.error)
            self._notices.append(Notice("rollback_failed", self.clock.time(), detail=f"{outcome.failed_step}: "
                                                                                      f"{outcome.error}"))

    # ------------------------------------------------------------ verification

    async def _verify(self, info: RolloutInfo, *, stage_index: int | None = None) -> None:
        """Start the stage's verification; when it cannot start, say why and try again later
        (backing off) while the runner goes on deciding: an operator's rollback needs no verification."""
        try:
            await self._start_verification(info, stage_index=stage_index)
        except FencingRefused:
            raise  # the rollout is another daemon's now: this runner stops
        except Exception as exc:  # noqa: BLE001 - whatever stops it, the runner must keep reading commands
            await self._stop_verification()
            self._judging = False
            delay = self._verify_backoff.next()
            self._verify_retry_at = self.clock.time() + delay
            self.verification_error = f"{type(exc).__name__}: {exc}"
            log.error("verification_not_started", rollout=info.id, error=self.verification_error,
                      failures=self._verify_backoff.failures, retry_in=delay)
            self._say(f"verification cannot start ({self.verification_error}); trying again in {delay:.0f} s; "
                      "the stage's gate stays shut meanwhile")
            return
        self._verify_backoff.reset()
        self._verify_retry_at = None
        self.verification_error = None

    async def _retry_verification(self, info: RolloutInfo) -> None:
        """Start again a verification that failed to start or stopped, once its backoff has passed."""
        if info.status not in JUDGED or self.verifying:
            return
        if self._verify_retry_at is None:  # it ran and stopped: wait one backoff before the next start
            self._verify_retry_at = self.clock.time() + self._verify_backoff.next()
            self.verification_error = "verification stopped"
        if self.clock.time() >= self._verify_retry_at:
            await self._verify(info)

    def _on_verdicts(self, verdicts: list[Verdict]) -> None:
        if not self._judging:
            return
        if self.on_verdicts is not None:
            self.on_verdicts(verdicts)
        self._verdicts.extend(verdicts)
        self._note_breach(verdicts, self._verifier, dry_run_stage=self._dry_run_stage)

    def _note_breach(self, verdicts: list[Verdict], verifier: Verification | None, *,
                     dry_run_stage: bool = False) -> None:
        """Measure the first breach for the report and wake the runner: a breach is acted on at once."""
        if dry_run_stage:
            return  # a dry-run stage acts on no breach: none wakes the runner or counts as one
        breach = next((v for v in verdicts if asks_rollback(v) and not self._dry_run(v)), None)
        if breach is not None and self.report.breach_at is None:
            self.report.breach_at = breach.at
            self.report.breach_wall = time.monotonic()
            self.report.policy = breach.policy
            trigger = verifier.last_observed if verifier else None
            if trigger is not None and breach.outcome.value == "fail":
                self.report.detect_seconds = max(0.0, breach.at - trigger)
                self.metrics.observe_detection(self.report.detect_seconds)
            self._wake.set()

    def _dry_run(self, verdict: Verdict) -> bool:
        limits = self._limits.get(verdict.policy)
        return limits is not None and limits.dry_run

    async def _start_verification(self, info: RolloutInfo, *, stage_index: int | None = None) -> None:
        await self._stop_verification()
        index = info.state.stage if stage_index is None else stage_index
        verifier, self._verdict_log, verify = await self._build_verification(info, index, self._on_verdicts)
        self._verifier = verifier
        self._verifying_stage = index
        self._dry_run_stage = info.pipeline.stages[index].dry_run
        self._judging = True
        self._verification = asyncio.create_task(verify(), name=f"verify-rollout-{info.id}")
        self._verification.add_done_callback(self._verification_ended)

    async def _build_verification(self, info: RolloutInfo, index: int, on_verdicts, *, audit: bool = True
                                  ) -> tuple[Verification, VerdictLog, Callable[[], Awaitable[None]]]:
        """Stage ``index``'s verification of its account (with its baseline's, if any), its verdict log,
        and the coroutine function that runs it."""
        stage = info.pipeline.stages[index]
        policies = self.policies.stage(stage.policies)
        config = (await placing.release_config(self.db, info.release))[2]
        run_id = await current_stage_run(self.db, info.id, stage.name)
        verdict_log = VerdictLog(self.db, info.id, run_id)
        await verdict_log.resume()
        baseline, baseline_sources = None, []
        if stage.baseline:
            live = await live_deployment(self.db, stage.environment, stage.baseline)
            if live is not None:
                baseline = Verification(policies=policies, config=(await placing.release_config(self.db, live.release))[2],
                                        clock=self.clock,
                                        on_verdicts=lambda v: None, tick=self.cadence.evaluate)
                baseline_sources = await self._sources(stage.environment, stage.baseline, live.release, baseline,
                                                       stage.capital_cap, audit=False)
        verifier = Verification(policies=policies, config=config, clock=self.clock, on_verdicts=on_verdicts,
                                capital_cap=float(stage.capital_cap) if stage.capital_cap else None,
                                baseline=baseline, metrics=self.metrics, tick=self.cadence.evaluate,
                                account=stage.account)
        sources = await self._sources(stage.environment, stage.account, info.release, verifier, stage.capital_cap,
                                      audit=audit)

        async def verify() -> None:
            async with asyncio.TaskGroup() as group:
                if baseline is not None:
                    group.create_task(baseline.run(baseline_sources), name=f"baseline-{info.id}")
                group.create_task(verifier.run(sources), name=f"verification-{info.id}")

        return verifier, verdict_log, verify

    def _verification_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("verification_stopped", rollout=self.id, error=repr(task.exception()))

    async def _sources(self, environment: str, account: str, release: str, verifier: Verification, capital_cap,
                       *, audit: bool = True) -> list:
        deployer = self.site.deployer(environment)
        running = await deployer.status(self.site.instance(environment, account))
        config = (await placing.release_config(self.db, release))[2]
        client = await self.site.client(environment, account)
        master_name = self.site.master_of(environment)
        master = await self.site.client(environment, master_name) if capital_cap and master_name else None
        sink = verifier.sink
        placed = await live_deployment(self.db, environment, account)  # its modes and start bound the release
        sources = [ExchangeObserver(account=account, client=client, config=config, clock=self.clock, sink=sink,
                                    master=master, snapshot_every=self.cadence.snapshot,
                                    modes=placed_modes(placed.settings_before if placed else None),
                                    placed_at=placed.started_at.timestamp() if placed else None).run]
        if running is not None:
            sources.append(MetricsScraper(running.metrics_url, clock=self.clock, sink=sink,
                                          interval=self.cadence.scrape, trace_configs=self.site.trace_configs).run)
            if running.log_file is not None:
                sources.append(LogFileObserver(running.log_file, clock=self.clock, sink=sink,
                                               interval=self.cadence.logs).run)
            elif running.journal_unit is not None:
                sources.append(JournaldObserver(running.journal_unit, clock=self.clock, sink=sink,
                                                interval=self.cadence.logs).run)
            pid = running.pid
            sources.append(ProcessObserver(clock=self.clock, sink=sink, pid_source=lambda: pid,
                                           interval=self.cadence.process).run)
        if audit:
            sources.append(AuditObserver(self.db, clock=self.clock, sink=sink, interval=self.cadence.audit).run)

            async def weight() -> None:  # what Binance says the IP used this minute, for the dashboard
                while True:
                    self.metrics.set_weight_used(account, client.budget.exchange_used)
                    await self.clock.sleep(self.cadence.snapshot)

            sources.append(weight)
        return sources

    async def _stop_verification(self) -> None:
        task, self._verification = self._verification, None
        self._verifier = None
        self._verifying_stage = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


    # ------------------------------------------------------------ accounts left behind

    async def _hand_over(self, info: RolloutInfo, index: int) -> None:
        """Before stage ``index`` is placed: the verification of the stage that ran goes on as the watch
        of its account when the pipeline says so (no gap, no warm-up), else it stops; so do watches of
        accounts stage ``index`` places the release on again (its own verification will cover them)."""
        left = info.pipeline.left_behind(index)
        for key in [k for k, watch in self._watches.items() if getattr(left.get(k), "name", None) != watch.stage]:
            await self._stop_watches(key)
        ran = self._verifying_stage
        if ran is not None and self.verifying and self._verifier is not None and self._verdict_log is not None:
            stage = info.pipeline.stages[ran]
            key = (stage.environment, stage.account)
            if left.get(key) == stage and stage.after_promotion == "watch" and key not in self._watches:
                watch = _Watch(stage.name, self._verification, self._verifier, self._verdict_log)
                self._verification, self._verifier, self._verifying_stage = None, None, None
                watch.verifier.on_verdicts = self._on_watched(key)
                self._watches[key] = watch
                self._say(f"{key[0]}/{key[1]} stays under stage {stage.name}'s verification after its promotion")
                return
        await self._stop_verification()

    async def _after_promotion(self, info: RolloutInfo, index: int) -> None:
        """With stage ``index`` placed: stop or watch each account earlier stages left behind, as each
        one's ``after_promotion`` says. Idempotent: a resumed runner calls it again."""
        left = info.pipeline.left_behind(index)
        due: dict[Account, Stage] = {}
        for key, stage in left.items():
            if stage.after_promotion == "stop":
                try:
                    await self._stop_left_behind(info, key, stage)
                    self._left_errors.pop(key, None)
                    continue
                except FencingRefused:
                    raise  # the rollout is another daemon's now: this runner stops
                except Exception as exc:  # noqa: BLE001 - fail closed: an account not stopped is watched
                    self._left_errors[key] = (f"its release could not be stopped ({type(exc).__name__}: {exc}); "
                                              "it is watched meanwhile")
                    log.error("left_behind_not_stopped", rollout=info.id, account=f"{key[0]}/{key[1]}",
                              error=str(exc))
            due[key] = stage
        self._watch_due = {key: stage.name for key, stage in due.items()}
        for key in [k for k in self._watches if k not in due]:
            await self._stop_watches(key)
        for key, stage in due.items():
            watch = self._watches.get(key)
            if watch is None or watch.task.done():
                await self._start_watch(info, key, stage)

    async def _stop_left_behind(self, info: RolloutInfo, key: Account, stage: Stage) -> None:
        live = await live_deployment(self.db, *key)
        if live is None or live.rollout_id != info.id:
            return  # stopped already (or another release runs there, which this rollout does not own)
        reason = (f"stage {stage.name} was promoted: its release is stopped on {key[0]}/{key[1]} "
                  "(after_promotion: stop)")
        await placing.unplace(self.db, self.site, live, reason=reason)
        log.info("left_behind_stopped", rollout=info.id, account=f"{key[0]}/{key[1]}", release=live.release)
        self._say(f"{live.release} stopped on {key[0]}/{key[1]}: stage {stage.name} was promoted "
                  "(after_promotion: stop)")

    async def _start_watch(self, info: RolloutInfo, key: Account, stage: Stage) -> None:
        await self._stop_watches(key)
        try:
            verifier, verdict_log, verify = await self._build_verification(
                info, info.pipeline.index(stage.name), self._on_watched(key), audit=False)
        except FencingRefused:
            raise  # the rollout is another daemon's now: this runner stops
        except Exception as exc:  # noqa: BLE001 - said by /readyz and tried again with backoff
            self._left_errors[key] = f"{type(exc).__name__}: {exc}"
            log.error("watch_not_started", rollout=info.id, account=f"{key[0]}/{key[1]}", error=str(exc))
            return
        task = asyncio.create_task(verify(), name=f"watch-{info.id}-{key[0]}-{key[1]}")
        task.add_done_callback(self._verification_ended)
        self._watches[key] = _Watch(stage.name, task, verifier, verdict_log)
        if not self._left_errors.get(key, "").startswith("its release could not be stopped"):
            self._left_errors.pop(key, None)
        self._say(f"{key[0]}/{key[1]} is watched with stage {stage.name}'s policies")

    def _on_watched(self, key: Account) -> Callable[[list[Verdict]], None]:
        def handle(verdicts: list[Verdict]) -> None:
            watch = self._watches.get(key)
            if watch is not None:
                watch.pending.extend(verdicts)
                self._note_breach(verdicts, watch.verifier)
        return handle

    async def _watched_breaches(self) -> list[Verdict]:
        """Store what the watches said since the last turn; their breaches, naming the account, for decide
        (only breaches, and every verdict of a policy whose evaluations decide counts: the gate is the
        placed stage's business)."""
        breaches = []
        for (environment, account), watch in self._watches.items():
            seen, watch.pending = watch.pending, []
            if seen:
                await watch.log.record(seen)
            breaches += [replace(v, reason=f"on {environment}/{account} (watched since stage {watch.stage} was "
                                           f"promoted): {v.reason}".rstrip(": "))
                         for v in seen if asks_rollback(v) or v.policy in self._limits]
        return breaches

    async def _retry_left_behind(self, info: RolloutInfo) -> None:
        """Try again, backing off, what `_after_promotion` could not do: a watch, a stop."""
        broken = bool(self._left_errors) or any(
            key not in self._watches or self._watches[key].task.done() for key in self._watch_due)
        if info.status not in JUDGED or not broken:
            if not broken:
                self._left_backoff.reset()
                self._left_retry_at = None
            return
        now = self.clock.time()
        if self._left_retry_at is None:
            self._left_retry_at = now + self._left_backoff.next()
        elif now >= self._left_retry_at:
            self._left_retry_at = None
            await self._after_promotion(info, info.state.stage)

    async def _stop_watches(self, *keys: Account) -> None:
        """Stop the watches of ``keys`` (none given: every watch)."""
        for key in keys or list(self._watches):
            watch = self._watches.pop(key, None)
            if watch is not None:
                watch.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watch.task


def _command(row: CommandInfo, clock: Clock) -> Command:
    """A stored operator command as `decide` reads it; its age is judged on the clock that stamped it."""
    return Command(row.id, row.kind, row.actor, row.reason, bool(row.args.get("force")), row.args.get("stage"),
                   tuple(row.args.get("items", ())), created=row.given_on(clock),
                   expires_in=row.args.get("expires_in"), os_user=row.args.get("os_user"))
