"""The process source with real child processes: started, killed (a zombie until reaped), restarted."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controller.analysis.observation import Heartbeat
from controller.observe.process import ProcessObserver, pid_from_file
from controller.procfs import read_stat

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


class Children:
    """Child processes the test starts; the observer is told the newest one's pid."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self) -> subprocess.Popen:
        child = subprocess.Popen(SLEEPER)
        self.started.append(child)
        return child

    def pid(self) -> int | None:
        return self.started[-1].pid if self.started else None

    async def kill_leaving_a_zombie(self, child: subprocess.Popen) -> None:
        child.kill()
        # Wait for the exit without reaping it (WNOWAIT): the child stays a zombie.
        await asyncio.to_thread(os.waitid, os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)

    def reap(self) -> None:
        for child in self.started:
            if child.poll() is None:
                child.kill()
            child.wait(timeout=10)


@pytest.fixture
def children():
    kids = Children()
    yield kids
    kids.reap()


def values(recorder, metric: str) -> list[float]:
    return [o.value for o in recorder.observations(metric)]


async def test_a_running_child_is_up_a_killed_one_is_down_and_its_successor_is_a_restart(children, clock, recorder):
    observer = ProcessObserver(clock=clock, sink=recorder, pid_source=children.pid)
    first = children.start()
    assert await observer.read_once() is True
    await children.kill_leaving_a_zombie(first)
    assert read_stat(first.pid).state == "Z"
    assert await observer.read_once() is False  # a zombie is not up
    first.wait(timeout=10)
    assert await observer.read_once() is False  # reaped: gone
    children.start()
    assert await observer.read_once() is True
    assert values(recorder, "up") == [1, 0, 0, 1]
    assert values(recorder, "restarts") == [0, 0, 0, 1]
    assert all(h.ok for h in recorder.heartbeats) and len(recorder.heartbeats) == 4
    up = recorder.observations("up")[0]
    assert (up.source, up.labels, up.ts) == ("process", (), clock.time())


async def test_no_known_pid_is_down_and_no_restart(children, clock, recorder):
    observer = ProcessObserver(clock=clock, sink=recorder, pid_source=children.pid)
    assert await observer.read_once() is False
    children.start()
    assert await observer.read_once() is True
    assert values(recorder, "up") == [0, 1] and values(recorder, "restarts") == [0, 0]


async def test_a_pid_source_that_fails_is_a_failed_heartbeat_and_no_observation(clock, recorder):
    def broken() -> int | None:
        raise ValueError("the pidfile holds 'abc'")

    assert await ProcessObserver(clock=clock, sink=recorder, pid_source=broken).read_once() is None
    error = "cannot tell the bot's pid or state: ValueError: the pidfile holds 'abc'"
    assert recorder.items == [Heartbeat("process", clock.time(), ok=False, error=error)]


async def test_without_proc_the_source_cannot_be_read(tmp_path, clock, recorder):
    observer = ProcessObserver(clock=clock, sink=recorder, pid_source=lambda: 1, proc=tmp_path / "absent")
    assert await observer.read_once() is None
    assert [h.ok for h in recorder.items] == [False]


def write_stat(proc: Path, pid: int, comm: str, state: str, start_ticks: int) -> None:
    """A /proc/PID/stat line in the kernel's format (52 fields)."""
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    fields = [state, "1", str(pid), str(pid), "0", "-1", "4194304"] + ["0"] * 12 + [str(start_ticks)] + ["0"] * 32
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")


async def test_a_new_process_with_the_old_pid_is_still_a_restart(tmp_path, clock, recorder):
    write_stat(tmp_path, 4242, "python (bot) x", "S", 1000)
    observer = ProcessObserver(clock=clock, sink=recorder, pid_source=lambda: 4242, proc=tmp_path)
    await observer.read_once()
    write_stat(tmp_path, 4242, "python (bot) x", "R", 2000)  # same pid, started later
    await observer.read_once()
    assert values(recorder, "restarts") == [0, 1] and values(recorder, "up") == [1, 1]


def test_read_stat_parses_a_command_name_with_spaces_and_parentheses(tmp_path):
    write_stat(tmp_path, 7, "a) (b", "Z", 99)
    assert read_stat(7, tmp_path).state == "Z" and read_stat(7, tmp_path).start_ticks == 99
    assert read_stat(8, tmp_path) is None
    own = read_stat(os.getpid())
    assert own.alive and own.pid == os.getpid()


def test_a_pidfile_names_the_process_and_its_absence_means_none(tmp_path):
    path = tmp_path / "bot.pid"
    source = pid_from_file(path)
    assert source() is None
    path.write_text("1234\n")
    assert source() == 1234
    path.write_text("abc")
    with pytest.raises(ValueError):
        source()


async def test_run_checks_every_interval(children, clock, recorder):
    children.start()
    task = asyncio.create_task(ProcessObserver(clock=clock, sink=recorder, pid_source=children.pid,
                                               interval=1.0).run(), name="test-process")
    try:
        first = await recorder.heartbeat(1)
        clock.advance(1)
        second = await recorder.heartbeat(2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert second.ts == first.ts + 1 and values(recorder, "up") == [1, 1]
