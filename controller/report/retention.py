"""Retention: rows older than a cut are archived to a checksummed file, then deleted, in one transaction.

What goes: verdict changes, stage runs and acknowledged operator commands of finished rollouts,
and the audit chain's oldest events (a prefix: the chain must stay a chain). What stays: every
row of a rollout still under way (and the audit events from its first one on), the rollouts,
releases, snapshots, deployments and fills. The archive is the report's format (a tar.gz with a
SHA-256 manifest, `canaryctl report verify` checks it):

    MANIFEST.sha256            every other member's SHA-256
    prune.json                 the cut, the counts, the audit range archived
    audit/excerpt.jsonl        the archived audit events, hashes included (verify checks their chain)
    rows/TABLE.jsonl           the archived rows of each table, every column

In the transaction that deletes them, an anchor audit event (`audit.PRUNED_KIND`) records the
archived range and its last hash, so `canaryctl audit verify` walks the kept chain from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from controller.clock import Clock
from controller.errors import StoreError, InputError
from controller.report import archive
from controller.report.document import AUDIT_EXCERPT, audit_line, iso, safe_name
from controller.store import TERMINAL, audit
from controller.store.audit_row import AuditRow
from controller.store.database import Database, display_url
from controller.store.models import AuditEvent, OperatorCommand, Rollout, StageRun, VerdictChange

FORMAT = "canary-prune/1"
DEFAULT_OLDER_THAN = "90d"
PRUNE_JSON = "prune.json"
TABLES = ("verdicts", "stage_runs", "operator_commands")
"""The tables a prune deletes rows of, besides the audit chain, in the order they are deleted (foreign keys)."""
_BATCH = 2000


class ArchiveUnwritable(InputError):
    """The archive cannot be written where it was asked for: nothing is deleted."""


@dataclass(frozen=True)
class Pruned:
    cut: datetime
    rows: dict[str, int]
    """Rows archived and deleted (or, on a dry run, that would be), by table; ``audit_events`` too."""
    audit_range: tuple[int, int] | None
    """First and last audit seq archived."""
    kept_active: tuple[int, ...]
    """Rollouts under way, whose rows were kept whatever their age."""
    dry_run: bool
    written: archive.Written | None = None
    anchor_seq: int | None = None

    @property
    def total(self) -> int:
        return sum(self.rows.values())

    def to_json(self) -> dict[str, Any]:
        return {"cut": iso(self.cut), "dry_run": self.dry_run, "rows": self.rows, "total": self.total,
                "audit": None if self.audit_range is None else {"first_seq": self.audit_range[0],
                                                                "last_seq": self.audit_range[1]},
                "kept_active_rollouts": list(self.kept_active),
                "archive": None if self.written is None else {"path": str(self.written.path),
                                                              "sha256": self.written.sha256,
                                                              "bytes": self.written.bytes},
                "anchor_seq": self.anchor_seq}


@dataclass
class _Selection:
    rows: dict[str, list[Any]] = field(default_factory=dict)
    audit: list[AuditEvent] = field(default_factory=list)


def default_archive(state_dir: Path, cut: datetime) -> Path:
    """Where a prune archives when not told: ``STATE/pruned/prune-CUT.tar.gz``."""
    return state_dir / "pruned" / f"prune-{cut.strftime('%Y%m%dT%H%M%SZ')}.tar.gz"


def check_target(target: Path) -> None:
    """Refuse, before anything is read or deleted, an archive path that cannot be written."""
    if target.exists():
        raise ArchiveUnwritable(f"archive {target} exists; choose another name (a prune never replaces an archive)")
    folder = target.parent
    if folder.exists() and not folder.is_dir():
        raise ArchiveUnwritable(f"archive {target}: {folder} is not a folder")
    if not folder.is_dir():
        raise ArchiveUnwritable(f"archive {target}: folder {folder} does not exist")
    try:
        probe = folder / f".{target.name}.probe"
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise ArchiveUnwritable(f"archive {target}: folder {folder} is not writable ({exc.strerror})") from None


async def prune(db: Database, clock: Clock, *, older_than: float, target: Path | None, dry_run: bool = False,
                actor: str = audit.CONTROLLER_ACTOR,
                progress: Callable[[str], None] = lambda text: None) -> Pruned:
    """Archive to ``target`` and delete every prunable row older than ``older_than`` seconds before now,
    or, on a dry run, count them. Nothing is deleted unless the archive was written whole first."""
    if not older_than > 0:
        raise InputError(f"--older-than must be a positive duration, not {older_than:g} s")
    cut = clock.now() - timedelta(seconds=older_than)
    if not dry_run:
        if target is None:
            raise InputError("a prune needs an archive file to write before it deletes anything")
        check_target(target)
    # What goes is read first, and the archive written, outside any write transaction: a large
    # archive takes a while, and the daemon must go on writing meanwhile. What goes cannot change in
    # between (finished rollouts' rows, acknowledged commands, the chain's prefix); a prune that ran
    # meanwhile is caught before anything is deleted.
    async with db.read() as session:
        active = tuple((await session.execute(
            select(Rollout.id).where(Rollout.state.not_in(TERMINAL)).order_by(Rollout.id))).scalars().all())
        chosen = await _select(session, cut, active, progress)
    counts = {name: len(rows) for name, rows in chosen.rows.items()} | {"audit_events": len(chosen.audit)}
    audit_range = (chosen.audit[0].seq, chosen.audit[-1].seq) if chosen.audit else None
    if dry_run or not any(counts.values()):
        return Pruned(cut, counts, audit_range, active, dry_run)
    written = archive.write_members(target, safe_name(f"prune-{cut.strftime('%Y%m%dT%H%M%SZ')}"),
                                    _members(db, cut, chosen, counts, active),
                                    mtime=int(clock.time()), progress=progress)
    async with db.write() as session:
        first = (await session.execute(select(func.min(AuditEvent.seq)))).scalar_one()
        if audit_range is not None and first != audit_range[0]:
            raise StoreError(f"the audit chain was pruned meanwhile (it now starts at {first}, not "
                             f"{audit_range[0]}): nothing deleted; {written.path} holds rows another prune removed")
        for name in TABLES:
            await _delete(session, name, chosen.rows[name], progress)
        if chosen.audit:
            progress(f"deleting audit events {audit_range[0]}..{audit_range[1]}")
            await session.execute(delete(AuditEvent).where(AuditEvent.seq <= audit_range[1]))
        last = chosen.audit[-1] if chosen.audit else None
        anchor = await audit.append(
            session, clock, actor=actor, kind=audit.PRUNED_KIND, subject="audit",
            payload={"cut": iso(cut), "rows": counts, "archive": {"file": written.path.name, "sha256": written.sha256},
                     "audit": {"first_seq": audit_range[0], "last_seq": audit_range[1], "count": len(chosen.audit),
                               "last_hash": last.hash} if last else None})
        progress(f"committing: {sum(counts.values())} rows deleted")
    return Pruned(cut, counts, audit_range, active, False, written, anchor.seq)


async def _select(session: AsyncSession, cut: datetime, active: Sequence[int],
                  progress: Callable[[str], None]) -> _Selection:
    chosen = _Selection()
    finished = ~VerdictChange.rollout_id.in_(active) if active else true()
    chosen.rows["verdicts"] = await _batched(session, "verdicts", VerdictChange, VerdictChange.id,
                                             [VerdictChange.evaluated_at < cut, finished], progress)
    # A stage run goes with its rollout's other old rows, unless a verdict that stays points at it.
    kept_verdict = select(VerdictChange.id).where(VerdictChange.stage_run_id == StageRun.id,
                                                  VerdictChange.evaluated_at >= cut).exists()
    chosen.rows["stage_runs"] = await _batched(
        session, "stage_runs", StageRun, StageRun.id,
        [StageRun.finished_at.is_not(None), StageRun.finished_at < cut, ~kept_verdict,
         ~StageRun.rollout_id.in_(active) if active else true()], progress)
    # An unacknowledged command may still be read by the daemon: it stays.
    chosen.rows["operator_commands"] = await _batched(
        session, "operator_commands", OperatorCommand, OperatorCommand.id,
        [OperatorCommand.created_at < cut, OperatorCommand.acked_at.is_not(None),
         (OperatorCommand.rollout_id.is_(None) | ~OperatorCommand.rollout_id.in_(active)) if active else true()],
        progress)
    # The audit chain loses a prefix only: up to the first event that is recent, or of a rollout under way.
    stop = select(func.min(AuditEvent.seq)).where(
        (AuditEvent.ts >= cut) | AuditEvent.subject.in_([f"rollout:{n}" for n in active]))
    first_kept = (await session.execute(stop)).scalar_one()
    bound = [AuditEvent.seq < first_kept] if first_kept is not None else []
    chosen.audit = await _batched(session, "audit events", AuditEvent, AuditEvent.seq, bound, progress)
    return chosen


async def _batched(session: AsyncSession, what: str, model, key, conditions, progress) -> list[Any]:
    total = (await session.execute(select(func.count()).select_from(model).where(*conditions))).scalar_one()
    rows: list[Any] = []
    while len(rows) < total:
        after = [key > getattr(rows[-1], key.key)] if rows else []
        batch = (await session.execute(
            select(model).where(*conditions, *after).order_by(key).limit(_BATCH))).scalars().all()
        if not batch:
            break
        rows.extend(batch)
        progress(f"reading {what}: {len(rows)}/{total}")
    return rows


async def _delete(session: AsyncSession, name: str, rows: list[Any], progress) -> None:
    model = {"verdicts": VerdictChange, "stage_runs": StageRun, "operator_commands": OperatorCommand}[name]
    ids = [row.id for row in rows]
    for start in range(0, len(ids), _BATCH):
        batch = ids[start:start + _BATCH]
        deleted = (await session.execute(delete(model).where(model.id.in_(batch)))).rowcount
        if deleted != len(batch):  # another prune took some: the transaction rolls back whole
            raise StoreError(f"{name} were pruned meanwhile ({deleted} of {len(batch)} rows left): nothing deleted")
        progress(f"deleting {name}: {min(start + _BATCH, len(ids))}/{len(ids)}")


def _members(db: Database, cut: datetime, chosen: _Selection, counts: dict[str, int],
             active: Sequence[int]) -> list[archive.Member]:
    events = [audit_line(AuditRow.from_row(e)) for e in chosen.audit]
    summary = {"format": FORMAT, "cut": iso(cut), "database": display_url(db.url), "rows": counts,
               "kept_active_rollouts": list(active),
               "audit": {"first_seq": events[0]["seq"], "last_seq": events[-1]["seq"], "count": len(events),
                         "first_prev_hash": events[0]["prev_hash"], "last_hash": events[-1]["hash"]}
               if events else None}
    out = [archive.Member(PRUNE_JSON, archive.json_bytes(summary)),
           archive.Member(AUDIT_EXCERPT, archive.jsonl(events))]
    out += [archive.Member(f"rows/{name}.jsonl", archive.jsonl(_row(r) for r in chosen.rows[name])) for name in TABLES]
    return sorted(out, key=lambda m: m.name)


def _row(row: Any) -> dict[str, Any]:
    """Every column of ``row`` as JSON: times in ISO 8601 UTC, decimals as their exact text, a float
    that is no number as its name."""
    out = {}
    for column in row.__table__.columns:
        value = getattr(row, column.key)
        if isinstance(value, datetime):
            value = iso(value)
        elif isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        out[column.name] = value
    return out
