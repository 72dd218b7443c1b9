"""Where the database is and how to open it: URL resolution, engine set-up, write transactions.

SQLite (WAL mode) is the embedded default; PostgreSQL works by URL. Writers take the
database's write lock at the start of their transaction (SQLite: ``BEGIN IMMEDIATE``), so
read-modify-write sequences such as appending to the audit chain never interleave. On SQLite the
writers of one process also queue in the process (`Database.write`), not in SQLite's busy handler.
"""

from __future__ import annotations

import asyncio
import copy
import os
import sqlite3
import weakref

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Protocol

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import await_

from controller.errors import InputError, StoreError
from controller.store import default_db_path

SQLITE_BUSY_TIMEOUT_MS = 30_000
_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}


def resolve_url(url: str | None, password: str | None = None) -> URL:
    """Turn what the operator gave (or nothing) into an async SQLAlchemy URL.

    ``sqlite:///PATH`` and ``postgresql://...`` select the async drivers; a bare path is read
    as a SQLite file. With no URL, the default SQLite file under $XDG_STATE_HOME is used.
    """
    if not url:
        url = f"sqlite:///{default_db_path()}"
    elif "://" not in url:
        url = f"sqlite:///{Path(url).expanduser().resolve()}"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise InputError(f"database URL {url!r} is not a URL; expected sqlite:///PATH or postgresql://USER@HOST/DB") from None
    backend = parsed.get_backend_name()
    if backend not in _ASYNC_DRIVERS:
        raise InputError(f"database URL scheme {parsed.drivername!r} is not supported; use sqlite:/// or postgresql://")
    parsed = parsed.set(drivername=_ASYNC_DRIVERS[backend])
    if password is not None:
        parsed = parsed.set(password=password)
    return parsed


def display_url(url: URL) -> str:
    """The URL as it may be printed or logged: never with its password, in the userinfo or the query."""
    hidden = {key: "***" for key in url.query if key.lower() in ("password", "passwd", "sslpassword")}
    return (url.update_query_dict(hidden) if hidden else url).render_as_string(hide_password=True)


def create_engine(url: URL) -> AsyncEngine:
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            # Created for its owner alone (SQLite gives its -wal and -shm files the same mode): the
            # store holds the audit trail and who did what.
            os.close(os.open(database, os.O_CREAT | os.O_WRONLY, 0o600))
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                                     pool_reset_on_return=None)  # `_configure_sqlite` resets, when needed
        _configure_sqlite(engine)
        return engine
    return create_async_engine(url, pool_pre_ping=True)


def _configure_sqlite(engine: AsyncEngine) -> None:
    # SQLAlchemy's documented recipe: take over BEGIN from the driver so that writers can ask
    # for BEGIN IMMEDIATE (the write lock up front) while readers stay deferred.
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # NORMAL: in WAL mode a commit survives a crash of the process (SIGKILL, OOM), the failure
        # the daemon resumes from by design and is tested for, but not a power loss or a kernel
        # crash, which may take back the last commits (the WAL is synced at checkpoints, not at each
        # commit). That is fine for a record of what happened (a verdict, an audit event: a breach's
        # verdict does not wait on the disk) and wrong for an intent, written before an action
        # outside the store: those are `Database.write(durable=True)`, committed at FULL.
        cursor.execute(f"PRAGMA synchronous={_SYNCHRONOUS[False]}")
        _record.info[_SYNCHRONOUS_NOW] = _SYNCHRONOUS[False]
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    # The pool's reset rolls back every connection given back, committed ones too: a round trip to
    # the driver's thread after each write transaction. Only a transaction SQLite says is still
    # open (a read left so, say) is rolled back.
    @event.listens_for(engine.sync_engine, "reset")
    def _on_reset(dbapi_connection, record, state) -> None:
        if state.asyncio_safe and not state.terminate_only and record.driver_connection.in_transaction:
            dbapi_connection.rollback()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn) -> None:
        options = conn.get_execution_options()
        driver = conn.connection.driver_connection
        synchronous = _SYNCHRONOUS[bool(options.get("durable"))]
        if conn.connection.info.get(_SYNCHRONOUS_NOW) != synchronous:  # per connection, outside a transaction
            _driver_sql(driver, f"PRAGMA synchronous={synchronous}")
            conn.connection.info[_SYNCHRONOUS_NOW] = synchronous
        _driver_sql(driver, f"BEGIN {'IMMEDIATE' if options.get('write_lock') else 'DEFERRED'}")


def _driver_sql(driver, statement: str) -> None:
    """A statement that returns no rows, straight to aiosqlite: one trip to its thread, where a statement
    through SQLAlchemy's cursor takes three (open the cursor, execute, close it)."""
    try:
        await_(driver.execute(statement))
    except sqlite3.Error as error:  # what SQLAlchemy's cursor would have raised ("database is locked"...)
        raise DBAPIError.instance(statement, None, error, sqlite3.Error) from None


_SYNCHRONOUS = {False: "NORMAL", True: "FULL"}
"""SQLite's sync level of a write: a durable one (an intent) is synced to disk at its commit."""
_SYNCHRONOUS_NOW = "canary_synchronous"
"""Where a pooled SQLite connection remembers the level it is at (one PRAGMA only when it changes)."""


class WriteGuard(Protocol):
    """What every write transaction of a guarded view (`Database.guarded`) checks first: a rollout
    owner's fence (`controller.store.leases.Fence`)."""

    async def check(self, session: AsyncSession) -> None:
        """Raise to refuse the transaction (inside it, holding what the check locked until commit)."""

    async def refused(self, db: Database, error: BaseException) -> None:
        """Called with any error that ended a guarded transaction, after its rollback, with the
        unguarded database (to record a refusal in a transaction of its own)."""


class Database:
    """An engine plus the two kinds of unit of work the rest of the code uses."""

    def __init__(self, url: URL) -> None:
        self.url = url
        self.engine = create_engine(url)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._guard: WriteGuard | None = None
        self._unguarded: Database = self
        # One per event loop (an asyncio.Lock belongs to the loop it first waits in); guarded views share it.
        self._write_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()

    def guarded(self, guard: WriteGuard) -> Database:
        """This database (same engine) whose every write transaction begins with ``guard.check``."""
        view = copy.copy(self)
        view._guard, view._unguarded = guard, self._unguarded
        return view

    @property
    def dialect(self) -> str:
        return self.url.get_backend_name()

    def __repr__(self) -> str:
        return f"Database({display_url(self.url)})"

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        with self._unusable_as_store_error():
            async with self._sessions() as session:
                yield session

    @asynccontextmanager
    async def write(self, *, durable: bool = False) -> AsyncIterator[AsyncSession]:
        """A transaction that holds the write lock from its first statement; commits on exit. In a
        guarded view the guard's check is its first statement. ``durable``: an intent, written before
        an action outside the store ("intent before action"), whose commit must survive a power loss
        too: SQLite syncs it to disk (PostgreSQL's commits are, with its default synchronous_commit)."""
        if self._guard is None:
            async with self._transaction(durable) as session:
                yield session
            return
        try:
            async with self._transaction(durable) as session:
                await self._guard.check(session)
                yield session
        except Exception as error:
            await self._guard.refused(self._unguarded, error)
            raise

    @asynccontextmanager
    async def _transaction(self, durable: bool) -> AsyncIterator[AsyncSession]:
        with self._unusable_as_store_error():
            async with self._in_process_turn(), self._sessions() as session:
                await session.connection(execution_options={"write_lock": True, "durable": durable})
                try:
                    yield session
                    await session.commit()
                except BaseException:
                    await session.rollback()
                    raise

    @asynccontextmanager
    async def _in_process_turn(self) -> AsyncIterator[None]:
        """On SQLite, wait for this process's other writers before taking a connection: SQLite's busy
        handler, where they would wait otherwise, polls the lock with sleeps of up to 100 ms and left
        four concurrent writers at half the rate of one. Waiting longer than SQLite's busy timeout is
        the same error SQLite gives (a write transaction opened inside another one in the same task
        would wait forever)."""
        if self.dialect != "sqlite":
            yield
            return
        loop = asyncio.get_running_loop()
        lock = self._write_locks.get(loop)
        if lock is None:
            lock = self._write_locks[loop] = asyncio.Lock()
        try:
            async with asyncio.timeout(SQLITE_BUSY_TIMEOUT_MS / 1000):
                await lock.acquire()
        except TimeoutError:
            raise StoreError(f"the database {display_url(self.url)} cannot be used: database is locked "
                             "(another write transaction of this process held it too long)") from None
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def _unusable_as_store_error(self) -> Iterator[None]:
        """A database that cannot be reached, is locked or lacks its schema is a StoreError
        (constraint violations stay what they are: callers act on them)."""
        try:
            yield
        except (OperationalError, InterfaceError) as exc:
            detail = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise StoreError(f"the database {display_url(self.url)} cannot be used: {detail}") from None

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.connect() as conn:
            yield conn

    async def close(self) -> None:
        if self._guard is None:  # a guarded view shares its engine: the database's owner disposes of it
            await self.engine.dispose()
