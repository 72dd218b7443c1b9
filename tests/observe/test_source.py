"""The one way every observer runs: a source that fails is a failed heartbeat (nodata, never
silence) and is followed again after a backoff on the Clock; cancelling it stops it."""

from __future__ import annotations

import asyncio

import pytest

from controller.observe.source import PollingSource, Source, SourceEnded


class Flaky(PollingSource):
    """A polling source whose reads raise what it was told to (a bug in a read), then succeed."""

    def __init__(self, *, failures: list[BaseException], **options) -> None:
        super().__init__(source="flaky", target="nothing", **options)
        self.failures = failures
        self.reads = 0

    async def read_once(self) -> bool:
        self.reads += 1
        if self.failures:
            raise self.failures.pop(0)
        self.beat(self.clock.time())
        return True


class Ending(Source):
    """A source whose every run ends at once, as a reader process that exits would."""

    async def follow(self) -> None:
        raise SourceEnded("the reader exited")


async def test_a_read_that_raises_is_a_failed_heartbeat_then_a_restart_after_backoff(clock, recorder):
    source = Flaky(failures=[RuntimeError("bug"), KeyError("x")], clock=clock, sink=recorder, interval=10)
    task = asyncio.create_task(source.run(), name="test-flaky")
    try:
        first = await recorder.heartbeat(1)
        clock.advance(1)
        second = await recorder.heartbeat(2)
        clock.advance(2)
        third = await recorder.heartbeat(3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (first.ok, first.error) == (False, "RuntimeError: bug; restarting in 1 s")
    assert (second.ok, second.error) == (False, "KeyError: 'x'; restarting in 2 s")
    assert third.ok and third.ts == first.ts + 3 and source.reads == 3
    assert task.cancelled()


async def test_failures_in_a_row_wait_longer_up_to_the_maximum(clock, recorder):
    source = Ending(source="ending", target="nothing", clock=clock, sink=recorder, interval=1.0, backoff=1.0,
                    max_backoff=4.0)
    task = asyncio.create_task(source.run(), name="test-ending")
    try:
        for count, wait in enumerate((1, 2, 4, 4), start=1):
            await recorder.heartbeat(count)
            clock.advance(wait)
        await recorder.heartbeat(5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [h.error for h in recorder.heartbeats] == [f"the reader exited; restarting in {s} s" for s in (1, 2, 4, 4, 4)]
    assert not any(h.ok for h in recorder.heartbeats)


async def test_a_run_that_lasted_its_interval_starts_the_backoff_afresh(clock, recorder):
    class LastsThenEnds(Source):
        async def follow(self) -> None:
            await self.clock.sleep(self.interval)
            raise SourceEnded("lost")

    source = LastsThenEnds(source="lasting", target="nothing", clock=clock, sink=recorder, interval=5.0)
    task = asyncio.create_task(source.run(), name="test-lasting")
    try:
        async with asyncio.timeout(5):
            for count in (1, 2):
                while clock.next_deadline() is None:  # until the run waits out its interval
                    await asyncio.sleep(0)
                clock.advance(5)
                await recorder.heartbeat(count)
                clock.advance(1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [h.error for h in recorder.heartbeats] == ["lost; restarting in 1 s"] * 2


def test_a_source_refuses_an_interval_or_backoff_that_is_not_positive(clock, recorder):
    with pytest.raises(ValueError, match="interval"):
        Flaky(failures=[], clock=clock, sink=recorder, interval=0)
    with pytest.raises(ValueError, match="backoff"):
        Ending(source="ending", target="nothing", clock=clock, sink=recorder, interval=1, backoff=2, max_backoff=1)


async def test_a_task_of_the_run_that_fails_is_named_in_the_heartbeat_not_its_task_group(clock, recorder):
    class TwoTasks(Source):
        async def follow(self) -> None:
            async def broken() -> None:
                raise ValueError("no capital")

            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.clock.sleep(60), name="test-waiting")
                tasks.create_task(broken(), name="test-broken")

    source = TwoTasks(source="two", target="nothing", clock=clock, sink=recorder, interval=1.0)
    task = asyncio.create_task(source.run(), name="test-two-tasks")
    try:
        failed = await recorder.heartbeat(1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert (failed.ok, failed.error) == (False, "ValueError: no capital; restarting in 1 s")
