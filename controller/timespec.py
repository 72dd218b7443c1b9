"""Durations ("48h", "90s", "1d12h") and instants ("2026-11-26T08:00Z", "2h" meaning 2 h ago)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``48h``, ``1d12h``, ``250ms``; raises ValueError."""
    compact = text.strip().replace(" ", "")
    parts = _PART.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration; expected e.g. 90s, 15m, 48h, 1d12h, 250ms")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_instant(text: str, now: datetime) -> datetime:
    """An ISO 8601 time (UTC when no offset is given) or a duration meaning that long ago."""
    try:
        seconds = parse_duration(text)
    except ValueError:
        pass
    else:
        try:
            return now - timedelta(seconds=seconds)
        except OverflowError:
            raise ValueError(f"{text!r} ago is before any date this tool handles") from None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{text!r} is neither an ISO 8601 time (2026-11-26T08:00:00Z) nor a duration ago (2h, 1d)") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
