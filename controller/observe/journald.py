"""The bot's output from a systemd unit's journal (``journalctl -o json -f``), fed to the exception detector.

Each journal entry is fed whole (a JournalHandler record may hold a traceback); an entry of
priority err or worse is an error record unless it belongs to a traceback. While journalctl runs,
the observer sends a Heartbeat every interval, and a traceback at the end of the journal is
complete once a whole interval passes without an entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

from controller.analysis.observation import Sink
from controller.clock import Clock
from controller.logs import get_logger
from controller.observe.source import Source, SourceEnded
from controller.observe.tracebacks import MAX_LINE, ExceptionDetector, report

log = get_logger(__name__)


class JournaldObserver(Source):
    """Follows a systemd unit's journal through ``journalctl -o json -f``; a journalctl that ends or
    cannot start is a failed heartbeat, and is started again after a backoff (`Source.run`).

    ``command`` replaces the journalctl command line (as given, without cursor handling); by
    default a restarted journalctl resumes after the last entry read (``--after-cursor``), so
    nothing written while it was down is missed.
    """

    def __init__(self, unit: str, *, clock: Clock, sink: Sink, command: Sequence[str] | None = None,
                 interval: float = 1.0, backoff: float = 1.0, max_backoff: float = 30.0,
                 source: str = "logs") -> None:
        super().__init__(source=source, target=unit, clock=clock, sink=sink, interval=interval, backoff=backoff,
                         max_backoff=max_backoff)
        self.unit = unit
        self.command = tuple(command) if command is not None else None
        self.detector = ExceptionDetector()
        self.cursor: str | None = None

    def argv(self) -> list[str]:
        if self.command is not None:
            return list(self.command)
        since = ["--after-cursor", self.cursor] if self.cursor else ["-n", "0"]
        return ["journalctl", "-u", self.unit, "-o", "json", "-f", "-q", "--all", *since]

    async def follow(self) -> None:
        """Run one journalctl until it ends; SourceEnded says why."""
        argv = self.argv()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=MAX_LINE)
        except OSError as exc:
            raise SourceEnded(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
        errors: list[str] = []
        stderr = asyncio.create_task(_collect(process.stderr, errors), name="journal-stderr")
        reading: asyncio.Task | None = None
        tick = asyncio.create_task(self.clock.sleep(self.interval), name="journal-tick")
        quiet = True
        ended = False
        try:
            while True:
                reading = reading or asyncio.create_task(process.stdout.readline(), name="journal-read")
                await asyncio.wait({reading, tick}, return_when=asyncio.FIRST_COMPLETED)
                if tick.done():  # journalctl is alive: the source is fresh
                    if quiet:
                        report(self.detector.settle(), self.source, self.sink, self.unit)
                    self.beat(self.clock.time())
                    quiet = True
                    tick = asyncio.create_task(self.clock.sleep(self.interval), name="journal-tick")
                if reading.done():
                    line, reading = _line_of(reading), None
                    if line is None:
                        continue  # longer than MAX_LINE: dropped
                    if not line:
                        ended = True
                        break  # end of output: journalctl has ended
                    quiet = False
                    self._entry(line)
        finally:
            for task in (reading, tick):
                if task is not None:
                    task.cancel()
            await _stop(process, ended=ended)
            await asyncio.wait({stderr}, timeout=1.0)
            stderr.cancel()
        report(self.detector.settle(), self.source, self.sink, self.unit)
        detail = f": {errors[-1]}" if errors else ""
        raise SourceEnded(f"{argv[0]} ended with status {process.returncode}{detail}")

    def _entry(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            log.debug("journal_line_not_json", line=repr(line[:200]))
            return
        if not isinstance(entry, dict):
            return
        cursor = entry.get("__CURSOR")
        self.cursor = cursor if isinstance(cursor, str) and cursor else self.cursor
        message = _text(entry.get("MESSAGE"))
        if message is None:
            return
        try:
            ts = int(entry["__REALTIME_TIMESTAMP"]) / 1_000_000
        except (KeyError, TypeError, ValueError):
            ts = self.clock.time()
        try:
            priority = int(entry.get("PRIORITY", 6))
        except (TypeError, ValueError):
            priority = 6
        findings = self.detector.feed(message, ts, error_level=priority <= 3)
        report(findings, self.source, self.sink, f"{self.unit}[{entry.get('_PID', '?')}]")


def _text(value: Any) -> str | None:
    """A journald JSON field: a string, an array of byte values (not UTF-8 or binary), or an array of
    several values of one field."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) for b in value):
        return bytes(b & 0xFF for b in value).decode("utf-8", "replace")
    if isinstance(value, list):
        parts = [t for t in map(_text, value) if t is not None]
        return "\n".join(parts) if parts else None
    return None


def _line_of(reading: asyncio.Task) -> bytes | None:
    try:
        return reading.result()
    except ValueError:  # the line overran the reader's limit; asyncio has discarded it
        log.warning("journal_line_too_long", limit=MAX_LINE)
        return None


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        text = line.decode("utf-8", "replace").strip()
        if text:
            into[:] = [*into[-9:], text]
            log.debug("journal_reader_stderr", line=text)


async def _stop(process: asyncio.subprocess.Process, *, ended: bool) -> None:
    """Terminate, wait a bounded time, then kill.

    A journalctl whose output has ``ended`` is exiting: it is waited for first. Signalling it
    then would race the child watcher: `Popen.send_signal` polls, reaps the exited child itself,
    and asyncio reports status 255 instead of journalctl's own.
    """
    try:
        if ended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.wait(), timeout=2.0)
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), timeout=2.0)
    except ProcessLookupError:
        pass
    except TimeoutError:
        process.kill()
        try:
            await asyncio.wait_for(process.wait(), timeout=2.0)
        except TimeoutError:
            log.error("journal_reader_not_reaped", pid=process.pid)
