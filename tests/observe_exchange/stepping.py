"""Moving the shared `SimulatedClock` by whole steps while bots and observers sign requests on it.

A signed request carries the Clock's time when it is stamped; the simulator refuses it (-1021)
if the Clock has moved on by more than recvWindow (5 s) when it arrives, and
`ExchangeClient.sync_time` measures a false skew if the Clock jumps while it asks for the server
time. `Steps.advance` therefore jumps only at a moment when no `ExchangeClient` request is
between its stamp and its answer: a step of 15 s or 5 min is then, for every client, as if it
had been idle that long, and policies with windows of hours run on the real exchange layer in
seconds of wall time.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterable

import pytest

from controller.analysis.verdict import Outcome, Verdict
from controller.clock import SimulatedClock
from controller.exchange.client import ExchangeClient
from controller.verification import Verification
from tests.verdicts import Verdicts


class Steps:
    """Counts the requests in flight of every ExchangeClient (through its one send path) and
    advances ``clock`` only when there are none."""

    def __init__(self, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clock = clock
        self.in_flight = 0
        self.taken = 0
        self._idle = asyncio.Event()
        self._idle.set()
        send = ExchangeClient._send
        steps = self

        async def counted_send(client, *args, **kwargs):
            steps.in_flight += 1
            steps._idle.clear()
            try:
                return await send(client, *args, **kwargs)
            finally:
                steps.in_flight -= 1
                if not steps.in_flight:
                    steps._idle.set()

        monkeypatch.setattr(ExchangeClient, "_send", counted_send)

    async def advance(self, seconds: float) -> float:
        """Move the clock ``seconds`` on at the next moment no request is out; returns the new time."""
        while self.in_flight:
            await self._idle.wait()
        self.clock.advance(seconds)  # no await between the check and the jump
        self.taken += 1
        return self.clock.time()

    async def until(self, judged: Verdicts, done: Callable[[dict[str, Verdict]], bool], *, step: float,
                    bound: float) -> None:
        """Until ``done(latest)``: each round a step of ``step`` seconds at a quiet moment, then
        the next change it brings (a read, a verdict). With ``step`` at least the verification's
        tick, every step brings one (the tick's verdict). Fails after ``bound`` seconds of
        simulated time."""
        started = self.clock.time()
        while not done(judged.latest):
            assert self.clock.time() - started < bound, f"not done after {bound:g} s: {judged.latest}"
            judged.changed.clear()
            await self.advance(step)
            await judged.changed.wait()

    async def read_after(self, judged: Verdicts, seconds: float, *, reads: Iterable[tuple[Verification, str]] = (),
                         nudge: float = 0.1) -> float:
        """A step of ``seconds``, then nudges of ``nudge`` until the sources have read after it:
        each (verification, source) of ``reads``, as the verification's `last_read` has it; with
        none, any source fed through ``judged.feeding``. Returns the time of the newest read."""
        target = await self.advance(seconds)
        reads = tuple(reads)
        if not reads:
            await self.until(judged, lambda _: judged.read_at >= target, step=nudge, bound=60)
            return judged.read_at
        await self.until(judged, lambda _: all(v.last_read.get(s, -math.inf) >= target for v, s in reads),
                         step=nudge, bound=60)
        return max(v.last_read[s] for v, s in reads)

    async def outlast_for(self, judged: Verdicts, names: Iterable[str], seconds: float, *, bound: float,
                          reads: Iterable[tuple[Verification, str]]) -> None:
        """A breach of each of ``names`` has started: move on in steps of ``seconds``, each read
        afresh (``reads``, as in `read_after`) and judged after that read, until every one of
        them fails. Fails the test after ``bound`` seconds of simulated time."""
        names, reads = tuple(names), tuple(reads)
        started = self.clock.time()
        while any(judged.outcome(n) is not Outcome.FAIL for n in names):
            assert self.clock.time() - started < bound, {n: judged.latest.get(n) for n in names}
            read = await self.read_after(judged, seconds, reads=reads)
            await self.until(judged, lambda latest: all(latest[n].at >= read for n in names), step=0.1, bound=60)
