"""An ExchangeObserver run by the tests against a simulator: its record, awaitable, and the
running observer whose failure fails the wait.

Snapshots are taken every 0.2 s instead of 30 s; the simulator's request-weight limits are
raised to match (see `tests.support.bot.IN_PROCESS_SIM`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import pytest

from controller.analysis.observation import Heartbeat, Observation
from controller.config.strategy import StrategyConfig
from controller.exchange.client import ExchangeClient, RetryPolicy
from controller.observe.exchange import ExchangeObserver

FAST_RETRY = RetryPolicy(attempts=2, initial_backoff=0.01, max_backoff=0.05, request_timeout=5)
SNAPSHOT_EVERY = 0.2


class Recorder:
    """The observer's sink: everything it emitted, and a way to await what it will emit."""

    def __init__(self) -> None:
        self.items: list[Observation | Heartbeat] = []
        self._changed = asyncio.Event()

    def __call__(self, item: Observation | Heartbeat) -> None:
        self.items.append(item)
        self._changed.set()

    def observations(self, metric: str, **labels: str) -> list[Observation]:
        return [o for o in self.items if isinstance(o, Observation) and o.metric == metric
                and all(o.label(k) == v for k, v in labels.items())]

    def values(self, metric: str, **labels: str) -> list[float]:
        return [o.value for o in self.observations(metric, **labels)]

    def last(self, metric: str, **labels: str) -> float | None:
        found = self.values(metric, **labels)
        return found[-1] if found else None

    def heartbeats(self, *, ok: bool | None = None) -> list[Heartbeat]:
        return [h for h in self.items if isinstance(h, Heartbeat) and (ok is None or h.ok == ok)]

    def mark(self) -> int:
        """A position in the record: `since(mark)` is what came after it."""
        return len(self.items)

    def since(self, mark: int) -> Recorder:
        later = Recorder()
        later.items = self.items[mark:]
        return later

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


class Observing:
    """A running observer: its record, and its `run()` task (a failure there fails the wait)."""

    def __init__(self, observer: ExchangeObserver, record: Recorder, task: asyncio.Task) -> None:
        self.observer = observer
        self.record = record
        self.task = task

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        waiting = asyncio.create_task(self.record.wait_for(predicate, timeout), name="test-wait-for-record")
        done, _ = await asyncio.wait({waiting, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if waiting not in done:
            waiting.cancel()
            self.task.result()
            pytest.fail("the observer stopped before the condition held")
        waiting.result()


@asynccontextmanager
async def observing(client: ExchangeClient, config: StrategyConfig, *, clock, master: ExchangeClient | None = None,
                    capital: Decimal | None = None, connected: bool = True, **options: Any):
    """Run an ExchangeObserver on ``client``; with ``connected``, wait for its stream first."""
    record = Recorder()
    observer = ExchangeObserver(account=client.account, client=client, config=config, clock=clock, sink=record,
                                master=master, snapshot_every=options.pop("snapshot_every", SNAPSHOT_EVERY),
                                capital=capital, **options)
    task = asyncio.create_task(observer.run(), name="test-exchange-observer")
    run = Observing(observer, record, task)
    try:
        if connected:
            await run.until(lambda: 1.0 in record.values("stream_connected"))
        yield run
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
