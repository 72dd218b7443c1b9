"""The audit trail is a gapless hash chain: every kind of tampering is found, concurrency never forks it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import text

from controller.store import audit
from controller.store.audit import AuditFilter
from tests.support.checkout import REPO


async def _append(db, clock, n, **fields):
    records = []
    for i in range(n):
        async with db.write() as session:
            records.append(await audit.append(
                session, clock, actor=fields.get("actor", "alice"), kind=fields.get("kind", "test.event"),
                subject=f"thing:{i}", payload={"i": i, "price": "101.25"},
                release=fields.get("release"), symbol=fields.get("symbol")))
        clock.advance(1)
    return records


async def _sql(db, statement, **params):
    async with db.engine.begin() as conn:
        await conn.execute(text(statement), params)


async def test_appends_form_a_gapless_chain_that_verifies(db, clock):
    records = await _append(db, clock, 5)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert all(b.prev_hash == a.hash for a, b in zip(records, records[1:]))
    report = await audit.verify(db)
    assert report.ok and report.checked == 5 and report.head_seq == 5 and report.head_hash == records[-1].hash


async def test_an_empty_chain_verifies(db):
    report = await audit.verify(db)
    assert report.ok and report.checked == 0


async def test_an_edited_payload_is_found_at_its_sequence_number(db, clock):
    await _append(db, clock, 5)
    await _sql(db, "UPDATE audit_events SET payload = :p WHERE seq = 3", p='{"i":3,"price":"999"}')
    report = await audit.verify(db)
    assert report.first_bad_seq == 3 and "edited" in report.reason


async def test_an_edited_actor_is_found(db, clock):
    await _append(db, clock, 4)
    await _sql(db, "UPDATE audit_events SET actor = 'mallory' WHERE seq = 2")
    assert (await audit.verify(db)).first_bad_seq == 2


async def test_a_deleted_row_in_the_middle_is_found(db, clock):
    await _append(db, clock, 5)
    await _sql(db, "DELETE FROM audit_events WHERE seq = 2")
    report = await audit.verify(db)
    assert report.first_bad_seq == 2 and "missing" in report.reason


async def test_deleted_rows_at_the_end_are_found_through_the_head(db, clock):
    await _append(db, clock, 5)
    await _sql(db, "DELETE FROM audit_events WHERE seq >= 4")
    report = await audit.verify(db)
    assert report.first_bad_seq == 4 and "4..5" in report.reason


async def test_a_row_inserted_in_the_middle_by_renumbering_is_found(db, clock):
    records = await _append(db, clock, 4)
    # Make room after seq 2 and slip a forged event in, copying its neighbour's hashes.
    for seq in (4, 3):
        await _sql(db, "UPDATE audit_events SET seq = :new WHERE seq = :old", new=seq + 1, old=seq)
    await _sql(db, "INSERT INTO audit_events (seq, ts, actor, kind, subject, release, symbol, payload, prev_hash, hash) "
                   "SELECT 3, ts, 'mallory', kind, 'forged', release, symbol, payload, prev_hash, :h FROM audit_events WHERE seq = 2",
               h="f" * 64)
    report = await audit.verify(db)
    assert report.first_bad_seq == 3
    assert records[1].seq == 2


async def test_a_forged_row_appended_after_the_head_is_found(db, clock):
    records = await _append(db, clock, 3)
    await _sql(db, "INSERT INTO audit_events (seq, ts, actor, kind, subject, release, symbol, payload, prev_hash, hash) "
                   "SELECT 4, ts, actor, kind, subject, release, symbol, payload, :prev, :h FROM audit_events WHERE seq = 3",
               prev=records[-1].hash, h="e" * 64)
    assert (await audit.verify(db)).first_bad_seq == 4


async def test_two_reordered_rows_are_found_at_the_first_of_them(db, clock):
    await _append(db, clock, 5)
    # Swap the contents of events 2 and 4 (a reordering that keeps the sequence gapless).
    await _sql(db, "UPDATE audit_events SET seq = -4 WHERE seq = 4")
    await _sql(db, "UPDATE audit_events SET seq = 4 WHERE seq = 2")
    await _sql(db, "UPDATE audit_events SET seq = 2 WHERE seq = -4")
    assert (await audit.verify(db)).first_bad_seq == 2


async def test_append_outside_a_write_transaction_is_refused_on_sqlite(sqlite_url, clock):
    from controller.store.database import Database, resolve_url
    from controller.store.schema import upgrade

    database = Database(resolve_url(sqlite_url))
    await upgrade(database)
    try:
        async with database.read() as session:
            with pytest.raises(RuntimeError, match="Database.write"):
                await audit.append(session, clock, actor="a", kind="k", subject="s")
    finally:
        await database.close()


async def test_a_failed_transaction_leaves_no_audit_event(db, clock):
    with pytest.raises(ZeroDivisionError):
        async with db.write() as session:
            await audit.append(session, clock, actor="a", kind="k", subject="s")
            1 / 0
    report = await audit.verify(db)
    assert report.ok and report.head_seq == 0


async def test_concurrent_tasks_never_fork_or_skip_the_chain(db, clock):
    async def writer(name):
        for i in range(10):
            async with db.write() as session:
                await audit.append(session, clock, actor=name, kind="test.concurrent", subject=f"{name}:{i}")

    await asyncio.gather(*(writer(f"task{n}") for n in range(8)))
    report = await audit.verify(db)
    assert report.ok and report.checked == 80 and report.head_seq == 80


async def test_concurrent_processes_never_fork_or_skip_the_chain(db, db_url):
    procs = [subprocess.Popen([sys.executable, "-m", "tests.store.audit_appender", db_url, "25", f"proc{n}"], cwd=REPO)
             for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    report = await audit.verify(db)
    assert report.ok and report.checked == 100 and report.head_seq == 100
    seen = [r.subject async for r in audit.query(db, AuditFilter(kind="test.concurrent"))]
    assert sorted(seen) == sorted(f"proc{n}:{i}" for n in range(4) for i in range(25))


async def test_query_combines_filters_and_keeps_sequence_order(db, clock):
    await _append(db, clock, 3, actor="alice", release="1.0.0", symbol="BTCUSDT", kind="leverage.set")
    await _append(db, clock, 2, actor="bob", release="1.1.0", symbol="ETHUSDT", kind="leverage.set")
    await _append(db, clock, 2, actor="bob", release="1.1.0", symbol="BTCUSDT", kind="release.added")

    async def seqs(**kw):
        return [r.seq async for r in audit.query(db, AuditFilter(**kw))]

    assert await seqs(actor="bob") == [4, 5, 6, 7]
    assert await seqs(symbol="BTCUSDT", release="1.1.0") == [6, 7]
    assert await seqs(kind="leverage.set", symbol="ETHUSDT") == [4, 5]
    assert await seqs(subject="thing:2") == [3]
    assert await seqs(subject="thing:1", actor="bob") == [5, 7]
    start = clock.now() - timedelta(seconds=7)
    assert await seqs(since=start + timedelta(seconds=3), until=start + timedelta(seconds=5)) == [4, 5]
    assert await seqs(limit=2) == [1, 2]
    records = [r async for r in audit.query(db, AuditFilter(symbol="ETHUSDT"))]
    written = {k: v for k, v in records[0].payload.items() if k != "db_role"}  # PostgreSQL adds the writer's role
    assert written == {"i": 0, "price": "101.25"}
