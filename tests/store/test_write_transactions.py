"""Write transactions on SQLite: one process's take turns in the process, not in SQLite's busy handler;
a write that cannot have the lock in time is a store error, as SQLite's own "database is locked" always was."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest
from sqlalchemy import event, text

from controller.errors import StoreError
from controller.store import database as store_database
from controller.store.database import Database, resolve_url
from controller.store.schema import upgrade


async def test_concurrent_writers_of_one_process_take_turns_on_one_connection(sqlite_url):
    db = Database(resolve_url(sqlite_url))
    try:
        await upgrade(db)
        await db.engine.dispose()  # no connection left in the pool: each one the writers need is opened
        opened = []
        event.listen(db.engine.sync_engine, "connect", lambda connection, record: opened.append(record))

        async def writer(n):
            async with db.write() as session:
                await session.execute(text("CREATE TABLE IF NOT EXISTS turns (n INTEGER)"))
                await session.execute(text("INSERT INTO turns VALUES (:n)"), {"n": n})

        await asyncio.gather(*(writer(n) for n in range(5)))
        assert len(opened) == 1  # each waited for the one before it instead of opening a connection to wait in SQLite
        async with db.read() as session:
            assert (await session.execute(text("SELECT count(*) FROM turns"))).scalar_one() == 5
    finally:
        await db.close()


async def test_a_guarded_view_takes_turns_with_its_database(sqlite_url):
    db = Database(resolve_url(sqlite_url))

    class Passing:
        async def check(self, session):
            pass

        async def refused(self, database, error):
            pass

    try:
        await upgrade(db)
        await db.engine.dispose()
        opened = []
        event.listen(db.engine.sync_engine, "connect", lambda connection, record: opened.append(record))
        views = [db, db.guarded(Passing()), db.guarded(Passing())]

        async def writer(view):
            async with view.write() as session:
                await session.execute(text("SELECT 1"))

        await asyncio.gather(*(writer(view) for view in views))
        assert len(opened) == 1
    finally:
        await db.close()


async def test_a_write_while_another_process_holds_the_lock_is_a_store_error(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.setattr(store_database, "SQLITE_BUSY_TIMEOUT_MS", 200)
    db = Database(resolve_url(sqlite_url))
    other = sqlite3.connect(tmp_path / "canary.db", isolation_level=None)
    try:
        await upgrade(db)
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreError, match="database is locked"):
            async with db.write():
                pass
        other.rollback()
        async with db.write() as session:  # the lock given back: the same Database writes again
            await session.execute(text("SELECT 1"))
    finally:
        other.close()
        await db.close()


async def test_a_write_opened_inside_another_of_the_same_task_is_a_store_error(sqlite_url, monkeypatch):
    monkeypatch.setattr(store_database, "SQLITE_BUSY_TIMEOUT_MS", 200)
    db = Database(resolve_url(sqlite_url))
    try:
        await upgrade(db)
        async with db.write():
            with pytest.raises(StoreError, match="database is locked"):
                async with db.write():
                    pass
    finally:
        await db.close()
