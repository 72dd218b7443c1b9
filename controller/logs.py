"""Structured logs: one line per event, JSON for journald and log shippers or console for people,
with secrets redacted wherever they could slip in (fields and message text alike).

Code logs through the standard library (`logging.getLogger(__name__)`, event name first and
``key=value`` fields); this module renders every record, ours and the libraries', through
structlog's formatter.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any, TextIO

_SECRET_FIELD = re.compile(r"(secret|password|passwd|signature|api_key|apikey|token|listen_?key)", re.I)
_SECRET_IN_TEXT = re.compile(r"(?i)\b(signature|api_?secret|password|token|listenKey|X-MBX-APIKEY)(['\"]?\s*[=:]\s*['\"]?)[^&\s'\",}]+")
REDACTED = "***"


def redact_text(text: str) -> str:
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
    import structlog

    stream = stream or sys.stderr
    shared = [
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
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
