"""A verification's verdicts as tests wait on them: the newest per policy, awaitable, no sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from controller.analysis.observation import Heartbeat
from controller.analysis.verdict import Outcome, Verdict


class Verdicts:
    """Pass as ``on_verdicts``; ``until`` waits for a condition on the newest verdict per policy."""

    def __init__(self) -> None:
        self.latest: dict[str, Verdict] = {}
        self.read_at = 0.0  # newest successful read of a source fed through `feeding`
        self.changed = asyncio.Event()

    def __call__(self, verdicts: list[Verdict]) -> None:
        self.latest.update({v.policy: v for v in verdicts})
        self.changed.set()

    def feeding(self, verification):
        """A source's sink that notes each successful read, then feeds ``verification``."""
        def sink(item):
            if isinstance(item, Heartbeat) and item.ok:
                self.read_at = item.ts
            verification.sink(item)
            self.changed.set()
        return sink

    def outcome(self, name: str) -> Outcome | None:
        verdict = self.latest.get(name)
        return verdict.outcome if verdict else None

    async def until(self, predicate: Callable[[dict[str, Verdict]], bool], timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.latest):
                self.changed.clear()
                await self.changed.wait()

    async def until_outcomes(self, expected: dict[str, Outcome], timeout: float = 30.0) -> None:
        await self.until(lambda latest: all(n in latest and latest[n].outcome is o for n, o in expected.items()),
                         timeout)
