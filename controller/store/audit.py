"""The audit trail: an append-only SHA-256 hash chain with a gapless sequence.

Each event's hash covers the previous event's hash and the event's canonical JSON, so editing,
deleting, inserting or reordering any row breaks the chain at that row. The one-row
``audit_head`` table holds the newest link: appends lock it (PostgreSQL: its row lock, taken by
the UPDATE that moves it or by ``FOR UPDATE``; SQLite: the ``BEGIN IMMEDIATE`` write lock), which
serialises concurrent appenders across tasks and processes, and `verify` checks the chain's tail
against it so that deleting the newest rows is detected too. An event that records a state change
is appended in the change's transaction (`append`); one that records nothing else may be
`record`ed, which commits the events of appenders that come at once in one transaction.

Retention (`canaryctl db prune`) deletes the chain's oldest events, always a prefix, after
archiving them, and appends a ``PRUNED_KIND`` anchor recording the range it took and the last
hash in it: `verify` starts from that hash at the first event kept, so the chain that is left
still verifies from its first link to its head, the anchor being one of its links.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import weakref
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from controller.canonical import canonical_json, sha256_hex
from controller.clock import Clock
from controller.errors import StoreError
from controller.store.database import Database
from controller.store.models import GENESIS_HASH, AuditEvent, AuditHead

CONTROLLER_ACTOR = "controller"
PRUNED_KIND = "audit.pruned"
"""The anchor a prune appends: payload ``audit`` = {first_seq, last_seq, count, last_hash} of the events it archived."""
_HEAD_ID = 1
_HEAD = AuditHead.__table__
_EVENTS = AuditEvent.__table__
_VERIFY_BATCH = 2000


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    ts: datetime
    actor: str
    kind: str
    subject: str
    release: str | None
    symbol: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: AuditEvent) -> AuditRecord:
        return cls(row.seq, row.ts, row.actor, row.kind, row.subject, row.release, row.symbol,
                   json.loads(row.payload), row.prev_hash, row.hash)

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "ts": _iso(self.ts), "actor": self.actor, "kind": self.kind,
                "subject": self.subject, "release": self.release, "symbol": self.symbol,
                "payload": self.payload, "prev_hash": self.prev_hash, "hash": self.hash}


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


def event_hash(prev_hash: str, *, seq: int, ts: datetime, actor: str, kind: str, subject: str,
               release: str | None, symbol: str | None, payload: str) -> str:
    """SHA-256 over the previous hash and the canonical event (payload as its stored text)."""
    event = canonical_json({"seq": seq, "ts": _iso(ts), "actor": actor, "kind": kind, "subject": subject,
                            "release": release, "symbol": symbol, "payload": payload})
    return sha256_hex(f"{prev_hash}\n{event}")


_WRITER: ContextVar[Mapping[str, str]] = ContextVar("audit_writer", default={})


def written_by(**fields: str) -> None:
    """Who writes this context's audit events, beyond the actor each one names: `canaryctl` says
    the operating-system user that runs it, so every event it writes (``release.added``,
    ``rollout.created``...) carries ``os_user`` beside the claimed name."""
    _WRITER.set(dict(fields))


async def db_role(session: AsyncSession) -> str | None:
    """The PostgreSQL role this session writes as (None on SQLite, which has no roles)."""
    conn = await session.connection()
    if conn.dialect.name != "postgresql":
        return None
    return (await session.execute(text("SELECT current_user"))).scalar_one()


async def append(session: AsyncSession, clock: Clock, *, actor: str, kind: str, subject: str,
                 payload: dict[str, Any] | None = None, release: str | None = None,
                 symbol: str | None = None) -> AuditRecord:
    """Append one event inside the caller's write transaction (`Database.write()`).

    The event commits or rolls back with whatever else the transaction records, so an
    audited change and its audit event are never separated.
    """
    event = _Event.of(clock, actor=actor, kind=kind, subject=subject, payload=payload, release=release, symbol=symbol)
    return (await _append_all(session, [event]))[0]


async def record(db: Database, clock: Clock, *, actor: str, kind: str, subject: str,
                 payload: dict[str, Any] | None = None, release: str | None = None,
                 symbol: str | None = None) -> AuditRecord:
    """Append one event that records nothing else, in a write transaction of the store's own; returns
    once it is committed (the error of that transaction otherwise).

    Events recorded at once through one `Database` (one guarded view) share a transaction (group
    commit): a batch of appenders pays for one write transaction, and each of them still returns only
    after its event is committed. Cancelling the caller does not take its event back. A guarded view
    checks its guard once a batch (a refused batch is one refusal). Not for a caller inside a write
    transaction: the batch's transaction would wait for the caller's (use `append` there).
    """
    event = _Event.of(clock, actor=actor, kind=kind, subject=subject, payload=payload, release=release, symbol=symbol)
    loop = asyncio.get_running_loop()
    group = _GROUPS.get(db)
    if group is None or group.loop is not loop:
        group = _GROUPS[db] = _Group(loop)
    done: asyncio.Future[AuditRecord] = loop.create_future()
    group.waiting.append((event, done))
    if group.committer is None:
        group.committer = loop.create_task(_commit_groups(db, group))
    return await asyncio.shield(done)


@dataclass
class _Group:
    """The events waiting for the next group transaction of one `Database`, and the task committing them."""

    loop: asyncio.AbstractEventLoop
    waiting: list[tuple[_Event, asyncio.Future[AuditRecord]]] = field(default_factory=list)
    committer: asyncio.Task[None] | None = None


_GROUPS: weakref.WeakKeyDictionary[Database, _Group] = weakref.WeakKeyDictionary()


async def _commit_groups(db: Database, group: _Group) -> None:
    """Commit what waits, one transaction per batch, until nothing does: appenders that come while a
    batch commits form the next one."""
    try:
        while group.waiting:
            batch, group.waiting = group.waiting, []
            try:
                async with db.write() as session:
                    records = await _append_all(session, [event for event, _ in batch])
            except BaseException as error:  # every event of the batch is rolled back: each appender hears why
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error if isinstance(error, Exception) else StoreError(
                            f"the audit transaction was interrupted ({type(error).__name__})"))
                if not isinstance(error, Exception):
                    raise
                continue
            for (_, done), written in zip(batch, records, strict=True):
                if not done.done():
                    done.set_result(written)
    finally:
        group.committer = None
        for _, done in group.waiting:  # only when the task itself was cancelled
            if not done.done():
                done.set_exception(StoreError("the audit transaction was interrupted (its task was cancelled)"))
        group.waiting = []


@dataclass(frozen=True)
class _Event:
    """An event before it has a place in the chain: stamped and serialised when its appender asks."""

    ts: datetime
    actor: str
    kind: str
    subject: str
    release: str | None
    symbol: str | None
    writer: Mapping[str, str]
    payload: dict[str, Any]

    @classmethod
    def of(cls, clock: Clock, *, actor: str, kind: str, subject: str, payload: dict[str, Any] | None,
           release: str | None, symbol: str | None) -> _Event:
        # A copy as the event is now (a group commit writes it later), taken through its stored form: a
        # payload that cannot be stored fails its own appender, not the batch it would have joined.
        stored = json.loads(canonical_json(payload or {}))
        return cls(clock.now().astimezone(UTC), actor, kind, subject, release, symbol, _WRITER.get(), stored)

    def payload_text(self, role: str | None) -> str:
        # Who really wrote it, where the store can tell: what the event says first, then the writer's
        # context and the database role (on PostgreSQL) where the event does not say it.
        return canonical_json({**self.writer, **({"db_role": role} if role else {}), **self.payload})


_HEADS: weakref.WeakKeyDictionary[Engine, tuple[int, str]] = weakref.WeakKeyDictionary()
"""The newest link each engine wrote or read: a hint, checked by the head's own UPDATE under the write lock."""


async def _append_all(session: AsyncSession, events: list[_Event]) -> list[AuditRecord]:
    """Link ``events`` onto the chain's head in the session's write transaction.

    The head is locked before anything is written (SQLite: the transaction's write lock, taken at its
    BEGIN; PostgreSQL: the head row's lock), which serialises appenders across tasks and processes.
    The head this engine last saw is tried first: the UPDATE that moves the head matches only if the
    stored head is still that one (its row lock held from then on). When another writer moved it (or
    a rolled-back transaction left the hint stale), the head is read under ``FOR UPDATE`` and the events
    linked onto it: a hint never forks the chain.
    """
    conn = await session.connection()
    if conn.dialect.name == "sqlite" and not conn.sync_connection.get_execution_options().get("write_lock"):
        raise RuntimeError("audit.append needs a write transaction: use Database.write()")
    role = await db_role(session)
    texts = [event.payload_text(role) for event in events]
    engine = conn.sync_engine
    records = None
    known = _HEADS.get(engine)
    if known is not None:
        records = _link(known, events, texts)
        if not await _move_head(conn, known, records[-1]):
            records = None
    if records is None:
        head = (await conn.execute(
            select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == _HEAD_ID).with_for_update())).one()
        records = _link((head.seq, head.hash), events, texts)
        await conn.execute(update(_HEAD).where(_HEAD.c.id == _HEAD_ID).values(seq=records[-1].seq, hash=records[-1].hash))
    await _insert(conn, records, texts)
    _HEADS[engine] = (records[-1].seq, records[-1].hash)
    return records


# On SQLite the two statements of an append go to aiosqlite's connection itself: one trip to its
# thread each, where SQLAlchemy's cursor takes three (open, execute, close), and a trip is what an
# append waits on when the machine is busy. Same connection, same transaction.
_MOVE_HEAD_SQLITE = "UPDATE audit_head SET seq = ?, hash = ? WHERE id = ? AND seq = ? AND hash = ?"
_INSERT_SQLITE = ("INSERT INTO audit_events (seq, ts, actor, kind, subject, release, symbol, payload, prev_hash, hash) "
                  "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


async def _move_head(conn: AsyncConnection, known: tuple[int, str], newest: AuditRecord) -> bool:
    """Move the head from ``known`` to ``newest``; False (nothing written) if the stored head is another."""
    if conn.dialect.name == "sqlite":
        driver = (await conn.get_raw_connection()).driver_connection
        moved = await _sqlite(_MOVE_HEAD_SQLITE, driver.execute(
            _MOVE_HEAD_SQLITE, (newest.seq, newest.hash, _HEAD_ID, known[0], known[1])))
        return moved.rowcount == 1
    moved = await conn.execute(
        update(_HEAD).where(_HEAD.c.id == _HEAD_ID, _HEAD.c.seq == known[0], _HEAD.c.hash == known[1])
        .values(seq=newest.seq, hash=newest.hash))
    return moved.rowcount == 1


async def _insert(conn: AsyncConnection, records: list[AuditRecord], texts: list[str]) -> None:
    if conn.dialect.name == "sqlite":
        driver = (await conn.get_raw_connection()).driver_connection
        # The column's own conversion, as SQLAlchemy binds it (naive UTC text, always with microseconds).
        stored_ts = _EVENTS.c.ts.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
        await _sqlite(_INSERT_SQLITE, driver.executemany(_INSERT_SQLITE, [
            (r.seq, stored_ts(r.ts), r.actor, r.kind, r.subject, r.release, r.symbol, text, r.prev_hash, r.hash)
            for r, text in zip(records, texts, strict=True)]))
        return
    await conn.execute(insert(_EVENTS), [
        {"seq": r.seq, "ts": r.ts, "actor": r.actor, "kind": r.kind, "subject": r.subject, "release": r.release,
         "symbol": r.symbol, "payload": text, "prev_hash": r.prev_hash, "hash": r.hash}
        for r, text in zip(records, texts, strict=True)])


async def _sqlite(statement: str, running: Awaitable[Any]) -> Any:
    """A statement sent to aiosqlite, its error raised as SQLAlchemy would have raised it."""
    try:
        return await running
    except sqlite3.Error as error:
        raise DBAPIError.instance(statement, None, error, sqlite3.Error) from None


def _link(head: tuple[int, str], events: list[_Event], texts: list[str]) -> list[AuditRecord]:
    """The events as links after ``head``: numbered on from it, each hash covering the one before."""
    seq, prev_hash = head
    records = []
    for event, payload_text in zip(events, texts, strict=True):
        seq += 1
        digest = event_hash(prev_hash, seq=seq, ts=event.ts, actor=event.actor, kind=event.kind,
                            subject=event.subject, release=event.release, symbol=event.symbol, payload=payload_text)
        records.append(AuditRecord(seq, event.ts, event.actor, event.kind, event.subject, event.release,
                                   event.symbol, json.loads(payload_text), prev_hash, digest))
        prev_hash = digest
    return records


@dataclass(frozen=True)
class ChainReport:
    """The outcome of `verify`: ok, or the first sequence number where the chain breaks."""

    checked: int
    head_seq: int
    head_hash: str
    first_bad_seq: int | None = None
    reason: str | None = None
    anchor_seq: int | None = None
    """The prune anchor the walk started from (None: from the genesis link)."""
    archived_through: int | None = None
    """The last event seq a prune archived and deleted (None: nothing pruned)."""

    @property
    def ok(self) -> bool:
        return self.first_bad_seq is None


async def verify(db: Database) -> ChainReport:
    """Walk the whole chain in sequence order, in bounded batches: from the genesis link, or, when a
    prune archived the oldest events, from the hash its anchor recorded."""
    async with db.read() as session:
        head = (await session.execute(select(AuditHead).where(AuditHead.id == _HEAD_ID))).scalar_one()
        expected_seq, prev_hash, checked = 1, GENESIS_HASH, 0
        first = (await session.execute(select(func.min(AuditEvent.seq)))).scalar_one()
        anchor = None
        if first is not None and first > 1:
            anchor = await _anchor_before(session, first)
            if anchor is None:
                return ChainReport(0, head.seq, head.hash, 1, f"events 1..{first - 1} are missing and no prune "
                                   "anchor records them as archived (deleted from the start of the chain)")
            expected_seq, prev_hash = first, anchor[1]
        pruned = {"anchor_seq": anchor[0], "archived_through": first - 1} if anchor else {}
        while True:
            rows = (await session.execute(
                select(AuditEvent).where(AuditEvent.seq >= expected_seq).order_by(AuditEvent.seq).limit(_VERIFY_BATCH)
            )).scalars().all()
            for row in rows:
                bad = _check_link(row, expected_seq, prev_hash)
                if bad:
                    return ChainReport(checked, head.seq, head.hash, *bad, **pruned)
                expected_seq, prev_hash, checked = row.seq + 1, row.hash, checked + 1
            if len(rows) < _VERIFY_BATCH:
                break
        last_seq = expected_seq - 1
        if head.seq > last_seq:
            return ChainReport(checked, head.seq, head.hash, last_seq + 1,
                               f"events {last_seq + 1}..{head.seq} are missing (deleted from the end of the chain)",
                               **pruned)
        if head.seq < last_seq or head.hash != prev_hash:
            return ChainReport(checked, head.seq, head.hash, min(head.seq + 1, last_seq),
                               "the chain's tail does not match the recorded head (rows appended outside the controller, or the head edited)",
                               **pruned)
        return ChainReport(checked, head.seq, head.hash, **pruned)


async def _anchor_before(session: AsyncSession, first: int) -> tuple[int, str] | None:
    """(seq, last archived hash) of the prune anchor whose range ends just before ``first``. The
    anchor is itself a link from ``first`` on: the walk from ``first`` verifies it (a forged or edited
    anchor breaks the chain where it sits)."""
    rows = (await session.execute(
        select(AuditEvent).where(AuditEvent.kind == PRUNED_KIND, AuditEvent.seq >= first).order_by(AuditEvent.seq.desc())
    )).scalars().all()
    for row in rows:
        try:
            archived = json.loads(row.payload)["audit"]
            if archived["last_seq"] == first - 1 and isinstance(archived["last_hash"], str):
                return row.seq, archived["last_hash"]
        except (ValueError, KeyError, TypeError):
            continue  # not an anchor's payload: the walk finds the row edited, or it is not one
    return None


def _check_link(row: AuditEvent, expected_seq: int, prev_hash: str) -> tuple[int, str] | None:
    if row.seq != expected_seq:
        return expected_seq, f"event {expected_seq} is missing (deleted, or the chain renumbered)"
    if row.prev_hash != prev_hash:
        return row.seq, "its previous-hash does not match the event before it (inserted or reordered)"
    recomputed = event_hash(row.prev_hash, seq=row.seq, ts=row.ts, actor=row.actor, kind=row.kind,
                            subject=row.subject, release=row.release, symbol=row.symbol, payload=row.payload)
    if recomputed != row.hash:
        return row.seq, "its content does not match its hash (edited)"
    return None


@dataclass(frozen=True)
class AuditFilter:
    since: datetime | None = None
    until: datetime | None = None
    kind: str | None = None
    release: str | None = None
    symbol: str | None = None
    actor: str | None = None
    subject: str | None = None
    limit: int | None = None


async def query(db: Database, flt: AuditFilter) -> AsyncIterator[AuditRecord]:
    """Events matching every given filter, oldest first, streamed in batches."""
    conditions = []
    if flt.since is not None:
        conditions.append(AuditEvent.ts >= flt.since)
    if flt.until is not None:
        conditions.append(AuditEvent.ts < flt.until)
    for column, value in ((AuditEvent.kind, flt.kind), (AuditEvent.release, flt.release),
                          (AuditEvent.symbol, flt.symbol), (AuditEvent.actor, flt.actor),
                          (AuditEvent.subject, flt.subject)):
        if value is not None:
            conditions.append(column == value)
    remaining = flt.limit
    after = 0
    async with db.read() as session:
        while remaining is None or remaining > 0:
            batch = _VERIFY_BATCH if remaining is None else min(_VERIFY_BATCH, remaining)
            rows = (await session.execute(
                select(AuditEvent).where(AuditEvent.seq > after, *conditions).order_by(AuditEvent.seq).limit(batch)
            )).scalars().all()
            for row in rows:
                yield AuditRecord.from_row(row)
            if remaining is not None:
                remaining -= len(rows)
            if len(rows) < batch:
                return
            after = rows[-1].seq
