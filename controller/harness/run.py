"""One harness run: a release through a stage on the simulator, faults on a schedule, all in process.

The simulator, the release's bot and the stage's verification (the exchange observer and the
bot's /metrics scraped into a `Verification` of the stage's policies) share one
`SimulatedClock`. By default it is stepped (`controller.harness.stepping`): it jumps to the next
thing that happens at every quiet moment, so 48 h pass in about a minute; with ``speed`` it
runs that many times faster than real time instead.

Each placement of a release gets a fresh verification, as a stage run does in the daemon. A
defect is injected by placing a release that carries it; when a policy catches it, the run of
that release ends as the daemon's rollback would end it, and the healthy release is placed
again and judged afresh. So every fault is caught, or not, by its own release's verdicts, and
the run goes on to its end. A breach that no injected fault explains is the release under test
failing: recorded, and the release runs on (there is nothing healthier to roll back to). What
catches what, and what the run comes to, is `controller.harness.scoring`'s to say.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controller.analysis.policy import Policy
from controller.analysis.verdict import Verdict
from controller.clock import SimulatedClock
from controller.config.daemon import Endpoints
from controller.config.strategy import StrategyConfig
from controller.errors import CanaryError
from controller.exchange.client import ExchangeClient
from controller.exchange.weights import WeightBudget
from controller.harness.faults import Fault
from controller.harness.release import REFERENCE_ENTRY_POINT, EmbeddedRelease, load_entry_point, with_defects
from controller.harness.result import HarnessResult
from controller.harness.scoring import Scoring
from controller.harness.stepping import InFlight, SteppedClient, Stepper
from controller.logs import get_logger
from controller.observe.exchange import ExchangeObserver
from controller.observe.metrics import MetricsScraper
from controller.verification import Verification

log = get_logger(__name__)

ACCOUNT = "canary"
PLACING_STEP = 0.25  # seconds: a release starts in simulated seconds, as a process does


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
        """The bot's cadence, as the release's entry point takes it."""
        return {"interval": self.bot_interval, "reconcile_every": self.bot_reconcile, "seed": seed,
                "shutdown_timeout": 5.0, "stream_timeout": 10.0}


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


@dataclass(frozen=True)
class Progress:
    simulated_s: float
    duration_s: float
    wall_s: float
    breaches: int
    injected: int
    caught: int
    faults: int


@dataclass(eq=False)
class _Segment:
    """One placement of a release and its verification, until the next placement."""

    index: int  # the placement's, for the scoring
    placement: EmbeddedRelease
    label: str
    task: asyncio.Task | None = None


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
        self.changes: list[Verdict] = []  # every verdict change of a policy's group, for the record
        self.started_at = 0.0             # the clock's time at the start of the run
        self._last_key: dict[tuple, tuple] = {}  # (policy, group) -> the last change's key
        self._segment: _Segment | None = None
        self._on: list[int] = []          # the sim faults whose knob is on, by their place in the schedule
        self._rollback: str | None = None
        self._wake = asyncio.Event()
        self._clients: list[ExchangeClient] = []
        self.stepper: Stepper | None = None

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
        await self.sim.start("127.0.0.1", 0)
        tasks: list[asyncio.Task] = []
        try:
            if stepped:
                self.stepper = Stepper(self.clock, self.in_flight, held=lambda: self.sim.held)
                tasks.append(asyncio.create_task(self.stepper.run(end), name="harness-stepper"))
            if self.on_progress is not None:
                tasks.append(asyncio.create_task(self._report_progress(wall), name="harness-progress"))
            self.observer_client = await self._client(share=0.1)
            await self._schedule(end)
            simulated = min(self.clock.time(), end) - self.started_at
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._segment is not None:
                await self._end_segment(self._segment, "the run ended")
            for client in self._clients:
                await client.close()
            await self.sim.stop()
        self.scoring.finish(simulated)
        self.result.wall_s = time.monotonic() - wall
        if self.on_progress is not None:
            self.on_progress(self._progress(wall))
        return self.result

    async def _schedule(self, end: float) -> None:
        """Place the healthy release, then each fault at its time (and each sim knob off at its
        end), rolling back whenever a breach asks for it, until ``end``."""
        events: list[tuple[float, int, int]] = []
        for index, fault in enumerate(self.options.faults):
            events.append((fault.at, 1, index))
            if fault.span is not None and fault.at + fault.span < self.options.duration:
                events.append((fault.at + fault.span, 0, index))  # one past the end: the run ends first
        events.sort()
        await self._place(self.options.strategy, self.options.release)
        for at, starts, index in events:
            await self._until(self.started_at + at)
            if starts:
                await self._inject(index)
            elif index in self._on:
                self._turn_off(index)
        await self._until(end)

    async def _until(self, when: float) -> None:
        """Let the clock reach ``when``; roll back on the way whenever a breach asks for it."""
        while True:
            if self._rollback is not None:
                await self._roll_back()
                continue
            remaining = when - self.clock.time()
            if remaining <= 0:
                return
            self._wake.clear()
            sleeping = asyncio.create_task(self.clock.sleep(remaining), name="harness-until")
            woken = asyncio.create_task(self._wake.wait(), name="harness-wake")
            try:
                await asyncio.wait({sleeping, woken}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                sleeping.cancel()
                woken.cancel()

    # ------------------------------------------------------------ placing releases

    async def _client(self, *, share: float) -> ExchangeClient:
        account = self.sim.accounts[ACCOUNT]
        client = SteppedClient(in_flight=self.in_flight, account=ACCOUNT, api_key=account.api_key,
                               api_secret=account.api_secret,
                               endpoints=Endpoints(self.sim.rest_url, self.sim.ws_url, self.sim.sapi_url),
                               clock=self.clock, budget=WeightBudget(self.clock, share=share))
        self._clients.append(client)
        await client.sync_time()
        return client

    async def _place(self, config: StrategyConfig, label: str, defect: int | None = None) -> None:
        """Stop the running release, start ``config``'s bot, and verify it afresh."""
        with self.stepper.fine(PLACING_STEP) if self.stepper else contextlib.nullcontext():
            placement = await self._replace(config, label)
        cadence = self.options.cadence
        if placement.crash is not None and defect is None:
            raise HarnessError(f"the release under test stopped before it traded: {placement.crash!r}")
        index = self.scoring.placed(label, self._now(), defect)
        segment = _Segment(index=index, placement=placement, label=label)
        verification = Verification(policies=self.judged, config=config, clock=self.clock,
                                    on_verdicts=lambda verdicts: self._on_verdicts(segment, verdicts),
                                    tick=cadence.evaluate)
        observer = ExchangeObserver(account=ACCOUNT, client=self.observer_client, config=config, clock=self.clock,
                                    sink=verification.sink, snapshot_every=cadence.snapshot)
        scraper = MetricsScraper(placement.metrics_url, clock=self.clock, sink=verification.sink,
                                 interval=cadence.scrape)
        segment.task = asyncio.create_task(verification.run([observer.run, scraper.run]),
                                           name=f"harness-verification-{segment.index}")
        self._segment = segment
        log.info("harness_placed", release=label, segment=self.result.releases_placed, at=round(self._now()))

    async def _replace(self, config: StrategyConfig, label: str) -> EmbeddedRelease:
        """The running release stopped, ``config``'s started: in simulated seconds, as processes."""
        if self._segment is not None:
            await self._end_segment(self._segment, f"{label} was placed")
        account = self.sim.accounts[ACCOUNT]
        placement = self.entry_point(
            config=config.model_dump(mode="json"), clock=self.clock, label=label, account=ACCOUNT,
            exchange={"rest_url": self.sim.rest_url, "ws_url": self.sim.ws_url, "sapi_url": self.sim.sapi_url,
                      "api_key": account.api_key, "api_secret": account.api_secret},
            settings=self.options.cadence.bot_settings(self.options.seed),
            trace_configs=[self.in_flight.trace_config()])
        await placement.start()
        return placement

    async def _end_segment(self, segment: _Segment, why: str) -> None:
        if self._segment is segment:
            self._segment = None
        if segment.task is not None:
            segment.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await segment.task
        await segment.placement.stop()
        crash = segment.placement.crash
        self.scoring.ended(segment.index, self._now(), why, None if crash is None else repr(crash))

    async def _inject(self, index: int) -> None:
        fault = self.options.faults[index]
        result = self.scoring.injected(index, self._now())
        if fault.kind == "defect":
            config = with_defects(self.options.strategy, fault.defects)
            await self._place(config, f"{self.options.release} + {fault.name}", defect=index)
        else:
            self.sim.faults.switch_on(fault.name, fault.value, ACCOUNT)
            self._on.append(index)
        log.info("harness_fault_injected", fault=fault.text, at=round(result.injected_at))

    def _turn_off(self, index: int) -> None:
        fault = self.options.faults[index]
        self.sim.faults.switch_off(fault.name, fault.value, ACCOUNT)
        self._on.remove(index)
        self.scoring.knob_off(index)

    async def _roll_back(self) -> None:
        """What the daemon's rollback does for a breach: stop the release, place the healthy one
        (judged afresh); the knobs of the faults just caught go off."""
        reason, self._rollback = self._rollback, None
        for index in [i for i in self._on if self.result.faults[i].caught_by is not None]:
            self._turn_off(index)
        log.info("harness_rollback", reason=reason)
        await self._place(self.options.strategy, self.options.release)

    # ------------------------------------------------------------ verdicts

    def _on_verdicts(self, segment: _Segment, verdicts: list[Verdict]) -> None:
        for verdict in verdicts:
            if self._last_key.get((verdict.policy, verdict.group)) != verdict.key:
                self._last_key[(verdict.policy, verdict.group)] = verdict.key
                self.changes.append(verdict)
            breaches = len(self.result.breaches)
            caught = self.scoring.judge(segment.index, verdict)
            if caught is not None:
                self._rollback = f"{verdict.policy} caught {caught.fault.text}"
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
