"""One harness run: a release through a stage on the simulator, faults on a schedule, all in process.

The simulator, the release's bot and the rollout runner share one `SimulatedClock`. By default
it is stepped (`controller.harness.stepping`): it jumps to the next thing that happens at every
quiet moment, so 48 h pass in about a minute; with ``speed`` it runs that many times faster
than real time instead.

The daemon's own code places, judges and rolls back: each placement is a rollout, run by the real
`RolloutRunner`, of a one-stage pipeline of the harness's stage (longer than the run, so its gate
never decides), on a store of its own (SQLite in a temporary folder, removed afterwards, unless
``store`` names a folder to keep it in), through a `Site` whose clients count their requests in
flight and an in-process deployer (`controller.harness.deployer`: the process deployer's bots
keep a clock of their own, which cannot follow a stepped one). The harness plays the operator,
through the store's commands:

- The release under test is placed first as the account's release (as ``canaryctl baseline``
  places one), then under a rollout with the stage's policies in dry run: there is nothing
  healthier to roll back to, so a breach no fault explains is recorded and the release runs on.
- A defect is injected by placing a release that carries it: the running rollout ends (a forced
  promote: its release stays) and a rollout of the faulty release, with the stage's policies
  as they are, replaces it. Its deployment's previous one is the release under test's.
- When a policy catches a fault (`controller.harness.scoring` says which), the runner rolls back:
  by itself for a breach it acts on, else on the harness's ``rollback`` command, given at once
  (the clock held until the rollback has begun). The real `Rollback` plan stops the release,
  cancels its orders, restores the leverage and starts the previous release, the release under
  test, whose new rollout is then judged afresh; the knobs of the faults just caught go off.

So every fault is caught, or not, by its own placement's verdicts, and the run goes on to its
end. What catches what, and what the run comes to, is `controller.harness.scoring`'s to say.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.analysis.policy import Policy
from controller.analysis.verdict import Verdict
from controller.clock import SimulatedClock
from controller.config.daemon import Endpoints
from controller.config.strategy import StrategyConfig
from controller.deploy.base import Running
from controller.errors import CanaryError
from controller.harness.deployer import PLACING_STEP, EmbeddedDeployer
from controller.harness.faults import Fault
from controller.harness.record import harness_release
from controller.harness.release import REFERENCE_ENTRY_POINT, load_entry_point, with_defects
from controller.harness.result import HarnessResult
from controller.harness.scoring import Scoring
from controller.harness.stepping import InFlight, SteppedClient, SteppedDatabase, Stepper, threads_counted
from controller.logs import get_logger
from controller.metrics import ControllerMetrics
from controller.rollout import placing
from controller.rollout.decide import Status
from controller.rollout.engine import PolicySet, RolloutRunner, RunnerCadence
from controller.rollout.info import RolloutInfo, create_rollout, get_rollout
from controller.rollout.pipeline import Pipeline
from controller.rollout.site import AccountAccess, EnvironmentAccess, Site
from controller.store.commands import submit_command
from controller.store.database import resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade

log = get_logger(__name__)

ACCOUNT = "canary"
ENVIRONMENT = "harness"
ACTOR = "harness"
UNDER_TEST = "under-test"  # the release under test's version in the run's own store
STATUS_POLL = 0.1  # wall seconds: how often a wait on the runner looks at the store, between its events


class HarnessError(CanaryError):
    """The run could not go on (the release under test did not start, the simulator failed)."""


@dataclass(frozen=True)
class Cadence:
    """How often things happen, in simulated seconds. Fewer requests per simulated hour than the
    daemon's and the bot's defaults (a 48 h run is CPU-bound), yet inside every stage B policy:
    a scrape every 20 s gives b-bucket-locks-released its 1000 samples in 5.5 of its 6 h; a
    reconcile every 50 s keeps margin fractions younger than 60 s; an iteration every 45 s gives
    the latency policy its 50 orders an hour (a minute gives barely 50); a snapshot every 2 min
    keeps the exchange source fresh (5 min)."""

    scrape: float = 20.0
    evaluate: float = 30.0
    snapshot: float = 120.0
    bot_interval: float = 45.0
    bot_reconcile: float = 50.0
    sim_tick: float = 30.0

    def bot_settings(self, seed: int) -> dict[str, Any]:
        """The bot's cadence, as the release's entry point takes it. The simulator's market streams
        push on its ticks, so a streamed price is as young as the last tick: fresh for two of them
        (a stream's 1 s push comes every ``sim_tick`` here, and the simulator's prices move only then)."""
        return {"interval": self.bot_interval, "reconcile_every": self.bot_reconcile, "seed": seed,
                "shutdown_timeout": 5.0, "stream_timeout": 10.0, "price_max_age": 2 * self.sim_tick}

    def runner(self) -> RunnerCadence:
        """The rollout runner's: its sources as above; the process and the audit chain, which no
        policy the harness judges reads, seldom; operator commands read often (wall seconds: a turn
        that waits on the wall clock lets the simulated one run on, past a rollback's deadline)."""
        return RunnerCadence(evaluate=self.evaluate, snapshot=self.snapshot, scrape=self.scrape, logs=self.snapshot,
                             process=self.snapshot, audit=3600.0, command_poll=STATUS_POLL)


@dataclass(frozen=True)
class HarnessOptions:
    strategy: StrategyConfig
    release: str                    # how the release is named in results (a version, or the strategy's origin)
    stage: str
    policies: tuple[Policy, ...]    # the stage's policy file
    faults: tuple[Fault, ...] = ()
    other_policies: tuple[Policy, ...] = ()  # the other stages': named when a fault goes unwatched here
    duration: float = 48 * 3600.0
    speed: float | None = None      # None: stepped, as fast as possible
    seed: int = 7
    cadence: Cadence = Cadence()
    entry_point: str = REFERENCE_ENTRY_POINT  # the release's bot, in process (MODULE:CALLABLE)
    store: Path | None = None       # a folder to keep the run's own store in (None: a temporary one, removed)


@dataclass(frozen=True)
class Progress:
    simulated_s: float
    duration_s: float
    wall_s: float
    breaches: int
    injected: int
    caught: int
    faults: int


class JudgedPolicies(PolicySet):
    """The stage's policies that the harness judges, as the runner reads a policies folder: under
    ``FILE`` as they are (for a release carrying a defect), under ``FILE`` with ``.dry-run`` before
    its suffix in dry run (for the release under test)."""

    def __init__(self, file: str, policies: list[Policy]) -> None:
        super().__init__(Path(file).parent)
        self.file, self.dry_run_file = file, dry_run_name(file)
        self._cache = {self.file: list(policies),
                       self.dry_run_file: [p.model_copy(update={"dry_run": True}) for p in policies]}

    def stage(self, filename: str) -> list[Policy]:
        return self._cache[filename]

    def reload(self) -> None:
        """Nothing to read again: the policies were read before the run."""


def dry_run_name(file: str) -> str:
    path = Path(file)
    return str(path.with_name(f"{path.stem}.dry-run{path.suffix}"))


@dataclass(eq=False)
class _Segment:
    """One placement of a release, judged by its rollout's verification until it is stopped."""

    index: int  # the placement's, for the scoring
    label: str
    ended: bool = False


@dataclass(eq=False)
class _Rollout:
    """The rollout under way and its runner."""

    id: int
    label: str
    runner: RolloutRunner
    task: asyncio.Task
    ending: bool = False  # the harness ends it: what it judges now no longer counts


class Harness:
    def __init__(self, options: HarnessOptions, *, simulator: Callable[..., Any],
                 on_progress: Callable[[Progress], None] | None = None, progress_every: float = 2.0) -> None:
        """``simulator``: makes the exchange the run trades on, ``simulator(clock=, seed=, tick_seconds=)``
        (`controller.sim.Simulator`, which production code does not carry: the CLI hands it in)."""
        self.options = options
        self.new_simulator = simulator
        self.entry_point = load_entry_point(options.entry_point)
        self.on_progress = on_progress
        self.progress_every = progress_every
        self.scoring = Scoring(options.faults, stage=options.stage, release=options.release,
                               duration=options.duration, policies=options.policies,
                               other_policies=options.other_policies)
        self.judged = self.scoring.judged
        self.policies = JudgedPolicies(f"stage-{options.stage}.yaml", self.judged)
        self.changes: list[Verdict] = []  # every verdict change of a policy's group, for the record
        self.started_at = 0.0             # the clock's time at the start of the run
        self._last_key: dict[tuple, tuple] = {}  # (policy, group) -> the last change's key
        self._segment: _Segment | None = None
        self._placing: tuple[str, int | None] | None = None  # (label, defect) of the placement awaited
        self._ending = "the rollback"     # why the running release is stopped next, for the scoring
        self._rollout: _Rollout | None = None
        self._versions: dict[int, str] = {}  # a defect's place in the schedule -> its release's version
        self._on: list[int] = []          # the sim faults whose knob is on, by their place in the schedule
        self._catch: str | None = None    # a catch the rollback has not begun for (the clock is held)
        self._wake = asyncio.Event()
        self.stepper: Stepper | None = None
        self.metrics = ControllerMetrics()  # the runner's, which nothing here exports

    # ------------------------------------------------------------ the run, top to bottom

    @property
    def result(self) -> HarnessResult:
        return self.scoring.result

    async def run(self) -> HarnessResult:
        options = self.options
        wall = time.monotonic()
        stepped = options.speed is None
        # The simulated run is the `duration` that ends as it starts: its records sit in the past.
        self.clock = SimulatedClock(time.time() - options.duration, speed=0.0 if stepped else options.speed)
        self.sim = self.new_simulator(clock=self.clock, seed=options.seed, tick_seconds=options.cadence.sim_tick)
        self.in_flight = InFlight()
        self.started_at = self.scoring.start = self.clock.time()
        end = self.started_at + options.duration
        kept = contextlib.nullcontext(options.store) if options.store is not None else None
        with kept or tempfile.TemporaryDirectory(prefix="canary-harness-") as folder:
            self.db = SteppedDatabase(resolve_url(f"sqlite:///{Path(folder) / 'harness.db'}"), in_flight=self.in_flight)
            tasks: list[asyncio.Task] = []
            counted = contextlib.ExitStack()
            try:
                await upgrade(self.db)
                await self.sim.start("127.0.0.1", 0)
                if stepped:
                    counted.enter_context(threads_counted(self.in_flight))
                    self.stepper = Stepper(self.clock, self.in_flight, held=lambda: self.sim.held)
                    tasks.append(asyncio.create_task(self.stepper.run(end), name="harness-stepper"))
                if self.on_progress is not None:
                    tasks.append(asyncio.create_task(self._report_progress(wall), name="harness-progress"))
                self.site = self._site()
                await self._record_releases()
                await self._schedule(end)
                simulated = min(self.clock.time(), end) - self.started_at
            finally:
                await self._stop_runner()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                self._ending = "the run ended"
                if hasattr(self, "deployer"):
                    await self.deployer.close()
                if hasattr(self, "site"):
                    await self.site.close()
                await self.sim.stop()
                await self.db.close()
                counted.close()
        self.scoring.finish(simulated)
        self.result.wall_s = time.monotonic() - wall
        if self.on_progress is not None:
            self.on_progress(self._progress(wall))
        return self.result

    def _site(self) -> Site:
        """The simulator's account as the runner reaches it, its bots placed in this process."""
        account = self.sim.accounts[ACCOUNT]
        self.deployer = EmbeddedDeployer(self.entry_point, clock=self.clock, account=ACCOUNT,
                                         settings=self.options.cadence.bot_settings(self.options.seed),
                                         trace_configs=[self.in_flight.trace_config()], stepper=self.stepper,
                                         on_started=self._started, on_stopped=self._stopped)
        environment = EnvironmentAccess(
            name=ENVIRONMENT, endpoints=Endpoints(self.sim.rest_url, self.sim.ws_url, self.sim.sapi_url),
            accounts={ACCOUNT: AccountAccess(ACCOUNT, account.api_key, account.api_secret)}, deployer=self.deployer)
        return Site(self.clock, {ENVIRONMENT: environment}, metrics=None,
                    client_type=functools.partial(SteppedClient, in_flight=self.in_flight),
                    trace_configs=[self.in_flight.trace_config()])

    async def _record_releases(self) -> None:
        """The release under test and each release carrying a defect of the schedule, in the store."""
        await add_release(self.db, self.clock, dataclasses.replace(harness_release(self.options.strategy),
                                                                   version=UNDER_TEST), actor=ACTOR)
        for index, fault in enumerate(self.options.faults):
            if fault.kind == "defect":
                version = self._versions[index] = f"defect-{index + 1}"
                new = harness_release(with_defects(self.options.strategy, fault.defects))
                await add_release(self.db, self.clock, dataclasses.replace(new, version=version), actor=ACTOR)

    async def _schedule(self, end: float) -> None:
        """Place the release under test, then each fault at its time (and each sim knob off at its
        end), rolling back whenever a catch asks for it, until ``end``."""
        events: list[tuple[float, int, int]] = []
        for index, fault in enumerate(self.options.faults):
            events.append((fault.at, 1, index))
            if fault.span is not None and fault.at + fault.span < self.options.duration:
                events.append((fault.at + fault.span, 0, index))  # one past the end: the run ends first
        events.sort()
        try:
            await placing.place(self.db, self.site, environment=ENVIRONMENT, account=ACCOUNT, release=UNDER_TEST,
                                rollout_id=None, actor=ACTOR)
        except Exception as exc:  # noqa: BLE001 - whatever stopped it, the run cannot start
            raise HarnessError(f"the release under test could not be placed: {exc}") from None
        await self._start_rollout(UNDER_TEST, self.options.release)
        for at, starts, index in events:
            await self._until(self.started_at + at)
            if starts:
                await self._inject(index)
            elif index in self._on:
                self._turn_off(index)
        await self._until(end)

    async def _until(self, when: float) -> None:
        """Let the clock reach ``when``; on the way, roll back whenever a catch asks for it, and
        judge the release under test afresh after every rollback."""
        while True:
            if self._catch is not None:
                await self._roll_back()
                continue
            if self._rollout is not None and self._rollout.task.done():
                await self._after_rollback()
                continue
            remaining = when - self.clock.time()
            if remaining <= 0:
                return
            self._wake.clear()
            sleeping = asyncio.create_task(self.clock.sleep(remaining), name="harness-until")
            woken = asyncio.create_task(self._wake.wait(), name="harness-wake")
            try:
                await asyncio.wait({sleeping, woken, self._rollout.task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeping.cancel()
                woken.cancel()

    # ------------------------------------------------------------ rollouts

    async def _start_rollout(self, version: str, label: str, defect: int | None = None) -> None:
        """A rollout of ``version`` (the stage's policies in dry run for the release under test),
        returned once its release runs."""
        file = self.policies.dry_run_file if version == UNDER_TEST else self.policies.file
        pipeline = Pipeline.model_validate({"name": "harness", "stages": [{
            "name": self.options.stage, "environment": ENVIRONMENT, "account": ACCOUNT, "policies": file,
            # Longer than the run from any start: the stage's gate never decides.
            "duration": self.options.duration + 3600.0, "progress_deadline": self.options.duration + 3600.0}]})
        self._placing = (label, defect)
        # Placing is not all requests (a bot stopping, one starting, the artifact hashed again): small
        # steps meanwhile, so that it takes simulated seconds, as it would for the daemon.
        with self.stepper.fine(PLACING_STEP) if self.stepper else contextlib.nullcontext():
            info = await create_rollout(self.db, self.clock, version=version, pipeline=pipeline, actor=ACTOR)
            runner = RolloutRunner(rollout_id=info.id, db=self.db, site=self.site, policies=self.policies,
                                   metrics=self.metrics, cadence=self.options.cadence.runner(),
                                   on_event=self._on_event, on_verdicts=self._on_verdicts)
            task = asyncio.create_task(runner.run(), name=f"harness-rollout-{info.id}")
            self._rollout = _Rollout(info.id, label, runner, task)
            while self._placing is not None:
                status = await self._event(lambda info: info.status not in (Status.PENDING, Status.PROMOTING))
                if self._placing is not None and status is not None:
                    raise HarnessError(f"{label} could not be placed: the rollout is {status.status.value}"
                                       + (f" ({status.state.reason})" if status.state.reason else ""))
        log.info("harness_placed", release=label, rollout=info.id, segment=self.result.releases_placed,
                 at=round(self._now()))

    async def _end_rollout(self, why: str) -> None:
        """End the rollout under way with its release left running: a forced promote, the clock held
        meanwhile (ending it takes no simulated time)."""
        rollout = self._rollout
        if (await get_rollout(self.db, rollout.id)).status is Status.ROLLING_BACK:
            await self._after_rollback()  # a rollback under way ends first: then its successor ends
            rollout = self._rollout
        rollout.ending = True
        with self.in_flight.request():
            await submit_command(self.db, self.clock, rollout_id=rollout.id, kind="promote", actor=ACTOR,
                                 reason=why, args={"force": True})
            rollout.runner.wake()
            while not rollout.task.done():
                await self._event(lambda info: False)
        info = rollout.task.result()
        if info.status is not Status.PROMOTED:
            raise HarnessError(f"the rollout of {rollout.label} could not be ended: it is {info.status.value}")
        self._rollout = None

    async def _roll_back(self) -> None:
        """A catch: the knobs of the faults just caught go off, and the rollout rolls back (by
        itself, or on the harness's command); the clock, held since the catch, moves again once
        the rollback has begun."""
        reason, rollout = self._catch, self._rollout
        try:
            for index in [i for i in self._on if self.result.faults[i].caught_by is not None]:
                self._turn_off(index)
            log.info("harness_rollback", reason=reason)
            if (await get_rollout(self.db, rollout.id)).status is not Status.ROLLING_BACK:
                await submit_command(self.db, self.clock, rollout_id=rollout.id, kind="rollback", actor=ACTOR,
                                     reason=reason)
                rollout.runner.wake()
            begun = (Status.ROLLING_BACK, Status.ROLLED_BACK, Status.FAILED)
            while not rollout.task.done() and await self._event(lambda info: info.status in begun) is None:
                pass
        finally:
            self._catch = None
            self.in_flight.end()
        await self._after_rollback()

    async def _after_rollback(self) -> None:
        """Once the rollout under way has rolled back: the release under test (the rollback started
        it again) under a new rollout. A rollback that failed ends the run."""
        rollout = self._rollout
        while not rollout.task.done():
            failed = await self._event(lambda info: info.status is Status.FAILED)
            if failed is not None:
                raise HarnessError(f"the rollback of {rollout.label} failed: {failed.state.reason}")
        info = rollout.task.result()
        if info.status is not Status.ROLLED_BACK:
            raise HarnessError(f"the rollout of {rollout.label} ended {info.status.value}, not rolled back")
        self._rollout = None
        await self._start_rollout(UNDER_TEST, self.options.release)

    async def _event(self, done: Callable[[RolloutInfo], bool]) -> RolloutInfo | None:
        """Wait for the runner's next event (or its end, or `STATUS_POLL`); the rollout if ``done`` says
        its state is what is awaited, else None."""
        self._wake.clear()
        info = await get_rollout(self.db, self._rollout.id)
        if done(info):
            return info
        woken = asyncio.create_task(self._wake.wait(), name="harness-runner-event")
        try:
            await asyncio.wait({woken, self._rollout.task}, timeout=STATUS_POLL, return_when=asyncio.FIRST_COMPLETED)
        finally:
            woken.cancel()
        return None

    def _on_event(self, text: str) -> None:
        self._wake.set()

    async def _stop_runner(self) -> None:
        """The run ended: the runner finishes the action in hand and stops."""
        rollout, self._rollout = self._rollout, None
        if rollout is None:
            return
        rollout.runner.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(rollout.task, timeout=60)

    # ------------------------------------------------------------ the deployer's news

    def _started(self, running: Running) -> None:
        """A release runs: the placement awaited, if any, is judged from now."""
        if self._placing is None:
            return  # the rollback started the release under test: its new rollout judges it
        label, defect = self._placing
        self._placing = None
        self._segment = _Segment(self.scoring.placed(label, self._now(), defect), label)

    def _stopped(self, running: Running, crash: BaseException | None) -> None:
        segment = self._segment
        if segment is None or segment.ended:
            return
        segment.ended = True
        self.scoring.ended(segment.index, self._now(), self._ending, None if crash is None else repr(crash))

    # ------------------------------------------------------------ faults

    async def _inject(self, index: int) -> None:
        fault = self.options.faults[index]
        result = self.scoring.injected(index, self._now())
        if fault.kind == "defect":
            label = f"{self.options.release} + {fault.name}"
            await self._end_rollout(f"the harness places {label}")
            self._ending = f"{label} was placed"
            try:
                await self._start_rollout(self._versions[index], label, defect=index)
            finally:
                self._ending = "the rollback"
        else:
            self.sim.faults.switch_on(fault.name, fault.value, ACCOUNT)
            self._on.append(index)
        log.info("harness_fault_injected", fault=fault.text, at=round(result.injected_at))

    def _turn_off(self, index: int) -> None:
        fault = self.options.faults[index]
        self.sim.faults.switch_off(fault.name, fault.value, ACCOUNT)
        self._on.remove(index)
        self.scoring.knob_off(index)

    # ------------------------------------------------------------ verdicts

    def _on_verdicts(self, verdicts: list[Verdict]) -> None:
        segment = self._segment
        if segment is None or segment.ended or self._rollout is None or self._rollout.ending:
            return
        for verdict in verdicts:
            if self._last_key.get((verdict.policy, verdict.group)) != verdict.key:
                self._last_key[(verdict.policy, verdict.group)] = verdict.key
                self.changes.append(verdict)
            breaches = len(self.result.breaches)
            caught = self.scoring.judge(segment.index, verdict)
            if caught is not None:
                if self._catch is None:
                    self.in_flight.begin()  # the clock waits for the rollback to begin: `_roll_back` ends it
                self._catch = f"{verdict.policy} caught {caught.fault.text}"
                self._wake.set()
            elif len(self.result.breaches) > breaches:
                log.warning("harness_unexpected_breach", policy=verdict.policy, group=dict(verdict.group),
                            at=round(verdict.at - self.started_at), reason=verdict.reason)

    # ------------------------------------------------------------ progress

    def _progress(self, wall: float) -> Progress:
        simulated = min(self.clock.time() - self.started_at, self.options.duration)
        faults = self.result.faults
        return Progress(simulated, self.options.duration, time.monotonic() - wall, len(self.result.breaches),
                        sum(r.injected_at is not None for r in faults), sum(r.caught_by is not None for r in faults),
                        len(faults))

    async def _report_progress(self, wall: float) -> None:
        while True:
            await asyncio.sleep(self.progress_every)
            self.on_progress(self._progress(wall))

    def _now(self) -> float:
        """Seconds into the run."""
        return self.clock.time() - self.started_at
