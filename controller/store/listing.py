"""What `canaryctl`'s read commands list and show: rollouts with their rollback steps, releases,
config snapshots and audit events, read with plain SQL through a `store.readonly.Reader`.

`rollout list/show`, `release list`, `config show/diff` and `audit query` must start as fast as
`canaryctl status` (under 300 ms: `bench/cli_cold.py`), so they read like it, without SQLAlchemy
on SQLite. The rows become the records the async store builds from the same rows
(`RolloutRecord`, `ReleaseInfo`, `Snapshot`, `AuditRow`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from controller.errors import InputError, NotFoundError
from controller.store import TERMINAL
from controller.store.audit_row import AuditRow
from controller.store.readonly import Reader
from controller.store.release_record import ReleaseInfo, Snapshot, is_prefix, not_found
from controller.store.rollout_record import SELECT_ROLLOUT, RolloutRecord
from controller.store.summary import resolve

AUDIT_BATCH = 2000
"""Audit events read per query: a long trail is streamed, never held in memory."""


def rollouts(reader: Reader, *, active_only: bool = False) -> list[RolloutRecord]:
    """Every rollout (or those not finished), oldest first, as `store.rollouts.list_rollouts`."""
    if not active_only:
        return [RolloutRecord.from_row(row) for row in reader.rows(f"{SELECT_ROLLOUT} ORDER BY r.id")]
    done = {f"done{n}": state for n, state in enumerate(sorted(TERMINAL))}
    rows = reader.rows(f"{SELECT_ROLLOUT} WHERE r.state NOT IN ({', '.join(':' + k for k in done)}) ORDER BY r.id",
                       **done)
    return [RolloutRecord.from_row(row) for row in rows]


def rollout(reader: Reader, ref: str) -> RolloutRecord:
    """A rollout by id, or a release version meaning that release's latest rollout."""
    return RolloutRecord.from_row(reader.rows(f"{SELECT_ROLLOUT} WHERE r.id = :id", id=resolve(reader, ref))[0])


def releases(reader: Reader) -> list[ReleaseInfo]:
    """Every recorded release, oldest first."""
    return [ReleaseInfo.from_row(row) for row in reader.rows("SELECT * FROM releases ORDER BY id")]


def snapshot(reader: Reader, ref: str) -> Snapshot:
    """A config snapshot by full SHA-256, by a unique prefix of at least 6 hex digits, or by release
    version, as `store.releases.get_snapshot`."""
    select = "SELECT sha256, content, created_at FROM config_snapshots"
    rows = reader.rows(f"{select} WHERE sha256 = :ref", ref=ref)
    if not rows:
        rows = reader.rows(f"{select} WHERE sha256 = (SELECT config_sha256 FROM releases WHERE version = :ref)",
                           ref=ref)
    if not rows and is_prefix(ref):
        # A prefix of hex digits holds no LIKE wildcard.
        rows = reader.rows(f"{select} WHERE sha256 LIKE :pattern LIMIT 2", pattern=f"{ref}%")
        if len(rows) > 1:
            raise InputError(f"snapshot prefix {ref!r} is ambiguous; give more digits")
    if not rows:
        raise NotFoundError(not_found(ref))
    return Snapshot.from_row(rows[0])


def audit_events(reader: Reader, *, since: datetime | None = None, until: datetime | None = None,
                 kind: str | None = None, release: str | None = None, symbol: str | None = None,
                 actor: str | None = None, limit: int | None = None) -> Iterator[AuditRow]:
    """Audit events matching every filter given, oldest first, read `AUDIT_BATCH` at a time, as
    `store.audit.query`. Iterate it inside ``reader.snapshot()`` for one state of the chain."""
    conditions, params = [], {}
    if since is not None:
        conditions.append("ts >= :since")
        params["since"] = reader.instant(since)
    if until is not None:
        conditions.append("ts < :until")
        params["until"] = reader.instant(until)
    for column, value in (("kind", kind), ("release", release), ("symbol", symbol), ("actor", actor)):
        if value is not None:
            conditions.append(f"{column} = :{column}")
            params[column] = value
    where = "".join(f" AND {condition}" for condition in conditions)
    remaining, after = limit, 0
    while remaining is None or remaining > 0:
        batch = AUDIT_BATCH if remaining is None else min(AUDIT_BATCH, remaining)
        rows = reader.rows(f"SELECT * FROM audit_events WHERE seq > :after{where} ORDER BY seq LIMIT :batch",
                           after=after, batch=batch, **params)
        for row in rows:
            yield AuditRow.from_row(row)
        if remaining is not None:
            remaining -= len(rows)
        if len(rows) < batch:
            return
        after = rows[-1]["seq"]
