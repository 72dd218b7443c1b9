"""The one loop every polling source runs: a read every ``interval`` seconds of the Clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from controller.clock import Clock


async def poll(clock: Clock, interval: float, once: Callable[[], Awaitable[object]]) -> None:
    """Call ``once`` on a fixed cadence until cancelled: the next read starts ``interval`` after
    the previous one started, so a slow read does not stretch the cadence. ``once`` reports its
    own failures (as heartbeats); it must not raise."""
    while True:
        started = clock.time()
        await once()
        await clock.sleep(started + interval - clock.time())
