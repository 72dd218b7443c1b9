"""How events reach the chain: the head another writer moved is always found under the write lock,
and events recorded at once share a transaction without losing one appender's outcome to another."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from controller.store import audit
from controller.store.audit import AuditFilter
from controller.store.database import Database, resolve_url
from controller.store.schema import upgrade
from tests.support.checkout import REPO


async def _append(db, clock, subject):
    async with db.write() as session:
        return await audit.append(session, clock, actor="alice", kind="test.event", subject=subject)


async def test_an_append_after_a_rolled_back_one_links_onto_the_stored_head(db, clock):
    first = await _append(db, clock, "kept")
    with pytest.raises(ZeroDivisionError):
        async with db.write() as session:
            await audit.append(session, clock, actor="alice", kind="test.event", subject="rolled back")
            1 / 0
    after = await _append(db, clock, "after")
    assert (after.seq, after.prev_hash) == (2, first.hash)
    report = await audit.verify(db)
    assert report.ok and report.checked == 2 and report.head_hash == after.hash


async def test_writers_with_engines_of_their_own_link_onto_each_others_events(db, db_url, clock):
    other = Database(resolve_url(db_url))  # another engine on the same store: another process, in effect
    try:
        written = []
        for n in range(6):
            written.append(await _append(db if n % 2 == 0 else other, clock, f"event:{n}"))
    finally:
        await other.close()
    assert [r.seq for r in written] == [1, 2, 3, 4, 5, 6]
    assert all(b.prev_hash == a.hash for a, b in zip(written, written[1:]))
    report = await audit.verify(db)
    assert report.ok and report.checked == 6


async def test_events_recorded_at_once_share_one_transaction_and_each_returns_its_link(db, clock):
    commits = []
    event.listen(db.engine.sync_engine, "commit", lambda conn: commits.append(conn))
    records = await asyncio.gather(*(audit.record(db, clock, actor="alice", kind="test.grouped", subject=f"s{n}",
                                                  payload={"n": n}) for n in range(8)))
    assert len(commits) == 1
    assert [r.seq for r in records] == list(range(1, 9)) and [r.subject for r in records] == [f"s{n}" for n in range(8)]
    assert all(b.prev_hash == a.hash for a, b in zip(records, records[1:]))
    assert [r.payload["n"] for r in records] == list(range(8))
    report = await audit.verify(db)
    assert report.ok and report.checked == 8 and report.head_hash == records[-1].hash


async def test_recorded_events_keep_the_writer_of_their_own_appender(db, clock):
    async def as_user(name):
        audit.written_by(os_user=name)
        return await audit.record(db, clock, actor=name, kind="test.grouped", subject=name)

    records = await asyncio.gather(as_user("alice"), as_user("bob"), audit.record(db, clock, actor="c", kind="k", subject="c"))
    assert [r.payload.get("os_user") for r in records] == ["alice", "bob", None]


class _Refusing:
    def __init__(self):
        self.refusals = []

    async def check(self, session):
        raise PermissionError("fenced")

    async def refused(self, db, error):
        self.refusals.append(error)


async def test_a_refused_group_transaction_fails_every_appender_and_writes_nothing(db, clock):
    guard = _Refusing()
    guarded = db.guarded(guard)
    outcomes = await asyncio.gather(*(audit.record(guarded, clock, actor="a", kind="k", subject=f"s{n}") for n in range(3)),
                                    return_exceptions=True)
    assert all(isinstance(outcome, PermissionError) for outcome in outcomes)
    assert len(guard.refusals) == 1  # one transaction, refused once
    report = await audit.verify(db)
    assert report.ok and report.head_seq == 0
    assert (await audit.record(db, clock, actor="a", kind="k", subject="after")).seq == 1


async def test_a_payload_that_cannot_be_stored_fails_its_own_appender_only(db, clock):
    outcomes = await asyncio.gather(audit.record(db, clock, actor="a", kind="k", subject="good"),
                                    audit.record(db, clock, actor="a", kind="k", subject="bad", payload={"x": object()}),
                                    return_exceptions=True)
    assert outcomes[0].seq == 1 and isinstance(outcomes[1], TypeError)
    assert (await audit.verify(db)).checked == 1


async def test_processes_recording_at_once_never_fork_the_chain(db, db_url):
    procs = [subprocess.Popen([sys.executable, "-m", "tests.store.audit_appender", db_url, "10", f"proc{n}", "record", "3"],
                              cwd=REPO) for n in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    report = await audit.verify(db)
    assert report.ok and report.checked == 90 and report.head_seq == 90
    seen = [r.subject async for r in audit.query(db, AuditFilter(kind="test.concurrent"))]
    assert sorted(seen) == sorted(f"proc{p}.{t}:{i}" for p in range(3) for t in range(3) for i in range(10))


async def test_a_cancelled_appender_leaves_its_batch_recorded(db, clock):
    first = asyncio.ensure_future(audit.record(db, clock, actor="a", kind="k", subject="cancelled"))
    second = asyncio.ensure_future(audit.record(db, clock, actor="a", kind="k", subject="kept"))
    await asyncio.sleep(0)  # one turn of the loop: both appenders have queued their events
    first.cancel()
    assert (await second).subject == "kept"
    with pytest.raises(asyncio.CancelledError):
        await first
    report = await audit.verify(db)  # the cancelled appender's event was committed with its batch
    assert report.ok and report.checked == 2


async def test_an_event_colliding_with_a_row_written_behind_the_heads_back_is_refused(db, clock):
    first = await _append(db, clock, "first")
    async with db.engine.begin() as conn:  # a row the head does not know: the next append's number taken
        await conn.execute(text("INSERT INTO audit_events (seq, ts, actor, kind, subject, release, symbol, payload, "
                                "prev_hash, hash) SELECT 2, ts, actor, kind, 'forged', release, symbol, payload, hash, :h "
                                "FROM audit_events WHERE seq = 1"), {"h": "f" * 64})
    with pytest.raises(IntegrityError):
        await _append(db, clock, "second")
    report = await audit.verify(db)  # nothing of the refused append was kept: the head is still the first event
    assert report.head_seq == 1 and report.head_hash == first.hash and report.first_bad_seq == 2


async def test_a_timestamp_is_stored_as_every_other_column_of_its_type_is(sqlite_url, clock):
    db = Database(resolve_url(sqlite_url))
    try:
        await upgrade(db)
        written = await _append(db, clock, "at a whole second")
        async with db.engine.connect() as conn:
            stored = (await conn.execute(text("SELECT ts FROM audit_events WHERE seq = 1"))).scalar_one()
        assert written.ts.microsecond == 0 and stored == written.ts.strftime("%Y-%m-%d %H:%M:%S.%f")
    finally:
        await db.close()


async def test_a_recorded_event_is_the_payload_as_it_was_when_recorded(db, clock):
    nested = {"orders": [1, 2]}
    recording = asyncio.ensure_future(audit.record(db, clock, actor="a", kind="k", subject="s", payload=nested))
    await asyncio.sleep(0)  # one turn of the loop: the event is queued, its transaction not yet begun
    nested["orders"].append(3)
    returned = (await recording).payload
    stored = [returned] + [r.payload async for r in audit.query(db, AuditFilter())]
    assert [{k: v for k, v in payload.items() if k != "db_role"} for payload in stored] == [{"orders": [1, 2]}] * 2
