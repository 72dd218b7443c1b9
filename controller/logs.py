"""Structured logs: one line per event, JSON for journald and log shippers or console for people,
with secrets redacted wherever they could slip in (fields and message text alike).

Code logs an event name with key-value fields, ``log.info("daemon_ready", admin_port=9310)``,
through `get_logger`: a standard-library logger whose fields travel in the record, so that
structlog (about 100 ms to import) stays out of the start-up of commands that must answer at
once. `configure` renders every record, ours and the libraries', through structlog's formatter.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

_SECRET_FIELD = re.compile(r"(secret|password|passwd|signature|api_key|apikey|token|listen_?key)", re.I)
_SECRET_IN_TEXT = re.compile(r"(?i)\b(signature|api_?secret|api_?key|secret|password|passwd|token|listenKey|X-MBX-APIKEY)"
                             r"(['\"]?\s*[=:]\s*['\"]?)[^&\s'\",}]+")
_URL_USERINFO = re.compile(r"(://[^/\s:@]+:)[^@/\s]+@")
"""``scheme://user:PASSWORD@host``: the password of a URL's userinfo."""
REDACTED = "***"
_FIELDS = "canary_fields"
"""The LogRecord attribute that carries an event's fields (a name no LogRecord attribute clashes with)."""
_LOGGING_KEYWORDS = frozenset({"exc_info", "stack_info", "stacklevel", "extra"})


class EventLogger(logging.LoggerAdapter):
    """``log.info("order_sent", symbol="BTCUSDT", attempt=2)``: an event name and its fields.

    Fields may be named anything (``process=``, ``name=``): they are kept apart from the
    LogRecord's own attributes and merged into the rendered event by `configure`.
    """

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        fields = {key: kwargs.pop(key) for key in list(kwargs) if key not in _LOGGING_KEYWORDS}
        if fields:
            kwargs["extra"] = {**kwargs.get("extra", {}), _FIELDS: fields}
        return msg, kwargs


def get_logger(name: str) -> EventLogger:
    return EventLogger(logging.getLogger(name), {})


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The fields an `EventLogger` attached to ``record`` (empty for a plain logging call)."""
    return dict(getattr(record, _FIELDS, {}))


def _lift_fields(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    fields = event_dict.pop(_FIELDS, None)
    if fields:
        event_dict.update({key: value for key, value in fields.items() if key != "event"})
    return event_dict


def shown_url(url: str) -> str:
    """``scheme://host[:port]/path`` of ``url``: how logs, the store and status name an endpoint, without
    the userinfo, query or fragment that may carry a credential."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # not a number: not shown either
        port = None
    if port is not None:
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def scrubbed(text: str, url: str) -> str:
    """``text`` (an HTTP library's error) with ``url`` named as `shown_url` names it."""
    parts = urlsplit(url)
    text = text.replace(url, shown_url(url))
    return text.replace(parts.query, "***") if parts.query else text


def redact_text(text: str) -> str:
    text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)
    return _SECRET_IN_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def _redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key, value in event_dict.items():
        if _SECRET_FIELD.search(key) and key != "event":
            event_dict[key] = REDACTED
        elif isinstance(value, str):
            event_dict[key] = redact_text(value)
    return event_dict


def configure(level: str = "info", fmt: str = "console", stream: TextIO | None = None) -> None:
    """Route every log record to ``stream`` (stderr) as JSON lines or console lines."""
    structlog = _structlog(for_console=fmt != "json")

    stream = stream or sys.stderr
    shared = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _lift_fields,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        _redact,
    ]
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=stream.isatty()))
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer])
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # python-binance logs whole requests at DEBUG, signatures included.
    logging.getLogger("binance").setLevel(max(logging.INFO, root.level))


def _structlog(*, for_console: bool):
    """structlog, imported. Its console renderer draws tracebacks with rich, which structlog imports
    with itself whenever rich is installed: rich and pygments take about as long to import as
    structlog does, and JSON lines (the daemon's, under systemd) use none of it. For them, when
    structlog is not imported yet, rich is hidden from that one import (structlog then does without
    it), so that `canaryctl run` says READY sooner."""
    if for_console or "structlog" in sys.modules or "rich" in sys.modules:
        import structlog

        return structlog
    sys.modules["rich"] = None  # an import of rich now raises ImportError, which structlog expects
    try:
        import structlog
    finally:
        del sys.modules["rich"]
    return structlog
