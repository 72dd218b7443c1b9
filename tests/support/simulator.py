"""The one simulator factory of the tests, and what tests ask a simulator about its traffic."""

from __future__ import annotations

from typing import Any

from controller.clock import Clock
from controller.sim import Simulator
from tests.support.clocks import make_clock

DEFAULTS: dict[str, Any] = {"seed": 7, "volatility": 0}
"""A simulator whose prices move only when a test says so."""

PROCESS_SPEED = 5.0
"""How fast the simulator runs for bots started as processes (told through --speed or
CANARY_SIM_SPEED): the bot keeps its default one-second cadence within the request-weight
limits while a test lasts seconds."""


def make_sim(*, clock: Clock, **overrides: Any) -> Simulator:
    """A simulator on ``clock`` with ``overrides`` of the defaults; ``async with`` starts it on an
    ephemeral port and stops it."""
    return Simulator(clock=clock, **{**DEFAULTS, **overrides})


def sim_for_processes() -> Simulator:
    """A simulator for bots run as processes: running `PROCESS_SPEED` times real time from now, as
    the bot's own clock does, with prices that move."""
    return make_sim(clock=make_clock(PROCESS_SPEED, from_now=True), seed=9, volatility=1.0)


def requests_to(sim: Simulator, method: str, path: str) -> int:
    """How many requests the simulator has answered on ``method path``."""
    return sum(1 for r in sim.requests if r.method == method and r.path == path)
