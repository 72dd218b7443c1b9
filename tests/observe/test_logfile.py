"""The log-file observer on real files: a crashing Python process, the reference bot crashing on its
defect, rotation, truncation, a file that appears late."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest

from controller.observe.logfile import LogFileObserver
from controller.analysis.observation import Heartbeat
from tests.observe.sample_tracebacks import caused, exceptions, grouped, plain, raised, read
from tests.support.bot_process import SPEED, STRATEGY, exchange_file, strategy_file
from tests.support.checkout import REPO


@pytest.fixture
def log_file(tmp_path) -> Path:
    path = tmp_path / "bot.log"
    path.write_text("")
    return path


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


async def test_a_real_traceback_written_by_a_crashing_python_process_is_counted_once(log_file, clock, recorder):
    observer = LogFileObserver(log_file, clock=clock, sink=recorder)
    await read(observer)
    code = textwrap.dedent("""\
        print("working", flush=True)
        try:
            {}["missing"]
        except KeyError:
            raise RuntimeError("gave up")
    """)
    with log_file.open("ab") as out:
        process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, stdout=out, stderr=out)
        assert await asyncio.wait_for(process.wait(), timeout=10) == 1
    await read(observer)
    assert exceptions(recorder) == ["RuntimeError"]
    [found] = recorder.observations()
    assert (found.source, found.value, found.ts) == ("logs", 1.0, clock.time())
    assert all(h.ok for h in recorder.heartbeats) and len(recorder.heartbeats) == 4


async def test_zero_exceptions_is_a_pass_with_a_heartbeat_not_an_absence(log_file, clock, recorder):
    observer = LogFileObserver(log_file, clock=clock, sink=recorder)
    await read(observer, passes=1)
    append(log_file, "bot_started\nbot_iteration n=1\n")
    await read(observer, passes=1)
    assert recorder.items == [Heartbeat("logs", clock.time()), Heartbeat("logs", clock.time())]


async def test_the_file_is_followed_from_its_end_or_from_the_offset_given(log_file, clock, recorder):
    append(log_file, raised(plain) + "before the controller started\n")
    await read(LogFileObserver(log_file, clock=clock, sink=recorder))
    assert exceptions(recorder) == []
    await read(LogFileObserver(log_file, clock=clock, sink=recorder, offset=0))
    assert exceptions(recorder) == ["ValueError"]


async def test_a_traceback_written_across_two_reads_is_one_exception(log_file, clock, recorder):
    observer = LogFileObserver(log_file, clock=clock, sink=recorder)
    await read(observer, passes=1)
    text = raised(caused)
    middle = text.index("During handling") if "During handling" in text else text.index("The above exception")
    append(log_file, text[:middle])
    await read(observer, passes=1)
    append(log_file, text[middle:] + "next\n")
    await read(observer, passes=1)
    assert exceptions(recorder) == ["ConnectionError"]


async def test_rotation_and_truncation_are_followed(log_file, clock, recorder):
    observer = LogFileObserver(log_file, clock=clock, sink=recorder)
    await read(observer, passes=1)
    append(log_file, raised(plain))  # written just before logrotate moves the file
    log_file.rename(log_file.with_suffix(".log.1"))
    log_file.write_text(raised(caused))
    await read(observer)
    assert exceptions(recorder) == ["ValueError", "ConnectionError"]
    log_file.write_text("")  # copytruncate
    append(log_file, raised(grouped))
    await read(observer)
    assert exceptions(recorder) == ["ValueError", "ConnectionError", "ExceptionGroup"]


async def test_a_missing_file_is_a_failed_heartbeat_until_it_appears_and_is_then_read_from_its_start(
        tmp_path, clock, recorder):
    path = tmp_path / "later.log"
    observer = LogFileObserver(path, clock=clock, sink=recorder)
    assert await observer.read_once() is False
    [failed] = recorder.items
    assert not failed.ok and failed.error == f"cannot read {path}: No such file or directory"
    path.write_text(raised(plain))
    await read(observer)
    assert exceptions(recorder) == ["ValueError"] and recorder.heartbeats[-1].ok
    path.unlink()
    assert await observer.read_once() is False


async def test_run_reads_every_poll_on_the_clock(log_file, clock, recorder):
    task = asyncio.create_task(LogFileObserver(log_file, clock=clock, sink=recorder, interval=1.0).run(),
                               name="test-log-file")
    try:
        await recorder.heartbeat(1)
        append(log_file, raised(plain))
        clock.advance(1)
        await recorder.heartbeat(2)
        clock.advance(1)
        await recorder.heartbeat(3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert exceptions(recorder) == ["ValueError"]


async def test_the_reference_bot_crashing_on_its_defect_is_exactly_one_unhandled_exception(
        tmp_path, sim, log_file, clock, recorder):
    observer = LogFileObserver(log_file, clock=clock, sink=recorder)
    await read(observer)
    config = strategy_file(tmp_path, STRATEGY + "bot:\n  defects:\n    unhandled_exception_after_seconds: 1\n")
    with log_file.open("ab") as stderr:
        bot = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reference_bot", "--config", str(config), "--exchange",
            str(exchange_file(tmp_path, sim)), "--speed", SPEED, cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL, stderr=stderr)
        try:
            assert await asyncio.wait_for(bot.wait(), timeout=30) == 1
        finally:
            if bot.returncode is None:
                bot.kill()
                await bot.wait()
    await read(observer)
    output = log_file.read_text()
    assert "bot_crashed" in output and "bot_started" in output
    assert exceptions(recorder) == ["DeliberateDefect"], output
