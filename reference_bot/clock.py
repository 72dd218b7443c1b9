"""The bot's time: the clock it trades on, and the stopwatch it times its own work with.

Signed requests carry the clock's time, and the exchange checks them against its own clock,
which on the simulator may run faster than real time (or be stepped by a harness). So the bot
runs on a `Clock`: real, or `ScaledClock` (from a start, ``speed`` times real time), or one
the embedding program passes in (anything with ``time()`` and ``sleep()``).

How long the bot's own work takes (a signal to its order, an order's wait in the queue) is a
different question: on an accelerated clock, a few real milliseconds of work would read as
``speed`` times as many, and a healthy release would breach its latency policies. `Stopwatch`
measures wall time on the monotonic clock, plus the time a stepped clock was moved on while
the bot waited (the stepper moves it only while the exchange holds a request: its latency).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the epoch."""

    async def sleep(self, seconds: float) -> None:
        """Return once ``seconds`` of this clock's time have passed."""


class RealClock:
    speed = 1.0

    def time(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class ScaledClock:
    """``start`` plus real time elapsed since, times ``speed``: the simulator's accelerated time,
    when both were started at the same moment with the same speed."""

    def __init__(self, start: float, speed: float) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = float(speed)
        self._start = start
        self._started = time.monotonic()

    def time(self) -> float:
        return self._start + (time.monotonic() - self._started) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


def speed_of(clock: Clock) -> float:
    """How many of the clock's seconds pass per real second (0: it moves only when stepped)."""
    return float(getattr(clock, "speed", 1.0))


@dataclass(frozen=True, slots=True)
class Mark:
    """A moment, on the wall's monotonic clock and on the bot's clock."""

    wall: float
    clock: float


class Stopwatch:
    """Times the bot's own work (see the module's docstring), and holds deliberate delays."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def start(self) -> Mark:
        return Mark(time.perf_counter(), self.clock.time())

    def elapsed(self, started: Mark) -> float:
        wall = time.perf_counter() - started.wall
        moved = self.clock.time() - started.clock
        # A running clock moves `speed` seconds per wall second; anything beyond is a step.
        return wall + max(0.0, moved - wall * speed_of(self.clock))

    async def delay(self, seconds: float) -> None:
        """Wait so that `elapsed` grows by ``seconds``: that many wall seconds on a running clock
        (``speed`` times as many of its own), or a step of that many on a stepped one."""
        speed = speed_of(self.clock)
        await self.clock.sleep(seconds * speed if speed > 0 else seconds)
