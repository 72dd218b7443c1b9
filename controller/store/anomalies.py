"""A rollout's anomaly log: what operators noted while it ran, and how each anomaly was resolved.

The audit chain is the store: a note is an ``anomaly.noted`` event whose sequence number is the
anomaly's id, a resolution an ``anomaly.resolved`` event naming that id; both have the rollout as
subject, so the report's excerpt of the chain carries them. `fold` reads either from events, so
`canaryctl status` (plain SQL, no SQLAlchemy: see `store.readonly`) and the report read them alike;
SQLAlchemy is imported inside the functions that write, for that reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from controller.errors import InputError

if TYPE_CHECKING:
    from controller.clock import Clock
    from controller.store.database import Database

NOTED = "anomaly.noted"
RESOLVED = "anomaly.resolved"
KINDS = (NOTED, RESOLVED)
MAX_TEXT = 2000
"""The longest note or resolution, in characters: a log line, not a document."""


@dataclass(frozen=True)
class Resolution:
    seq: int
    actor: str
    at: datetime
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"event": self.seq, "by": self.actor, "at": self.at.isoformat(), "text": self.text}


@dataclass(frozen=True)
class Anomaly:
    """One noted anomaly; its ``id`` is the sequence number of its ``anomaly.noted`` event."""

    id: int
    rollout_id: int
    stage: str | None
    actor: str
    at: datetime
    text: str
    resolution: Resolution | None = None

    @property
    def open(self) -> bool:
        return self.resolution is None

    @property
    def label(self) -> str:
        """How a gate names it: ``anomaly 12 (alice: fills look wrong on ETHUSDT)``."""
        text = self.text if len(self.text) <= 60 else self.text[:59] + "…"
        return f"anomaly {self.id} ({self.actor}: {text})"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "rollout": self.rollout_id, "stage": self.stage, "by": self.actor,
                "at": self.at.isoformat(), "text": self.text, "open": self.open,
                "resolution": self.resolution.to_json() if self.resolution else None}


def fold(rollout_id: int, events: Iterable[tuple[int, datetime, str, str, Mapping[str, Any]]]) -> list[Anomaly]:
    """The rollout's anomalies, oldest first, from its events ``(seq, ts, actor, kind, payload)`` in
    sequence order; events of other kinds are ignored."""
    found: dict[int, Anomaly] = {}
    for seq, ts, actor, kind, payload in events:
        if kind == NOTED:
            found[seq] = Anomaly(seq, rollout_id, payload.get("stage"), actor, ts, str(payload.get("text", "")))
        elif kind == RESOLVED:
            noted = found.get(payload.get("anomaly"))
            if noted is not None and noted.resolution is None:
                found[noted.id] = Anomaly(noted.id, rollout_id, noted.stage, noted.actor, noted.at, noted.text,
                                          Resolution(seq, actor, ts, str(payload.get("text", ""))))
    return list(found.values())


def checked_text(text: str, option: str) -> str:
    """A note's text as recorded: printable, not empty, at most `MAX_TEXT` characters; refused otherwise."""
    clean = "".join(ch if ch.isprintable() else (" " if ch in "\n\r\t" else "") for ch in text).strip()
    if not clean:
        raise InputError(f"{option}: the text is empty; say what was seen (or how it was resolved)")
    if len(clean) > MAX_TEXT:
        raise InputError(f"{option}: the text is {len(clean)} characters; expected at most {MAX_TEXT}")
    return clean


async def _events(session, rollout_id: int) -> list[tuple[int, datetime, str, str, dict[str, Any]]]:
    from sqlalchemy import select

    from controller.store.models import AuditEvent

    rows = (await session.execute(select(AuditEvent).where(AuditEvent.kind.in_(KINDS),
                                                           AuditEvent.subject == f"rollout:{rollout_id}")
                                  .order_by(AuditEvent.seq))).scalars().all()
    return [(r.seq, r.ts, r.actor, r.kind, json.loads(r.payload)) for r in rows]


async def rollout_anomalies(db: Database, rollout_id: int) -> list[Anomaly]:
    """Every anomaly of the rollout, open or resolved, oldest first."""
    async with db.read() as session:
        return fold(rollout_id, await _events(session, rollout_id))


async def open_anomalies(db: Database, rollout_id: int) -> list[Anomaly]:
    return [a for a in await rollout_anomalies(db, rollout_id) if a.open]


async def note_anomaly(db: Database, clock: Clock, *, rollout_id: int, release: str, stage: str, actor: str,
                       text: str) -> Anomaly:
    """Log an anomaly on the rollout (an audited event); its id is the event's sequence number."""
    from controller.store import audit

    text = checked_text(text, "--anomaly")
    event = await audit.record(db, clock, actor=actor, kind=NOTED, subject=f"rollout:{rollout_id}",
                               release=release, payload={"stage": stage, "text": text})
    return Anomaly(event.seq, rollout_id, stage, actor, event.ts, text)


async def resolve_anomaly(db: Database, clock: Clock, *, rollout_id: int, release: str, anomaly_id: int,
                          actor: str, text: str) -> Anomaly:
    """Record how an open anomaly of the rollout was resolved. Refused, with nothing written, when the
    id names no anomaly of this rollout or one already resolved (checked under the write lock)."""
    from controller.store import audit

    text = checked_text(text, "--text")
    async with db.write() as session:
        known = {a.id: a for a in fold(rollout_id, await _events(session, rollout_id))}
        noted = known.get(anomaly_id)
        if noted is None:
            listed = ", ".join(str(i) for i, a in known.items() if a.open) or "none"
            raise InputError(f"--resolves {anomaly_id}: rollout {rollout_id} has no anomaly {anomaly_id} "
                             f"(its open anomalies: {listed}; `canaryctl status {rollout_id}` lists them)")
        if noted.resolution is not None:
            done = noted.resolution
            raise InputError(f"--resolves {anomaly_id}: anomaly {anomaly_id} is already resolved, by {done.actor} "
                             f"at {done.at.isoformat(timespec='seconds')}: {done.text}")
        event = await audit.append(session, clock, actor=actor, kind=RESOLVED, subject=f"rollout:{rollout_id}",
                                   release=release, payload={"anomaly": anomaly_id, "text": text})
    return Anomaly(noted.id, rollout_id, noted.stage, noted.actor, noted.at, noted.text,
                   Resolution(event.seq, actor, event.ts, text))
