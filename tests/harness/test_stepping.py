"""The stepped clock: it jumps from one sleeper's deadline to the next, never while a request is
between its stamp and its answer, except to answer requests the simulator holds on the clock."""

from __future__ import annotations

import asyncio

import pytest

from controller.clock import SimulatedClock
from controller.harness.stepping import FINE_SPEED, InFlight, Stepper

START = 1_000_000.0


async def sleeper(clock: SimulatedClock, seconds: float, woke: list[float]) -> None:
    await clock.sleep(seconds)
    woke.append(clock.time() - START)


async def turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_the_clock_jumps_to_each_sleepers_deadline_in_turn_and_stops_at_the_end():
    clock = SimulatedClock(START)
    woke: list[float] = []
    tasks = [asyncio.create_task(sleeper(clock, s, woke)) for s in (30, 5, 12)]
    stepper = Stepper(clock, InFlight())
    await asyncio.wait_for(stepper.run(until=START + 20), timeout=5)
    assert woke == [5, 12] and clock.time() == START + 20
    assert stepper.taken == 3  # 5, 12, then the end
    for task in tasks:
        task.cancel()


async def test_the_clock_stands_still_while_a_request_is_out_and_moves_once_it_is_answered():
    clock, in_flight = SimulatedClock(START), InFlight()
    woke: list[float] = []
    asyncio.create_task(sleeper(clock, 5, woke))
    request = in_flight.request()
    request.__enter__()
    running = asyncio.create_task(Stepper(clock, in_flight).run(until=START + 10))
    await turns()
    assert clock.time() == START and woke == []
    request.__exit__(None, None, None)
    await asyncio.wait_for(running, timeout=5)
    assert woke == [5] and clock.time() == START + 10


async def test_a_request_the_simulator_holds_on_the_clock_is_answered_by_a_jump_to_its_deadline():
    clock, in_flight = SimulatedClock(START), InFlight()
    held = {"count": 0}

    async def latency(seconds: float) -> float:  # as the simulator serves a request under injected latency
        with in_flight.request():
            await turns(3)  # on its way to the server
            held["count"] += 1
            try:
                await clock.sleep(seconds)
            finally:
                held["count"] -= 1
            return clock.time() - START

    answered = asyncio.create_task(latency(0.2))
    stepper = Stepper(clock, in_flight, held=lambda: held["count"])
    await asyncio.wait_for(stepper.run(until=START + 1), timeout=5)
    assert answered.result() == pytest.approx(0.2)  # answered at its deadline, not at the end


async def test_a_fine_stepper_jumps_at_most_its_step_then_takes_whole_jumps_again():
    clock = SimulatedClock(START)
    woke: list[float] = []
    asyncio.create_task(sleeper(clock, 2, woke))
    stepper = Stepper(clock, InFlight())
    with stepper.fine(0.5):
        await asyncio.wait_for(stepper.run(until=START + 1), timeout=5)
    assert stepper.taken == 2 and clock.time() == START + 1
    await asyncio.wait_for(stepper.run(until=START + 10), timeout=5)
    assert woke == [2] and stepper.taken == 4


async def test_a_wait_on_real_time_while_stepping_finely_costs_what_it_would_at_the_fine_speed():
    # A bot stopping with python-binance's own socket exit: it polls every 0.1 s of wall time until
    # its read loop ends. Nothing is in flight meanwhile; unpaced, the clock raced minutes on in 0.1 s.
    clock, loop = SimulatedClock(START), asyncio.get_running_loop()
    stepper = Stepper(clock, InFlight())
    stepping = asyncio.create_task(stepper.run(until=START + 3600))
    began = loop.time()
    with stepper.fine(0.25):
        await asyncio.sleep(0.1)
        waited, elapsed = clock.time() - START, loop.time() - began
    stepping.cancel()
    assert 0 < waited <= elapsed * FINE_SPEED + 0.25


async def test_a_fixed_step_waits_for_a_quiet_moment():
    clock, in_flight = SimulatedClock(START), InFlight()
    request = in_flight.request()
    request.__enter__()
    stepping = asyncio.create_task(Stepper(clock, in_flight).advance(15))
    await turns()
    assert not stepping.done() and clock.time() == START
    request.__exit__(None, None, None)
    assert await asyncio.wait_for(stepping, timeout=5) == START + 15
