"""Unhandled exceptions found in real output: tracebacks Python printed, JSON records our logging and
structlog wrote, the reference bot crashing, and journald's JSON as journalctl prints it."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
import textwrap
import traceback
from pathlib import Path

import pytest
import structlog

from controller import logs as controller_logs
from controller.clock import SimulatedClock
from controller.observe.logs import ERROR_RECORDS, UNHANDLED_EXCEPTIONS, ExceptionDetector, JournaldObserver, \
    LogFileObserver
from controller.observe.observation import Heartbeat
from tests.bot.test_cli import REPO, SPEED, STRATEGY, exchange_file, strategy_file


def raised(make) -> str:
    """The traceback Python prints for what ``make()`` raises."""
    try:
        make()
    except BaseException:  # noqa: BLE001 - any exception is the point
        return traceback.format_exc()
    raise AssertionError("nothing was raised")


def plain() -> None:
    raise ValueError("boom")


def handling_failed() -> None:
    try:
        {}["missing"]
    except KeyError:
        raise RuntimeError("while handling")  # noqa: B904 - the implicit chain is the point


def caused() -> None:
    try:
        1 / 0
    except ZeroDivisionError as exc:
        raise ConnectionError("no route") from exc


def grouped() -> None:
    raise ExceptionGroup("two failures", [ValueError("one"), TypeError("two")])


def detect(*texts: str) -> list[tuple[str, str | None]]:
    detector = ExceptionDetector()
    found = [f for text in texts for line in text.splitlines() for f in detector.feed(line, 1.0)]
    return [(f.metric, f.exception) for f in found + detector.settle()]


def exceptions(recorder) -> list[str | None]:
    return [o.label("exception") for o in recorder.observations(UNHANDLED_EXCEPTIONS)]


# --- the detector --------------------------------------------------------------------------------------

def test_a_traceback_is_one_exception_named_by_its_class():
    assert detect(raised(plain)) == [(UNHANDLED_EXCEPTIONS, "ValueError")]


@pytest.mark.parametrize(("make", "name"), [(handling_failed, "RuntimeError"), (caused, "ConnectionError")])
def test_a_chained_traceback_is_one_exception_named_by_the_one_that_propagated(make, name):
    text = raised(make)
    assert "During handling" in text or "direct cause" in text
    assert detect(text) == [(UNHANDLED_EXCEPTIONS, name)]


def test_an_exception_group_is_one_exception():
    text = raised(grouped)
    assert "Exception Group Traceback" in text
    assert detect(text) == [(UNHANDLED_EXCEPTIONS, "ExceptionGroup")]


def test_tracebacks_one_after_another_are_counted_each():
    assert detect(raised(plain), "bot_restarted\n", raised(caused), raised(grouped)) == [
        (UNHANDLED_EXCEPTIONS, "ValueError"), (UNHANDLED_EXCEPTIONS, "ConnectionError"),
        (UNHANDLED_EXCEPTIONS, "ExceptionGroup")]


def test_a_traceback_cut_short_by_other_output_still_counts():
    cut = "\n".join(raised(plain).splitlines()[:3])
    assert detect(cut, "2026-01-01 INFO next line\n") == [(UNHANDLED_EXCEPTIONS, "unknown")]


def test_the_end_of_a_traceback_waits_for_a_line_that_cannot_continue_it_or_for_quiet():
    detector = ExceptionDetector()
    for line in raised(caused).splitlines()[:6]:  # up to the first exception of the chain
        assert detector.feed(line, 1.0) == []
    assert detector.pending
    found = detector.settle()
    assert [(f.exception, f.ts) for f in found] == [("ZeroDivisionError", 1.0)] and not detector.pending


def test_json_records_with_a_traceback_or_at_error_level_are_found():
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level, logging.getLogger("binance").level
    controller_logs.configure(level="info", fmt="json", stream=stream)  # the controller's own JSON logs
    logger = logging.getLogger("tests.observe.bot")
    try:
        try:
            plain()
        except ValueError:
            logger.exception("order_failed")
        logger.error("cancel_open_orders_failed symbol=BTCUSDT")
        logger.warning("leverage_not_applied")
        logger.info("bot_started")
    finally:
        root.handlers, root.level = saved[0], saved[1]
        logging.getLogger("binance").setLevel(saved[2])
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert detect(*lines) == [(UNHANDLED_EXCEPTIONS, "ValueError"), (ERROR_RECORDS, None)]


def test_structlog_dict_tracebacks_and_json_logger_exc_info_are_found():
    stream = io.StringIO()
    logger = structlog.wrap_logger(structlog.PrintLogger(stream), processors=[
        structlog.processors.add_log_level, structlog.processors.dict_tracebacks,
        structlog.processors.JSONRenderer(default=repr)])
    try:
        caused()
    except ConnectionError:
        logger.exception("stream_lost")
    json_logger = json.dumps({"levelname": "ERROR", "message": "crash", "exc_info": raised(grouped)})
    repr_only = json.dumps({"level": "critical", "event": "x", "exc_info": "(<class 'KeyError'>, KeyError('a'))"})
    assert detect(stream.getvalue(), json_logger, repr_only) == [
        (UNHANDLED_EXCEPTIONS, "ConnectionError"), (UNHANDLED_EXCEPTIONS, "ExceptionGroup"),
        (UNHANDLED_EXCEPTIONS, "KeyError")]


def test_ordinary_output_is_no_finding():
    assert detect("bot_started account=canary\n", '{"level": "info", "event": "x"}\n', "{not json}\n",
                  "ValueError: mentioned in passing\n") == []


# --- a log file ------------------------------------------------------------------------------------------

@pytest.fixture
def log_file(tmp_path) -> Path:
    path = tmp_path / "bot.log"
    path.write_text("")
    return path


def append(path: Path, text: str) -> None:
    with path.open("a") as f:
        f.write(text)


async def read(observer: LogFileObserver, passes: int = 2) -> None:
    """Read passes: the second finds nothing new and so completes a traceback at the end."""
    for _ in range(passes):
        assert await observer.read_once() is True


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
    task = asyncio.create_task(LogFileObserver(log_file, clock=clock, sink=recorder, poll=1.0).run(),
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


# --- journald ----------------------------------------------------------------------------------------------

JOURNALCTL = textwrap.dedent("""\
    # Prints journald entries as `journalctl -o json` does, one JSON object per line; then stays
    # (like `-f`) or, with an exit status given, writes a complaint to stderr and exits with it.
    import sys, time
    with open(sys.argv[1]) as entries:
        for line in entries:
            sys.stdout.write(line)
    sys.stdout.flush()
    if len(sys.argv) > 2:
        sys.stderr.write("Failed to open journal: the journal is gone\\n")
        sys.exit(int(sys.argv[2]))
    time.sleep(60)
""")

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z, in microseconds as __REALTIME_TIMESTAMP has it


def entry(message, *, priority: int = 6, at: int = 0, pid: int = 4242) -> dict:
    return {"__CURSOR": f"s=1;i={at}", "__REALTIME_TIMESTAMP": str(T0 + at * 1000), "PRIORITY": str(priority),
            "_PID": str(pid), "_SYSTEMD_UNIT": "canary-bot.service", "MESSAGE": message}


def fake_journalctl(tmp_path: Path, entries: list[dict], exit_status: int | None = None) -> list[str]:
    script = tmp_path / "journalctl.py"
    script.write_text(JOURNALCTL)
    data = tmp_path / f"entries-{len(list(tmp_path.glob('entries-*')))}.json"
    data.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return [sys.executable, str(script), str(data), *([str(exit_status)] if exit_status is not None else [])]


async def test_journald_entries_give_tracebacks_and_error_records(tmp_path, clock, recorder):
    stderr_lines = raised(caused).splitlines()  # systemd stores each line of stderr as its own entry
    entries = [entry("bot_started", at=0)]
    entries += [entry(line, at=1 + i) for i, line in enumerate(stderr_lines)]
    # A message that is not valid UTF-8 is an array of bytes in journald's JSON.
    entries.append(entry(list("bot_iteration \xff".encode("latin-1")), at=100))
    # A JournalHandler record: one entry at priority err, the traceback inside the message.
    entries.append(entry("order_failed\n" + raised(plain), priority=3, at=101))
    entries.append(entry("cancel_open_orders_failed symbol=BTCUSDT", priority=3, at=102))
    entries.append(entry(json.dumps({"level": "error", "event": "shutdown_slow"}), at=103))  # a JSON record
    observer = JournaldObserver("canary-bot.service", clock=clock, sink=recorder,
                                command=fake_journalctl(tmp_path, entries))
    task = asyncio.create_task(observer.run(), name="test-journald")
    try:
        await recorder.until(lambda: len(recorder.observations()) >= 4)
        clock.advance(1)
        beat = await recorder.heartbeat(1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert beat.ok
    found = [(o.metric, o.label("exception"), o.ts) for o in recorder.observations()]
    assert found == [(UNHANDLED_EXCEPTIONS, "ConnectionError", (T0 + len(stderr_lines) * 1000) / 1e6),
                     (UNHANDLED_EXCEPTIONS, "ValueError", (T0 + 101_000) / 1e6),
                     (ERROR_RECORDS, None, (T0 + 102_000) / 1e6),
                     (ERROR_RECORDS, None, (T0 + 103_000) / 1e6)]
    assert observer.cursor == "s=1;i=103"


async def test_a_traceback_at_the_end_of_the_journal_is_counted_once_the_journal_is_quiet(tmp_path, recorder):
    entries = [entry(line, at=i) for i, line in enumerate(raised(plain).splitlines())]
    clock = SimulatedClock(speed=100.0)  # a quiet interval of 1 s lasts 10 ms
    observer = JournaldObserver("canary-bot.service", clock=clock, sink=recorder,
                                command=fake_journalctl(tmp_path, entries))
    task = asyncio.create_task(observer.run(), name="test-journald")
    try:
        await recorder.until(lambda: bool(recorder.observations()))
        await recorder.until(lambda: len(recorder.heartbeats) >= 2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert exceptions(recorder) == ["ValueError"]
    assert all(h.ok for h in recorder.heartbeats)


async def test_a_journalctl_that_dies_is_a_failed_heartbeat_and_is_restarted_with_backoff(
        tmp_path, clock, recorder):
    command = fake_journalctl(tmp_path, [entry(line, at=i) for i, line in enumerate(raised(plain).splitlines())],
                              exit_status=1)
    observer = JournaldObserver("canary-bot.service", clock=clock, sink=recorder, command=command, backoff=1)
    task = asyncio.create_task(observer.run(), name="test-journald")
    try:
        first = await recorder.heartbeat(1)
        clock.advance(1)
        second = await recorder.heartbeat(2)
        clock.advance(2)
        third = await recorder.heartbeat(3)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [h.ok for h in (first, second, third)] == [False, False, False]
    assert first.error == (f"{sys.executable} ended with status 1: Failed to open journal: the journal is gone; "
                           "restarting in 1 s")
    assert second.error.endswith("restarting in 2 s") and third.error.endswith("restarting in 4 s")
    assert exceptions(recorder) == ["ValueError"] * 3  # each run read the journal it was given


async def test_a_journalctl_that_cannot_start_is_a_failed_heartbeat(tmp_path, clock, recorder):
    missing = str(tmp_path / "no-journalctl")
    observer = JournaldObserver("canary-bot.service", clock=clock, sink=recorder, command=[missing])
    task = asyncio.create_task(observer.run(), name="test-journald")
    try:
        failed = await recorder.heartbeat(1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert not failed.ok and failed.error == f"cannot start {missing}: No such file or directory; restarting in 1 s"


def test_the_default_command_follows_the_unit_and_resumes_after_the_last_entry_read(clock, recorder):
    observer = JournaldObserver("canary-bot.service", clock=clock, sink=recorder)
    assert observer.argv() == ["journalctl", "-u", "canary-bot.service", "-o", "json", "-f", "-q", "--all", "-n", "0"]
    observer.cursor = "s=abc;i=7"
    assert observer.argv()[-2:] == ["--after-cursor", "s=abc;i=7"]
    assert os.path.basename(observer.argv()[0]) == "journalctl"
