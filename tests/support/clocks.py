"""The one clock factory of the tests: a simulated clock, still or running, from a fixed start or from now."""

from __future__ import annotations

from datetime import UTC, datetime

from controller.clock import SimulatedClock


def make_clock(speed: float = 0.0, *, from_now: bool = False) -> SimulatedClock:
    """A clock running ``speed`` times real time (0: it moves only when a test advances it).

    It starts at the clock's fixed epoch, or with ``from_now`` at the wall clock's present: bots
    run as processes derive their own time from the wall clock, so the simulator's must agree.
    """
    return SimulatedClock(datetime.now(tz=UTC) if from_now else None, speed=speed)
