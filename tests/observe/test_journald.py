"""The journald observer on journald's JSON as journalctl prints it, from a stand-in journalctl that
prints, stays, or fails as the real one does."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import textwrap
from pathlib import Path

from controller.clock import SimulatedClock
from controller.observe.journald import JournaldObserver
from controller.observe.tracebacks import ERROR_RECORDS, UNHANDLED_EXCEPTIONS
from tests.observe.sample_tracebacks import caused, exceptions, plain, raised


JOURNALCTL = textwrap.dedent("""\
    # Prints journald entries as `journalctl -o json` does, one JSON object per line; then stays
    # (like `-f`) or, with an exit status given, writes a complaint to stderr and exits with it,
    # after lingering a while with its output closed if a third argument says how long.
    import os, sys, time
    with open(sys.argv[1]) as entries:
        for line in entries:
            sys.stdout.write(line)
    sys.stdout.flush()
    if len(sys.argv) > 2:
        sys.stderr.write("Failed to open journal: the journal is gone\\n")
        if len(sys.argv) > 3:
            os.close(1)
            time.sleep(float(sys.argv[3]))
        sys.exit(int(sys.argv[2]))
    time.sleep(60)
""")

T0 = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z, in microseconds as __REALTIME_TIMESTAMP has it


def entry(message, *, priority: int = 6, at: int = 0, pid: int = 4242) -> dict:
    return {"__CURSOR": f"s=1;i={at}", "__REALTIME_TIMESTAMP": str(T0 + at * 1000), "PRIORITY": str(priority),
            "_PID": str(pid), "_SYSTEMD_UNIT": "canary-bot.service", "MESSAGE": message}


def fake_journalctl(tmp_path: Path, entries: list[dict], exit_status: int | None = None,
                    linger: float | None = None) -> list[str]:
    script = tmp_path / "journalctl.py"
    script.write_text(JOURNALCTL)
    data = tmp_path / f"entries-{len(list(tmp_path.glob('entries-*')))}.json"
    data.write_text("".join(json.dumps(e) + "\n" for e in entries))
    return [sys.executable, str(script), str(data), *([str(exit_status)] if exit_status is not None else []),
            *([str(linger)] if linger is not None else [])]


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


async def test_a_journalctl_that_closes_its_output_before_it_exits_is_reported_with_its_own_status(
        tmp_path, clock, recorder):
    # Signalling a journalctl that is on its way out reported -15 (our SIGTERM), or 255 when the
    # signal's poll reaped the child before asyncio's watcher did: never its own status.
    command = fake_journalctl(tmp_path, [entry("bot_started")], exit_status=3, linger=0.3)
    observer = JournaldObserver("canary-bot.service", clock=clock, sink=recorder, command=command, backoff=1)
    task = asyncio.create_task(observer.run(), name="test-journald")
    try:
        failed = await recorder.heartbeat(1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert failed.error == (f"{sys.executable} ended with status 3: Failed to open journal: the journal is gone; "
                            "restarting in 1 s")


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
