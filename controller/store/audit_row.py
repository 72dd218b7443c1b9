"""An audit event exactly as stored: what the report's and the weekly review's archives keep, so that
their excerpt of the chain can be verified again (`store.audit.AuditRecord` is the decoded view the
rest of the controller reads). It imports no SQLAlchemy: `canaryctl review` reads through
`store.readonly` and starts in a blink.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from controller.store.readonly import when


@dataclass(frozen=True)
class AuditRow:
    """One link of the chain as stored: ``payload`` is the exact text its hash covers."""

    seq: int
    ts: datetime
    actor: str
    kind: str
    subject: str
    release: str | None
    symbol: str | None
    payload: str
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: Any) -> Self:
        """From a row with the audit table's columns, as a mapping (`store.readonly`) or with attributes
        (an ORM row); a timestamp in text (SQLite read without SQLAlchemy) is parsed."""
        get = row.__getitem__ if isinstance(row, Mapping) else lambda name: getattr(row, name)
        return cls(get("seq"), when(get("ts")), get("actor"), get("kind"), get("subject"), get("release"),
                   get("symbol"), get("payload"), get("prev_hash"), get("hash"))

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.payload)
