"""A sink for the controller's user-data stream that tests can await on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from controller.exchange.events import ExchangeEvent


class EventLog:
    """A sink for the stream that tests can await on."""

    def __init__(self) -> None:
        self.events: list[ExchangeEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: ExchangeEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]

    async def wait_for(self, predicate: Callable[[list[ExchangeEvent]], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.events):
                self._changed.clear()
                await self._changed.wait()
