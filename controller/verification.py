"""One release under verification: its sources feed one evaluator, verdicts go out as they change.

The imperative shell around the pure `Evaluator`: every source (exchange, bot metrics, logs,
process, audit) pushes observations and heartbeats into `sink`; instant policies are judged on
the observation that touches them, every policy on a steady tick. Verdicts are exported as
metrics and handed to ``on_verdicts`` (the rollout engine, a verdict log, a test). Samples the
evaluator refused (NaN, infinities) are counted on each tick, and a policy over its series cap is
logged once. What the bot reports is also checked against the exchange's record (`Witness`),
and the comparison is fed to the evaluator as observations like any other.

Every source runs supervised: one that raises or ends is restarted after an exponential backoff
on the Clock, the others go on, and until it reads again its policies are ``nodata`` (a failed
heartbeat), never their last pass. ``canary_source_up`` and ``canary_source_restarts_total`` say
so. The evaluation tick is not supervised here: should it fail, the verification ends and its
runner, whose gate stays shut while no verification runs, starts it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from controller.analysis.bindings import release_bindings
from controller.analysis.evaluator import MAX_SERIES_PER_POLICY, Evaluator
from controller.analysis.observation import Batch, Heartbeat, Observation
from controller.analysis.policy import Policy
from controller.analysis.verdict import Verdict
from controller.analysis.witness import Witness
from controller.clock import Backoff, Clock
from controller.config.strategy import StrategyConfig
from controller.logs import get_logger
from controller.metrics import ControllerMetrics

log = get_logger(__name__)

VerdictHandler = Callable[[list[Verdict]], None]
SourceRun = Callable[[], Awaitable[None]]
SERIES_CAPPED = f"more than {MAX_SERIES_PER_POLICY} series"
"""How the evaluator's reason starts for a policy over its series cap."""
RESTART_BACKOFF = (1.0, 60.0)
"""Clock seconds before a failed source's first restart, doubling up to the second figure."""


class Verification:
    def __init__(self, *, policies: Iterable[Policy], config: StrategyConfig, clock: Clock,
                 on_verdicts: VerdictHandler, capital_cap: float | None = None,
                 baseline: Verification | None = None, metrics: ControllerMetrics | None = None,
                 tick: float = 1.0, account: str | None = None) -> None:
        self.clock = clock
        self.account = account  # labels the stream gauge: the account whose exchange view this is
        self.tick = tick
        self.on_verdicts = on_verdicts
        self.metrics = metrics or ControllerMetrics()
        baseline_evaluator = baseline.evaluator if baseline else None
        self.evaluator = Evaluator(policies, baseline=baseline_evaluator, bindings=release_bindings(
            config, capital_cap=capital_cap, baseline=baseline_evaluator))
        self.witness = Witness(config)
        self.last_read: dict[str, float] = {}  # per source: the newest successful read
        self.last_observed: float | None = None  # the newest observation's event time: detection latency
        self._capped: set[str] = set()  # policies over their series cap, logged once

    def sink(self, item: Observation | Heartbeat | Batch) -> None:
        """What every source calls: synchronous, so an exchange event is judged without a hop; a
        scrape's observations come in one `Batch`, judged once they are all in."""
        observations: tuple[Observation, ...] = ()
        if isinstance(item, Heartbeat):
            self.metrics.set_source_up(self.account, item.source, item.ok)
            if item.ok:
                self.last_read[item.source] = max(item.ts, self.last_read.get(item.source, item.ts))
            elif item.restarting:
                self.metrics.source_restarted(self.account, item.source)
        else:
            observations = item.observations if isinstance(item, Batch) else (item,)
            for observation in observations:
                self.last_observed = observation.ts
                if observation.metric == "stream_connected" and self.account is not None:
                    self.metrics.set_stream_connected(self.account, bool(observation.value))
        now = self.clock.time()
        verdicts = self.evaluator.feed(item, now=now)
        derived = [d for observation in observations for d in self.witness.observe(observation)]
        if derived:
            verdicts = [*verdicts, *self.evaluator.observe_many(derived, now=now)]
        if verdicts:
            self._deliver(verdicts)

    def evaluate(self) -> list[Verdict]:
        now = self.clock.time()
        for source, ts in self.last_read.items():
            self.metrics.observation_age.labels(source).set(max(0.0, now - ts))
        verdicts = self.evaluator.evaluate(now)
        self.metrics.observations_were_rejected(self.evaluator.take_rejections())
        for verdict in verdicts:
            if verdict.reason.startswith(SERIES_CAPPED) and verdict.policy not in self._capped:
                self._capped.add(verdict.policy)  # said once per policy: the flood goes on for a while
                log.warning("policy_series_capped", account=self.account, policy=verdict.policy, reason=verdict.reason)
        self._deliver(verdicts)
        return verdicts

    def _deliver(self, verdicts: list[Verdict]) -> None:
        self.metrics.record_verdicts(verdicts)
        try:
            self.on_verdicts(verdicts)
        except Exception:  # a consumer's bug must not stop verification
            log.exception("verdict_handler_failed")

    async def run(self, sources: Iterable[SourceRun]) -> None:
        """Run every source's ``run``, each supervised, and the evaluation tick until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            for index, source in enumerate(sources):
                name = source_name(source, index)
                tasks.create_task(self._supervised(name, source), name=f"verification-source-{name}")
            tasks.create_task(self._ticking(), name="verification-tick")

    async def _supervised(self, name: str, source: SourceRun) -> None:
        """Run ``source`` until cancelled: whatever ends it is a failed heartbeat, then a restart
        after a backoff that starts afresh once a run has lasted as long as the longest wait."""
        backoff = Backoff(self.clock, initial=RESTART_BACKOFF[0], maximum=RESTART_BACKOFF[1])
        while True:
            started = self.clock.time()
            try:
                await source()
                reason = "ended"
            except Exception as exc:  # noqa: BLE001 - a source's bug must not end the others
                log.exception("verification_source_crashed", account=self.account, source=name)
                reason = f"{type(exc).__name__}: {exc}"
            if self.clock.time() - started >= RESTART_BACKOFF[1]:
                backoff.reset()
            delay = backoff.next()
            self.sink(Heartbeat(name, self.clock.time(), ok=False, error=f"{reason}; restarting in {delay:g} s",
                                restarting=True))
            await self.clock.sleep(delay)

    async def _ticking(self) -> None:
        while True:
            self.evaluate()
            await self.clock.sleep(self.tick)


def source_name(source: SourceRun, index: int) -> str:
    """The name a source's observations carry (a `Source`'s bound ``run`` has it), else its position."""
    owner = getattr(source, "__self__", source)
    return str(getattr(owner, "source", None) or getattr(source, "__name__", None) or f"source-{index}")
