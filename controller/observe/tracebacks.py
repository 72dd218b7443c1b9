"""Unhandled exceptions in the bot's output: one `ExceptionDetector` for every source of lines.

It finds:

- Python tracebacks, from ``Traceback (most recent call last):`` to the final ``SomeError: message``
  line; a chain (``During handling of the above exception...``, ``The above exception was the
  direct cause...``) and an exception group are one traceback, named by the exception printed
  last (the one that propagated);
- JSON log records (one object per line) carrying a traceback: structlog's ``exception`` (text,
  or ``dict_tracebacks``' list), ``exc_info``/``exc_text`` (python-json-logger);
- JSON records at level error or critical without a traceback, and lines its source marks as
  errors (journald's priority err or worse) that are not part of a traceback.

Each traceback becomes ``unhandled_exceptions{exception="ValueError"} = 1`` (the class name
without its module, the same whichever format carried it), each other error record
``error_records = 1``. A logged traceback (``log.exception``) counts too: output with a
traceback is what the checklist's "no unhandled exceptions" is about.

A traceback is complete once a line arrives that cannot continue it, or once its source has
been quiet for a whole poll (a crashed process writes nothing after its traceback): the
observers (`controller.observe.logfile`, `controller.observe.journald`) call `settle` then.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from controller.analysis.observation import Observation, Sink, labels_of
from controller.logs import get_logger

log = get_logger(__name__)

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
# The longest line a source hands over in one piece: a log file feeds a longer one in parts,
# journald's reader drops it (asyncio's stream limit).
MAX_LINE = 1024 * 1024


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


def report(findings: list[Finding], source: str, sink: Sink, where: str) -> None:
    """Send each finding to ``sink`` as an observation of ``source``; log each exception, naming ``where``."""
    for finding in findings:
        if finding.metric == UNHANDLED_EXCEPTIONS:
            log.warning("bot_exception_seen", where=where, exception=finding.exception, message=finding.message)
        sink(finding.observation(source))
