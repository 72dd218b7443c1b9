"""Unhandled exceptions in the bot's output, from a log file or from journald's JSON output.

One `ExceptionDetector` reads lines from either source and finds:

- Python tracebacks, from ``Traceback (most recent call last):`` to the final ``SomeError: message``
  line; a chain (``During handling of the above exception...``, ``The above exception was the
  direct cause...``) and an exception group are one traceback, named by the exception printed
  last (the one that propagated);
- JSON log records (one object per line) carrying a traceback: structlog's ``exception`` (text,
  or ``dict_tracebacks``' list), ``exc_info``/``exc_text`` (python-json-logger);
- JSON records at level error or critical without a traceback, and, from journald, entries of
  priority err or worse (``PRIORITY`` <= 3) that are not part of a traceback.

Each traceback becomes ``unhandled_exceptions{exception="ValueError"} = 1`` (the class name
without its module, the same whichever format carried it), each other error record
``error_records = 1``. A logged traceback (``log.exception``) counts too: output with a
traceback is what the checklist's "no unhandled exceptions" is about.

A traceback is complete once a line arrives that cannot continue it, or once its source has
been quiet for a whole poll (a crashed process writes nothing after its traceback). Both
observers send a Heartbeat after every read, including reads that found nothing: that is what
makes "zero exceptions" a measurement rather than an absence of data.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controller.clock import Clock
from controller.observe.observation import Heartbeat, Observation, Sink, labels_of

log = logging.getLogger(__name__)

UNHANDLED_EXCEPTIONS = "unhandled_exceptions"
ERROR_RECORDS = "error_records"
UNKNOWN = "unknown"

TRACEBACK = "Traceback (most recent call last):"
GROUP_TRACEBACK = "Exception Group Traceback (most recent call last):"
CHAINS = ("During handling of the above exception, another exception occurred:",
          "The above exception was the direct cause of the following exception:")
ERROR_LEVELS = frozenset({"error", "err", "critical", "crit", "fatal", "alert", "emerg", "emergency", "exception"})
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::(?: (.*))?)?$")
_GROUP_LINE = re.compile(r"^\s*\| (\S.*)$")  # "  | ExceptionGroup: ..." (frames are indented after the bar)
_CLASS_REPR = re.compile(r"<class '([\w.]+)'>")
MAX_LINE = 1024 * 1024
TAIL = 64


@dataclass(frozen=True, slots=True)
class Finding:
    """One exception or error record found in the output, at ``ts`` (when its last line was read)."""

    metric: str
    exception: str | None
    message: str
    ts: float

    def observation(self, source: str) -> Observation:
        labels = labels_of(exception=self.exception) if self.exception is not None else ()
        return Observation(source, self.metric, labels, 1.0, self.ts)


@dataclass
class _Traceback:
    ts: float
    exception: str | None = None
    message: str = ""


class ExceptionDetector:
    """Finds tracebacks and error records in lines of output, fed in the order they were written."""

    def __init__(self) -> None:
        self._open: _Traceback | None = None
        self._state = "idle"  # idle | frames | group | ended | chain

    @property
    def pending(self) -> bool:
        """A traceback has been seen whose end is not yet certain."""
        return self._open is not None

    def feed(self, text: str, ts: float, *, error_level: bool = False) -> list[Finding]:
        """The findings completed by ``text`` (one line, or one multi-line log entry).

        ``error_level``: the entry is an error by its source's own account (journald priority);
        it is an error record unless it belongs to a traceback or a JSON record.
        """
        found: list[Finding] = []
        claimed = False
        for line in text.splitlines() or [""]:
            claimed |= self._line(line.rstrip("\r"), ts, found)
        if error_level and not claimed:
            found.append(Finding(ERROR_RECORDS, None, text.strip()[:200], ts))
        return found

    def settle(self) -> list[Finding]:
        """The output went quiet: a traceback seen so far is complete."""
        if self._open is None:
            return []
        return [self._close()]

    # --- the line machine ---------------------------------------------------------------------------

    def _line(self, line: str, ts: float, found: list[Finding]) -> bool:
        """Handle one line; True when it belongs to a traceback or a JSON record."""
        state, stripped = self._state, line.strip()
        if state == "frames":
            if line[:1] in (" ", "\t") or not stripped:
                return True  # frames, source lines and carets are indented
            match = _EXCEPTION_LINE.match(stripped)
            if match:
                self._ended(match[1], match[2] or "", ts)
                return True
            found.append(self._close())  # cut short by other output: still an exception
        elif state == "group":
            if stripped[:1] in ("|", "+"):
                match = _GROUP_LINE.match(line)
                if self._open is not None and self._open.exception is None and match:
                    name = _EXCEPTION_LINE.match(match[1].strip())
                    if name:
                        self._ended(name[1], name[2] or "", ts, state="group")
                return True
            state = self._state = "ended"
        if state == "ended":
            if not stripped:
                return True
            if stripped in CHAINS:
                self._state = "chain"
                return True
            found.append(self._close())
        elif state == "chain":
            if not stripped:
                return True
            if self._starts(stripped, ts, chained=True):
                return True
            found.append(self._close())
        return self._idle_line(stripped, ts, found)

    def _idle_line(self, stripped: str, ts: float, found: list[Finding]) -> bool:
        if self._starts(stripped, ts, chained=False):
            return True
        if stripped.startswith("{") and stripped.endswith("}"):
            finding = _json_record(stripped, ts)
            if finding is not None:
                found.append(finding)
            return finding is not None
        return False

    def _starts(self, stripped: str, ts: float, *, chained: bool) -> bool:
        plain = stripped.lstrip("+| ")
        if plain.startswith(TRACEBACK) or plain.startswith(GROUP_TRACEBACK):
            if not chained or self._open is None:
                self._open = _Traceback(ts)
            self._open.exception = None
            self._state = "frames" if plain.startswith(TRACEBACK) else "group"
            return True
        return False

    def _ended(self, name: str, message: str, ts: float, state: str = "ended") -> None:
        assert self._open is not None
        self._open.exception, self._open.message, self._open.ts = short_name(name), message, ts
        self._state = state

    def _close(self) -> Finding:
        assert self._open is not None
        tb, self._open, self._state = self._open, None, "idle"
        return Finding(UNHANDLED_EXCEPTIONS, tb.exception or UNKNOWN, tb.message[:200], tb.ts)


def short_name(name: str) -> str:
    """``reference_bot.defects.DeliberateDefect`` -> ``DeliberateDefect``."""
    return name.rsplit(".", 1)[-1]


def exception_in(text: str) -> tuple[str, str]:
    """The exception a formatted traceback ends with: ``(name, message)``; ``unknown`` if none."""
    detector = ExceptionDetector()
    found = [f for line in text.splitlines() for f in detector.feed(line, 0.0)] + detector.settle()
    tracebacks = [f for f in found if f.metric == UNHANDLED_EXCEPTIONS]
    if tracebacks:
        return tracebacks[-1].exception or UNKNOWN, tracebacks[-1].message
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    match = _EXCEPTION_LINE.match(lines[-1]) if lines else None
    return (short_name(match[1]), match[2] or "") if match else (UNKNOWN, "")


def _json_record(line: str, ts: float) -> Finding | None:
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    message = str(record.get("event") or record.get("message") or record.get("msg") or "")[:200]
    level = str(record.get("level") or record.get("levelname") or record.get("severity") or "").lower()
    exception, exc_info = record.get("exception"), record.get("exc_info")
    if isinstance(exception, list) and exception and isinstance(exception[0], dict):
        # structlog's dict_tracebacks: the first stack is the exception that propagated
        return Finding(UNHANDLED_EXCEPTIONS, short_name(str(exception[0].get("exc_type") or UNKNOWN)), message, ts)
    text = next((v for v in (exception, record.get("exc_text"), exc_info)
                 if isinstance(v, str) and TRACEBACK in v), None)
    if text is None and isinstance(exception, str) and exception.strip():
        text = exception
    if text is not None:
        return Finding(UNHANDLED_EXCEPTIONS, exception_in(text)[0], message, ts)
    if level not in ERROR_LEVELS:
        return None
    if exc_info:  # e.g. an exc_info tuple rendered with repr(): "(<class 'ValueError'>, ...)"
        match = _CLASS_REPR.search(str(exc_info))
        return Finding(UNHANDLED_EXCEPTIONS, short_name(match[1]) if match else UNKNOWN, message, ts)
    return Finding(ERROR_RECORDS, None, message, ts)


def _report(findings: list[Finding], source: str, sink: Sink, where: str) -> None:
    for finding in findings:
        if finding.metric == UNHANDLED_EXCEPTIONS:
            log.warning("bot_exception_seen where=%s exception=%s message=%s", where, finding.exception,
                        finding.message)
        sink(finding.observation(source))


# --- a log file ------------------------------------------------------------------------------------

class LogFileObserver:
    """Follows the log file at ``path`` like ``tail -F``: from its end (or ``offset``), through
    rotation (a new file at the path) and truncation (the file shrank, or the bytes before the
    read position changed: truncated and written again between two reads)."""

    def __init__(self, path: str | os.PathLike[str], *, clock: Clock, sink: Sink, poll: float = 1.0,
                 offset: int | None = None, source: str = "logs") -> None:
        if poll <= 0:
            raise ValueError("poll is a positive number of seconds")
        self.path = Path(path)
        self.clock = clock
        self.sink = sink
        self.poll = poll
        self.source = source
        self.detector = ExceptionDetector()
        self._start = offset  # None: the end of the file found at the first read
        self._file: io.BufferedReader | None = None
        self._identity: tuple[int, int] | None = None
        self._partial = b""
        self._tail = b""  # the last bytes read, to notice a file truncated and written again past our position
        self._failing = False

    async def run(self) -> None:
        try:
            while True:
                await self.read_once()
                await self.clock.sleep(self.poll)
        finally:
            self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    async def read_once(self) -> bool:
        """Read what was written since the last read; a Heartbeat either way. Returns whether the file could be read."""
        ts = self.clock.time()
        try:
            lines = await self._read_new(ts)
        except OSError as exc:
            self.close()
            self._report_failure(ts, f"cannot read {self.path}: {exc.strerror or exc}")
            return False
        if lines == 0 and self.detector.pending:  # a quiet pass: the traceback is complete
            _report(self.detector.settle(), self.source, self.sink, str(self.path))
        self.sink(Heartbeat(self.source, ts))
        if self._failing:
            self._failing = False
            log.info("log_file_readable path=%s", self.path)
        return True

    async def _read_new(self, ts: float) -> int:
        if self._file is None:
            self._open(self._start)
            return await self._drain(ts)
        lines = 0
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            await self._drain(ts)  # moved away: its last writes still count
            raise
        if (status.st_dev, status.st_ino) != self._identity:  # rotated: a new file at the path
            lines += await self._drain(ts) + self._feed_partial(ts)
            self.close()
            self._open(0)
            log.info("log_file_rotated path=%s", self.path)
        elif status.st_size < self._file.tell() or not self._same_tail():  # truncated (and maybe written again)
            self._file.seek(0)
            self._partial = self._tail = b""
            log.info("log_file_truncated path=%s", self.path)
        return lines + await self._drain(ts)

    def _same_tail(self) -> bool:
        """The bytes just before the read position are still those read: the file was not rewritten."""
        position = self._file.tell()
        return os.pread(self._file.fileno(), len(self._tail), position - len(self._tail)) == self._tail

    def _open(self, start: int | None) -> None:
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - held open across reads, closed by close()
        except FileNotFoundError:
            self._start = 0  # a file that appears later is read from its beginning
            raise
        status = os.fstat(handle.fileno())
        position = status.st_size if start is None else min(start, status.st_size)
        handle.seek(position)
        self._tail = os.pread(handle.fileno(), min(TAIL, position), position - min(TAIL, position))
        self._file, self._identity, self._partial, self._start = handle, (status.st_dev, status.st_ino), b"", 0

    async def _drain(self, ts: float) -> int:
        lines = 0
        while chunk := self._file.read(256 * 1024):
            self._tail = (self._tail + chunk)[-TAIL:]
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            for raw in complete:
                lines += 1
                _report(self.detector.feed(raw.decode("utf-8", "replace"), ts), self.source, self.sink,
                        str(self.path))
            if len(self._partial) > MAX_LINE:
                lines += self._feed_partial(ts)
            await asyncio.sleep(0)  # a long backlog does not hold the loop
        return lines

    def _feed_partial(self, ts: float) -> int:
        if not self._partial:
            return 0
        raw, self._partial = self._partial, b""
        _report(self.detector.feed(raw.decode("utf-8", "replace"), ts), self.source, self.sink, str(self.path))
        return 1

    def _report_failure(self, ts: float, error: str) -> None:
        if not self._failing:
            self._failing = True
            log.warning("log_file_unreadable path=%s error=%s", self.path, error)
        self.sink(Heartbeat(self.source, ts, ok=False, error=error))


# --- journald --------------------------------------------------------------------------------------

class JournaldObserver:
    """Follows a systemd unit's journal through ``journalctl -o json -f``, restarting it with backoff.

    ``command`` replaces the journalctl command line (as given, without cursor handling); by
    default a restarted journalctl resumes after the last entry read (``--after-cursor``), so
    nothing written while it was down is missed.
    """

    def __init__(self, unit: str, *, clock: Clock, sink: Sink, command: Sequence[str] | None = None,
                 interval: float = 1.0, backoff: float = 1.0, max_backoff: float = 30.0,
                 source: str = "logs") -> None:
        if interval <= 0 or backoff <= 0 or max_backoff < backoff:
            raise ValueError("interval and backoff are positive numbers of seconds, max_backoff >= backoff")
        self.unit = unit
        self.clock = clock
        self.sink = sink
        self.command = tuple(command) if command is not None else None
        self.interval = interval
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.source = source
        self.detector = ExceptionDetector()
        self.cursor: str | None = None

    def argv(self) -> list[str]:
        if self.command is not None:
            return list(self.command)
        since = ["--after-cursor", self.cursor] if self.cursor else ["-n", "0"]
        return ["journalctl", "-u", self.unit, "-o", "json", "-f", "-q", "--all", *since]

    async def run(self) -> None:
        """Follow until cancelled; a journalctl that ends or cannot start is a failed heartbeat, then a restart."""
        delay = self.backoff
        while True:
            healthy, reason = await self._follow()
            if healthy:  # it ran a while: this is a new failure, not the same one again
                delay = self.backoff
            error = f"{reason}; restarting in {delay:g} s"
            log.warning("journal_reader_ended unit=%s error=%s", self.unit, error)
            self.sink(Heartbeat(self.source, self.clock.time(), ok=False, error=error))
            await self.clock.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    async def _follow(self) -> tuple[bool, str]:
        """Run one journalctl until it ends: (whether it ran for a whole interval, why it ended)."""
        argv = self.argv()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=MAX_LINE)
        except OSError as exc:
            return False, f"cannot start {argv[0]}: {exc.strerror or exc}"
        errors: list[str] = []
        stderr = asyncio.create_task(_collect(process.stderr, errors), name="journal-stderr")
        healthy = False
        reading: asyncio.Task | None = None
        tick = asyncio.create_task(self.clock.sleep(self.interval), name="journal-tick")
        quiet = True
        try:
            while True:
                reading = reading or asyncio.create_task(process.stdout.readline(), name="journal-read")
                await asyncio.wait({reading, tick}, return_when=asyncio.FIRST_COMPLETED)
                if tick.done():  # journalctl is alive: the source is fresh
                    if quiet:
                        _report(self.detector.settle(), self.source, self.sink, self.unit)
                    self.sink(Heartbeat(self.source, self.clock.time()))
                    healthy, quiet = True, True
                    tick = asyncio.create_task(self.clock.sleep(self.interval), name="journal-tick")
                if reading.done():
                    line, reading = _line_of(reading), None
                    if line is None:
                        continue  # longer than MAX_LINE: dropped
                    if not line:
                        break  # end of output: journalctl has ended
                    quiet = False
                    self._entry(line)
        finally:
            for task in (reading, tick):
                if task is not None:
                    task.cancel()
            await _stop(process)
            await asyncio.wait({stderr}, timeout=1.0)
            stderr.cancel()
        _report(self.detector.settle(), self.source, self.sink, self.unit)
        detail = f": {errors[-1]}" if errors else ""
        return healthy, f"{argv[0]} ended with status {process.returncode}{detail}"

    def _entry(self, line: bytes) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            log.debug("journal_line_not_json line=%r", line[:200])
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
        _report(findings, self.source, self.sink, f"{self.unit}[{entry.get('_PID', '?')}]")


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
        log.warning("journal_line_too_long limit=%d", MAX_LINE)
        return None


async def _collect(stream: asyncio.StreamReader, into: list[str]) -> None:
    while line := await stream.readline():
        text = line.decode("utf-8", "replace").strip()
        if text:
            into[:] = [*into[-9:], text]
            log.debug("journal_reader_stderr line=%s", text)


async def _stop(process: asyncio.subprocess.Process) -> None:
    """Terminate, wait a bounded time, then kill."""
    try:
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
            log.error("journal_reader_not_reaped pid=%s", process.pid)
