"""The simulated clock: time moves by advance() or at `speed` times real time; sleepers wake in order.
The backoff slept on it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from controller.clock import Backoff, RealClock, SimulatedClock

START = datetime(2026, 3, 1, tzinfo=UTC)


async def test_a_manual_clock_stands_still_until_advanced():
    clock = SimulatedClock(START)
    before = clock.time()
    await asyncio.sleep(0.01)
    assert clock.time() == before == START.timestamp()
    clock.advance(3600)
    assert clock.now() == datetime(2026, 3, 1, 1, tzinfo=UTC)


async def test_sleepers_wake_when_time_passes_their_deadline_and_in_deadline_order():
    clock = SimulatedClock(START)
    woke: list[str] = []

    async def sleeper(name, seconds):
        await clock.sleep(seconds)
        woke.append(name)

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("late", 48 * 3600), ("early", 60), ("mid", 3600))]
    await asyncio.sleep(0)
    assert clock.pending_sleepers() == 3 and clock.next_deadline() == START.timestamp() + 60
    clock.advance(3599)
    await asyncio.sleep(0)
    assert woke == ["early"]
    clock.advance(48 * 3600)
    await asyncio.gather(*tasks)
    assert woke == ["early", "mid", "late"]


async def test_an_accelerated_clock_runs_a_simulated_hour_in_a_fraction_of_a_second():
    clock = SimulatedClock(START, speed=36_000)  # an hour in 0.1 s of real time
    loop = asyncio.get_running_loop()
    real_start = loop.time()
    await asyncio.wait_for(clock.sleep(3600), timeout=5)
    assert clock.time() - START.timestamp() >= 3600
    assert loop.time() - real_start < 5


async def test_a_cancelled_sleeper_does_not_block_the_others():
    clock = SimulatedClock(START)
    doomed = asyncio.create_task(clock.sleep(10))
    survivor = asyncio.create_task(clock.sleep(20))
    await asyncio.sleep(0)
    doomed.cancel()
    clock.advance(20)
    await asyncio.wait_for(survivor, timeout=1)
    assert doomed.cancelled()


def test_time_never_goes_backwards():
    clock = SimulatedClock(START)
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        SimulatedClock(START, speed=-1)


async def test_the_real_clock_is_timezone_aware_utc():
    now = RealClock().now()
    assert now.tzinfo is UTC and abs(now.timestamp() - RealClock().time()) < 5


def test_a_backoff_doubles_from_its_start_up_to_its_maximum_and_starts_again_after_a_reset():
    backoff = Backoff(SimulatedClock(START), initial=1.0, maximum=10.0)
    assert [backoff.next() for _ in range(6)] == [1, 2, 4, 8, 10, 10]
    backoff.reset()
    assert backoff.next() == 1


def test_a_jittered_backoff_waits_in_the_upper_half_of_each_step():
    for _ in range(50):
        backoff = Backoff(SimulatedClock(START), initial=2.0, maximum=16.0, jitter=True)
        for ceiling in (2, 4, 8, 16, 16):
            assert ceiling / 2 <= backoff.next() <= ceiling


async def test_a_backoff_sleeps_on_its_clock_and_never_less_than_asked():
    clock = SimulatedClock(START)
    backoff = Backoff(clock, initial=1.0, maximum=8.0)
    sleeping = asyncio.create_task(backoff.sleep(at_least=5.0), name="test-backoff")
    await asyncio.sleep(0)
    clock.advance(4.9)
    await asyncio.sleep(0)
    assert not sleeping.done()
    clock.advance(0.1)
    assert await sleeping == 5.0


async def test_retrying_waits_between_attempts_on_the_clock():
    clock = SimulatedClock(START)
    attempts: list[float] = []

    async def flaky() -> str:
        attempts.append(clock.time())
        if len(attempts) < 3:
            raise ConnectionError("refused")
        return "answered"

    async def call() -> str:
        async for attempt in Backoff(clock, initial=1.0, maximum=8.0).retrying(reraise=True):
            with attempt:
                return await flaky()
        raise AssertionError("unreachable")

    task = asyncio.create_task(call(), name="test-retrying")
    async with asyncio.timeout(5):
        for _ in range(2):
            while clock.pending_sleepers() == 0:  # the call is waiting out its backoff
                await asyncio.sleep(0)
            clock.advance(clock.next_deadline() - clock.time())
    assert await task == "answered"
    assert [round(t - attempts[0], 6) for t in attempts] == [0, 1, 3]


def test_a_backoff_needs_a_positive_start_and_a_maximum_no_less():
    with pytest.raises(ValueError):
        Backoff(SimulatedClock(START), initial=0, maximum=1)
    with pytest.raises(ValueError):
        Backoff(SimulatedClock(START), initial=2, maximum=1)
