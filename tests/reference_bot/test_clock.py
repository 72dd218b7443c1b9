"""The bot's stopwatch: its own work in wall time however fast the clock runs, a stepped
clock's jumps counted, and deliberate delays as long as they say."""

from __future__ import annotations

import asyncio
import time

from controller.clock import SimulatedClock
from reference_bot.clock import ScaledClock, Stopwatch


async def test_work_on_a_clock_a_hundred_times_faster_reads_in_wall_time():
    stopwatch = Stopwatch(ScaledClock(time.time(), speed=100))
    started = stopwatch.start()
    await asyncio.sleep(0.05)
    assert 0.04 < stopwatch.elapsed(started) < 0.5  # not the 5 s the clock moved


async def test_a_stepped_clocks_jump_while_the_bot_waits_counts_as_elapsed():
    clock = SimulatedClock(1_000_000.0)  # speed 0: moves only when stepped
    stopwatch = Stopwatch(clock)
    started = stopwatch.start()
    clock.advance(0.9)  # the exchange held a request 0.9 s on its clock
    assert 0.9 <= stopwatch.elapsed(started) < 1.0


async def test_a_deliberate_delay_lasts_its_wall_seconds_on_a_running_clock():
    clock = ScaledClock(time.time(), speed=20)
    stopwatch = Stopwatch(clock)
    started, moved_from = stopwatch.start(), clock.time()
    await stopwatch.delay(0.1)
    assert 0.1 <= stopwatch.elapsed(started) < 0.3
    assert clock.time() - moved_from >= 2.0  # twenty times as much of the clock's time


async def test_a_deliberate_delay_on_a_stepped_clock_is_one_step_of_its_length():
    clock = SimulatedClock(1_000_000.0)
    stopwatch = Stopwatch(clock)
    started = stopwatch.start()
    waiting = asyncio.create_task(stopwatch.delay(0.3))
    await asyncio.sleep(0)
    clock.advance(clock.next_deadline() - clock.time())
    await asyncio.wait_for(waiting, timeout=5)
    assert 0.3 <= stopwatch.elapsed(started) < 0.4
