"""What a stored verdict change says beyond its columns: the ``evidence`` JSON of a `verdicts` row.

One schema, written by the verdict log (`store.verdicts`) and read wherever stored verdicts are
shown: `canaryctl status` (`store.summary`), the report (`report.evidence`), the weekly review
(`store.review`) and the verdict log's own resume after a restart. Its fixed fields are the
policy's group (labels), its condition, why it was judged so, the action it asks for and, for a pass
whose condition is already false, since when and when it fails unless it recovers. A policy's own
extras (a rank test's p-value, ...) sit beside them. No SQLAlchemy here: the read-only paths use it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StoredEvidence:
    group: tuple[tuple[str, str], ...] = ()
    condition: str | None = None
    reason: str = ""
    action: str | None = None
    breaching_since: float | None = None
    fails_at: float | None = None

    @classmethod
    def parse(cls, text: str | None) -> StoredEvidence:
        """From the stored JSON (a row written before a field existed reads it as absent)."""
        data = json.loads(text or "{}")
        return cls(tuple((str(k), str(v)) for k, v in data.get("group") or ()), data.get("condition"),
                   data.get("reason") or "", data.get("action"), data.get("breaching_since"), data.get("fails_at"))

    def to_json(self, extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The JSON the verdict log stores: the fixed fields, then the policy's ``extras``."""
        return {"group": [list(pair) for pair in self.group], "reason": self.reason, "action": self.action,
                "condition": self.condition, "breaching_since": self.breaching_since, "fails_at": self.fails_at,
                **(extras or {})}

    @property
    def labels(self) -> dict[str, str]:
        """The group as labels: ``{"symbol": "BTCUSDT"}``."""
        return dict(self.group)

    @property
    def pending(self) -> bool:
        """Whether the condition was already false, its ``for`` not run out (meaningful on a pass)."""
        return self.breaching_since is not None
