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
failing: recorded, and the release runs on (there is nothing healthier to roll back to).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controller.analysis.policy import Policy
from controller.analysis.verdict import Outcome, Verdict
from controller.clock import SimulatedClock
from controller.config.strategy import StrategyConfig
from controller.errors import CanaryError
from controller.exchange.client import Endpoints, ExchangeClient
from controller.exchange.weights import WeightBudget
from controller.harness import knobs
from controller.harness.faults import Fault
from controller.harness.release import REFERENCE_ENTRY_POINT, EmbeddedRelease, load_entry_point, with_defects
from controller.harness.result import Breach, FaultResult, HarnessResult
from controller.harness.stepping import InFlight, SteppedClient, Stepper
from controller.observe.exchange import ExchangeObserver
from controller.observe.metrics import MetricsScraper
from controller.sim import Simulator
from controller.verification import Verification

log = logging.getLogger(__name__)

ACCOUNT = "canary"
CRASH = "unhandled_exception_after_seconds"  # the one defect whose bot is meant to crash
PLACING_STEP = 0.25  # seconds: a release starts in simulated seconds, as a process does
JUDGED_SOURCES = frozenset({"bot", "exchange"})


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


def not_judged(policy: Policy) -> str | None:
    """Why the harness cannot judge ``policy``, or None: it feeds the exchange and the bot's
    metrics, runs no baseline release and holds no capital cap."""
    if policy.source not in JUDGED_SOURCES:
        return f"the harness has no {policy.source} source"
    names = policy.parsed_condition.names
    if "baseline" in names or policy.aggregate == "mann_whitney":
        return "needs a baseline release running beside it"
    if "capital_cap" in names:
        return "needs a stage capital cap on a sub-account"
    return None


@dataclass(eq=False)
class _Segment:
    """One placement of a release and its verification, until the next placement."""

    index: int
    placement: EmbeddedRelease
    label: str
    started: float
    defect: FaultResult | None = None
    latest: dict[str, Verdict] = field(default_factory=dict)
    task: asyncio.Task | None = None
    closing: bool = False
    failing: set[tuple] = field(default_factory=set)  # (policy, group) in a breach now


class Harness:
    def __init__(self, options: HarnessOptions, *, on_progress: Callable[[Progress], None] | None = None,
                 progress_every: float = 2.0) -> None:
        self.options = options
        self.entry_point = load_entry_point(options.entry_point)
        self.on_progress = on_progress
        self.progress_every = progress_every
        self.judged = [p for p in options.policies if not_judged(p) is None]
        self.by_name = {p.name: p for p in options.policies}
        self.result = HarnessResult(stage=options.stage, release=options.release, duration_s=options.duration,
                                    not_judged={p.name: why for p in options.policies
                                                if (why := not_judged(p)) is not None})
        self.result.faults = [FaultResult(f, f.expected(self.judged)) for f in options.faults]
        self.changes: list[Verdict] = []  # every verdict change of a policy's group, for the record
        self.started_at = 0.0             # the clock's time at the start of the run
        self._last_key: dict[tuple, tuple] = {}  # (policy, group) -> the last change's key
        self._segment: _Segment | None = None
        self._open: list[FaultResult] = []    # injected, and may still be caught
        self._on: list[FaultResult] = []      # sim faults whose knob is on
        self._rollback: str | None = None
        self._wake = asyncio.Event()
        self._clients: list[ExchangeClient] = []
        self.stepper: Stepper | None = None

    # ------------------------------------------------------------ the run, top to bottom

    async def run(self) -> HarnessResult:
        options = self.options
        wall = time.monotonic()
        stepped = options.speed is None
        # The simulated run is the `duration` that ends as it starts: its records sit in the past.
        self.clock = SimulatedClock(time.time() - options.duration, speed=0.0 if stepped else options.speed)
        self.sim = Simulator(clock=self.clock, seed=options.seed, tick_seconds=options.cadence.sim_tick)
        self.in_flight = InFlight()
        self.started_at = self.clock.time()
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
            self._finish()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._segment is not None:
                await self._end_segment(self._segment, "the run ended")
            for client in self._clients:
                await client.close()
            await self.sim.stop()
        self.result.simulated_s = min(self.clock.time(), end) - self.started_at
        self.result.wall_s = time.monotonic() - wall
        if self.on_progress is not None:
            self.on_progress(self._progress(wall))
        return self.result

    async def _schedule(self, end: float) -> None:
        """Place the healthy release, then each fault at its time (and each sim knob off at its
        end), rolling back whenever a breach asks for it, until ``end``."""
        events: list[tuple[float, int, FaultResult]] = []
        for result in self.result.faults:
            events.append((result.fault.at, 1, result))
            if result.fault.span is not None:
                events.append((result.fault.at + result.fault.span, 0, result))
        events.sort(key=lambda e: (e[0], e[1]))
        await self._place(self.options.strategy, self.options.release)
        for at, starts, result in events:
            await self._until(self.started_at + at)
            if starts:
                await self._inject(result)
            elif result in self._on:
                self._turn_off(result)
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

    def _finish(self) -> None:
        segment = self._segment
        latest = segment.latest if segment else {}
        self.result.verdicts = {p.name: latest[p.name].outcome.value if p.name in latest else "none"
                                for p in self.judged}
        for result in self._open:
            if result.must_be_caught and result.caught_by is None and not result.note:
                result.note = "not caught by the end of the run"

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

    async def _place(self, config: StrategyConfig, label: str, defect: FaultResult | None = None) -> None:
        """Stop the running release, start ``config``'s bot, and verify it afresh."""
        with self.stepper.fine(PLACING_STEP) if self.stepper else contextlib.nullcontext():
            placement = await self._replace(config, label)
        cadence = self.options.cadence
        if placement.crash is not None and defect is None:
            raise HarnessError(f"the release under test stopped before it traded: {placement.crash!r}")
        self.result.releases_placed += 1
        segment = _Segment(index=self.result.releases_placed, placement=placement, label=label,
                           started=self.clock.time(), defect=defect)
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
        log.info("harness_placed release=%s segment=%d at=%.0f", label, segment.index,
                 self.clock.time() - self.started_at)

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
        segment.closing = True
        if segment.task is not None:
            segment.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await segment.task
        await segment.placement.stop()
        crash = segment.placement.crash
        if crash is not None and (segment.defect is None or segment.defect.fault.name != CRASH):
            self.result.errors.append(f"the bot of {segment.label} crashed: {crash!r}")
        if self._segment is segment:
            self._segment = None
        for result in [r for r in self._open if r.fault.kind == "defect" and r is segment.defect]:
            self._open.remove(result)
            if result.caught_by is None:
                ended = f"not caught before {why} ({self._hours_now()})"
                result.note = f"{result.note}; {ended}" if result.note else ended

    async def _inject(self, result: FaultResult) -> None:
        fault = result.fault
        result.injected_at = self.clock.time() - self.started_at
        if not result.expected and result.must_be_caught:
            watching = fault.expected(self.options.other_policies)
            result.note = (f"no policy of stage {self.options.stage} watches what {fault.name} moves"
                           + (f" ({', '.join(watching)} do, in other stages)" if watching else ""))
        self._open.append(result)
        if fault.kind == "defect":
            config = with_defects(self.options.strategy, fault.defects)
            await self._place(config, f"{self.options.release} + {fault.name}", defect=result)
        else:
            knobs.turn_on(self.sim.faults, fault, ACCOUNT)
            self._on.append(result)
        log.info("harness_fault_injected fault=%s at=%.0f", fault.text, result.injected_at)

    def _turn_off(self, result: FaultResult) -> None:
        knobs.turn_off(self.sim.faults, result.fault, ACCOUNT)
        self._on.remove(result)
        if not result.must_be_caught:
            self._open.remove(result)

    async def _roll_back(self) -> None:
        """What the daemon's rollback does for a breach: stop the release, place the healthy one
        (judged afresh); the knobs of the faults just caught go off."""
        reason, self._rollback = self._rollback, None
        for result in [r for r in self._on if r.caught_by is not None]:
            self._turn_off(result)
        log.info("harness_rollback reason=%s", reason)
        await self._place(self.options.strategy, self.options.release)

    # ------------------------------------------------------------ verdicts

    def _on_verdicts(self, segment: _Segment, verdicts: list[Verdict]) -> None:
        for verdict in verdicts:
            if self._last_key.get((verdict.policy, verdict.group)) != verdict.key:
                self._last_key[(verdict.policy, verdict.group)] = verdict.key
                self.changes.append(verdict)
            segment.latest[verdict.policy] = verdict
            if not segment.closing:
                self._judge(segment, verdict)

    def _judge(self, segment: _Segment, verdict: Verdict) -> None:
        """A verdict that catches an injected fault ends the faulty release's run: the healthy one
        is placed again (a rollback). A breach nothing explains is the release under test failing:
        it is recorded once per episode (a policy's group failing until it passes again), and the
        release runs on, since there is nothing healthier to roll back to."""
        key = (verdict.policy, verdict.group)
        breach = verdict.outcome is Outcome.FAIL or (verdict.action == "rollback" and verdict.outcome is Outcome.NODATA)
        new_episode = breach and key not in segment.failing
        if breach:
            segment.failing.add(key)
        else:
            segment.failing.discard(key)
        at = verdict.at - self.started_at
        result = self._caught(segment, verdict)
        if result is not None:
            result.caught_by, result.caught_outcome = verdict.policy, verdict.outcome.value
            result.detect_s = max(0.0, at - (result.injected_at or 0.0))
            self._open.remove(result)
            if breach:
                self.result.breaches.append(Breach(at, verdict, result.fault))
            segment.closing = True
            self._rollback = f"{verdict.policy} caught {result.fault.text}"
            self._wake.set()
        elif new_episode:
            self.result.breaches.append(Breach(at, verdict, None))
            for on in self._on:
                on.breaches.append(verdict.policy)
            log.warning("harness_unexpected_breach policy=%s group=%s at=%.0f reason=%s", verdict.policy,
                        dict(verdict.group), at, verdict.reason)

    def _caught(self, segment: _Segment, verdict: Verdict) -> FaultResult | None:
        """The earliest open fault this verdict catches: a failure of a policy it expects, or
        missing data (with an action) once the data had time to come."""
        if verdict.outcome is Outcome.FAIL:
            pass
        elif verdict.outcome is Outcome.NODATA and verdict.action in ("hold", "rollback"):
            policy = self.by_name[verdict.policy]
            if verdict.at - segment.started < policy.on_nodata.stale_after:
                return None  # a release just placed: its sources have not reported yet
        else:
            return None
        for result in self._open:
            if verdict.policy not in result.expected:
                continue
            if result.fault.kind == "defect" and result is not segment.defect:
                continue
            return result
        return None

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

    def _hours_now(self) -> str:
        return f"{(self.clock.time() - self.started_at) / 3600:.2f} h"
