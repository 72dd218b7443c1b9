"""The stepped clock of `controller.harness.stepping` for tests that wait on verdicts.

`Steps` is the harness's `Stepper` over every `ExchangeClient` of a test (their one send path is
patched to count in flight), plus the waits these tests need: step until a verdict holds, read
a source afresh after a step, outlast a policy's ``for``. Policies with windows of hours run on
the real exchange layer in seconds of wall time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import pytest

from controller.analysis.verdict import Outcome, Verdict
from controller.clock import SimulatedClock
from controller.exchange.client import ExchangeClient
from controller.harness.stepping import InFlight, Stepper
from controller.verification import Verification
from tests.support.verdicts import Verdicts


class Steps(Stepper):
    """Counts the requests in flight of every ExchangeClient and advances ``clock`` only at
    quiet moments."""

    def __init__(self, clock: SimulatedClock, monkeypatch: pytest.MonkeyPatch) -> None:
        in_flight = InFlight()
        super().__init__(clock, in_flight)
        send = ExchangeClient._send

        async def counted_send(client, *args, **kwargs):
            with in_flight.request():
                return await send(client, *args, **kwargs)

        monkeypatch.setattr(ExchangeClient, "_send", counted_send)

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
