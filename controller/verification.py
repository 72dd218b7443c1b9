"""One release under verification: its sources feed one evaluator, verdicts go out as they change.

The imperative shell around the pure `Evaluator`: every source (exchange, bot metrics, logs,
process, audit) pushes observations and heartbeats into `sink`; instant policies are judged on
the observation that touches them, every policy on a steady tick. Verdicts are exported as
metrics and handed to ``on_verdicts`` (the rollout engine, a verdict log, a test).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from controller.analysis.bindings import release_bindings
from controller.analysis.evaluator import Evaluator
from controller.analysis.observation import Heartbeat, Observation
from controller.analysis.policy import Policy
from controller.analysis.verdict import Verdict
from controller.clock import Clock
from controller.config.strategy import StrategyConfig
from controller.logs import get_logger
from controller.metrics import ControllerMetrics

log = get_logger(__name__)

VerdictHandler = Callable[[list[Verdict]], None]


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
        self.last_read: dict[str, float] = {}  # per source: the newest successful read
        self.last_observed: float | None = None  # the newest observation's event time: detection latency

    def sink(self, item: Observation | Heartbeat) -> None:
        """What every source calls: synchronous, so an exchange event is judged without a hop."""
        if isinstance(item, Heartbeat) and item.ok:
            self.last_read[item.source] = max(item.ts, self.last_read.get(item.source, item.ts))
        elif isinstance(item, Observation):
            self.last_observed = item.ts
            if item.metric == "stream_connected" and self.account is not None:
                self.metrics.set_stream_connected(self.account, bool(item.value))
        verdicts = self.evaluator.feed(item, now=self.clock.time())
        if verdicts:
            self._deliver(verdicts)

    def evaluate(self) -> list[Verdict]:
        now = self.clock.time()
        for source, ts in self.last_read.items():
            self.metrics.observation_age.labels(source).set(max(0.0, now - ts))
        verdicts = self.evaluator.evaluate(now)
        self._deliver(verdicts)
        return verdicts

    def _deliver(self, verdicts: list[Verdict]) -> None:
        self.metrics.record_verdicts(verdicts)
        try:
            self.on_verdicts(verdicts)
        except Exception:  # a consumer's bug must not stop verification
            log.exception("verdict_handler_failed")

    async def run(self, sources: Iterable[Callable[[], Awaitable[None]]]) -> None:
        """Run every source's ``run`` and the evaluation tick until cancelled."""
        async with asyncio.TaskGroup() as tasks:
            for index, source in enumerate(sources):
                tasks.create_task(source(), name=f"verification-source-{index}")
            tasks.create_task(self._ticking(), name="verification-tick")

    async def _ticking(self) -> None:
        while True:
            self.evaluate()
            await self.clock.sleep(self.tick)
