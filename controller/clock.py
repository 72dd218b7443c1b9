"""The one source of time: real, or simulated and accelerated, and the one backoff slept on it.

Everything that waits or timestamps takes a `Clock` as an argument; nothing reads the wall
clock directly. `SimulatedClock` runs `speed` times faster than real time (a 48 h stage in
minutes) and can also be moved by hand with `advance()`, which is what deterministic tests use
(`speed=0`: time moves only when the test says so).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from datetime import UTC, datetime
from typing import Any, Protocol

from tenacity import AsyncRetrying, RetryCallState, wait_exponential, wait_random_exponential


class Clock(Protocol):
    def time(self) -> float:
        """Seconds since the Unix epoch, on this clock."""

    def now(self) -> datetime:
        """The current time on this clock, timezone-aware UTC."""

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of this clock's time."""


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


class RealClock:
    """Wall-clock time; sleeps are real."""

    def time(self) -> float:
        return time.time()

    def now(self) -> datetime:
        return datetime.now(tz=UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class SimulatedClock:
    """Simulated time: ``start + advanced + real_elapsed * speed``.

    Sleepers wait in a heap keyed by their simulated deadline; they wake when `advance()`
    moves time past it or, with ``speed > 0``, when enough real time has passed. Time never
    goes backwards.
    """

    def __init__(self, start: datetime | float | None = None, *, speed: float = 0.0) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0 (0: time moves only through advance())")
        if start is None:
            start = datetime(2026, 1, 1, tzinfo=UTC)
        self._start = start.timestamp() if isinstance(start, datetime) else float(start)
        self._speed = float(speed)
        self._advanced = 0.0
        self._real0 = time.monotonic()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._ids = itertools.count()
        self._timer: asyncio.TimerHandle | None = None

    @property
    def speed(self) -> float:
        return self._speed

    def time(self) -> float:
        return self._start + self._advanced + (time.monotonic() - self._real0) * self._speed

    def now(self) -> datetime:
        return to_datetime(self.time())

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (self.time() + seconds, next(self._ids), fut))
        self._arm(loop)
        await fut

    def advance(self, seconds: float) -> None:
        """Move simulated time forward by ``seconds`` and wake every sleeper now due."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        self._advanced += seconds
        self._wake()

    def pending_sleepers(self) -> int:
        return sum(1 for _, _, fut in self._sleepers if not fut.done())

    def next_deadline(self) -> float | None:
        """The earliest simulated time a sleeper waits for, or None."""
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)
        return self._sleepers[0][0] if self._sleepers else None

    def _wake(self) -> None:
        now = self.time()
        while self._sleepers and self._sleepers[0][0] <= now:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)
        if self._sleepers:
            try:
                self._arm(asyncio.get_running_loop())
            except RuntimeError:  # advance() called outside a loop: the next sleep() re-arms
                pass

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._speed == 0:
            return
        deadline = self.next_deadline()
        if deadline is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, (deadline - self.time()) / self._speed)
        self._timer = loop.call_later(delay, self._wake)


class Backoff:
    """Exponential backoff slept on a Clock: the one every retrying loop uses, so that a simulated
    clock moves through it and a test needs no sleeps.

    The waits are tenacity's: ``initial``, doubling up to ``maximum``; with ``jitter``, each wait is
    drawn from the upper half of that ("equal jitter"), so clients that failed together do not
    come back together. A call retried a few times takes `retrying`; a loop that runs forever (a
    connection, an observer) counts its failures in a row with `next` or `sleep`, and `reset`s
    after a success.
    """

    def __init__(self, clock: Clock, *, initial: float, maximum: float, jitter: bool = False) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("a backoff starts at a positive number of seconds and its maximum is no less")
        self.clock = clock
        if jitter:
            half = {"multiplier": initial / 2, "max": maximum / 2}
            self.wait = wait_exponential(**half) + wait_random_exponential(**half)
        else:
            self.wait = wait_exponential(multiplier=initial, max=maximum)
        self.failures = 0

    def retrying(self, **options: Any) -> AsyncRetrying:
        """tenacity's AsyncRetrying with these waits, slept on the Clock; ``options`` say what to retry."""
        return AsyncRetrying(wait=self.wait, sleep=self.clock.sleep, **options)

    def next(self) -> float:
        """One more failure in a row: how long to wait before the next attempt."""
        self.failures += 1
        attempt = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # the waits read only the count
        attempt.attempt_number = self.failures
        return self.wait(attempt)

    async def sleep(self, at_least: float = 0.0) -> float:
        """Wait after one more failure in a row (at least ``at_least`` seconds); returns the wait."""
        delay = max(at_least, self.next())
        await self.clock.sleep(delay)
        return delay

    def reset(self) -> None:
        """A success: the next failure waits ``initial`` again."""
        self.failures = 0
