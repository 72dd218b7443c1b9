"""What the adapter tests share: a sink that records what a source emits and can be awaited on,
and real HTTP servers on ephemeral ports."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiohttp import web

from controller.analysis.observation import Batch, Heartbeat, Observation
from tests.support.simulator import sim_for_processes


class Recorder:
    """A `Sink` that keeps everything it is given; `until` waits on arrivals, never on time."""

    def __init__(self) -> None:
        self.items: list[Observation | Heartbeat] = []  # a batch's observations one by one
        self.batches: list[Batch] = []
        self._arrived = asyncio.Event()

    def __call__(self, item: Observation | Heartbeat | Batch) -> None:
        if isinstance(item, Batch):
            self.batches.append(item)
            self.items.extend(item.observations)
        else:
            self.items.append(item)
        self._arrived.set()

    def observations(self, metric: str | None = None) -> list[Observation]:
        return [i for i in self.items if isinstance(i, Observation) and metric in (None, i.metric)]

    @property
    def heartbeats(self) -> list[Heartbeat]:
        return [i for i in self.items if isinstance(i, Heartbeat)]

    def clear(self) -> None:
        self.items.clear()
        self.batches.clear()

    async def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._arrived.clear()
                await self._arrived.wait()

    async def heartbeat(self, count: int = 1, timeout: float = 10.0) -> Heartbeat:
        """Wait for the ``count``-th heartbeat since the start (or the last `clear`); return it."""
        await self.until(lambda: len(self.heartbeats) >= count, timeout)
        return self.heartbeats[count - 1]


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def serve():
    """``await serve(app)`` listens on 127.0.0.1 (a free port) and returns the base URL."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()


@pytest.fixture
async def sim():
    """A simulator for bots run as processes."""
    async with sim_for_processes() as simulator:
        yield simulator
