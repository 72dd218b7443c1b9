"""Reading the store without SQLAlchemy's start-up cost, for commands that must answer at once.

Importing SQLAlchemy's async engine takes longer (~250 ms) than `canaryctl status` may take in
all, so read-only commands speak plain SQL through a `Reader`: on SQLite, the standard
library's sqlite3 on a read-only connection (the file is never created or written); on
PostgreSQL, the usual `Database` (its import cost is paid there; PostgreSQL start-up is not
the fast path). Queries use ``:name`` parameters, which both understand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, unquote

from controller.errors import InputError, StoreError
from controller.store import SCHEMA_REVISION, default_db_path

BUSY_TIMEOUT_SECONDS = 5.0


class Reader(Protocol):
    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """The rows of one query, each as a dict keyed by column name."""

    def snapshot(self):
        """A context in which every query reads the same state of the database."""

    def instant(self, value: datetime) -> Any:
        """An aware time as this backend compares it with a stored one (a query's parameter)."""

    def close(self) -> None: ...


def sqlite_file(url: str | None) -> Path | None:
    """The SQLite file a database URL (or bare path, or nothing: the default) names; None for
    another backend. Mirrors `controller.store.database.resolve_url`."""
    if not url:
        return default_db_path()
    if "://" not in url:
        return Path(url).expanduser().resolve()
    scheme, _, rest = url.partition("://")
    if scheme.split("+", 1)[0] != "sqlite":
        return None
    path = unquote(rest.partition("?")[0].removeprefix("/"))
    if not path or path == ":memory:":
        raise InputError("an in-memory SQLite database holds no records; give the file: sqlite:///PATH")
    return Path(path)


def when(value: Any) -> datetime | None:
    """A stored time as an aware UTC datetime (SQLite keeps them as naive UTC text)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def sqlite_instant(value: datetime) -> str:
    """An aware time as SQLite keeps it: naive UTC text, always with microseconds (SQLAlchemy's format),
    so that text comparisons order it like the stored times."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def decimal(value: Any) -> Decimal | None:
    """A stored exact decimal (text on SQLite, NUMERIC on PostgreSQL)."""
    return None if value is None else Decimal(str(value)).normalize()


class SqliteReader:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._conn = _connect(path)
        except sqlite3.DatabaseError as exc:
            if not path.exists():
                raise StoreError(f"there is no database at {path}; create it with `canaryctl db upgrade`, "
                                 "or name the right one with --db") from None
            raise StoreError(f"the database sqlite:///{path} cannot be opened: {exc}") from None
        try:
            found = self._revision()
        except BaseException:
            self._conn.close()
            raise
        if found != SCHEMA_REVISION:
            self._conn.close()
            raise StoreError(f"the database sqlite:///{path} is at schema revision {found}, this canaryctl needs "
                             f"{SCHEMA_REVISION}; run `canaryctl db upgrade` (or use the canaryctl that matches "
                             "the database)")

    def _revision(self) -> str | None:
        try:
            row = self._conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.DatabaseError as exc:
            if "no such table" in str(exc):
                raise StoreError(f"the database sqlite:///{self.path} has no schema yet; run `canaryctl db upgrade` "
                                 "first") from None
            raise StoreError(f"the database sqlite:///{self.path} cannot be read: {exc}") from None
        return row[0] if row else None

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        try:
            return [dict(row) for row in self._conn.execute(sql, params)]
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the database sqlite:///{self.path} cannot be read: {exc}") from None

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        # A deferred transaction: in WAL mode, every read inside it sees one commit of the daemon.
        self._conn.execute("BEGIN")
        try:
            yield
        finally:
            if self._conn.in_transaction:
                self._conn.execute("COMMIT")

    def instant(self, value: datetime) -> str:
        return sqlite_instant(value)

    def close(self) -> None:
        self._conn.close()


def _connect(path: Path) -> sqlite3.Connection:
    """A connection that cannot write. ``mode=rw`` (never ``rwc``: a missing file stays missing) with
    ``query_only``, so that closing it cleans up the WAL files like any other connection; ``mode=ro``
    when this user may only read the file."""
    for mode in ("rw", "ro"):
        try:
            conn = sqlite3.connect(f"file:{quote(str(path))}?mode={mode}", uri=True, timeout=BUSY_TIMEOUT_SECONDS,
                                   isolation_level=None, check_same_thread=False)
            break
        except sqlite3.OperationalError:
            if mode == "ro" or not path.exists():
                raise
    conn.execute("PRAGMA query_only=1")
    conn.row_factory = sqlite3.Row
    return conn


class DatabaseReader:
    """Any backend through the async `Database`, driven from synchronous code by one event loop."""

    def __init__(self, url) -> None:
        import asyncio

        from controller.store.database import Database
        from controller.store.schema import require_current

        self._runner = asyncio.Runner()
        self._db = Database(url)
        self._session = None  # the open snapshot's
        try:
            self._runner.run(require_current(self._db))
        except BaseException:
            self.close()
            raise

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        if self._session is None:
            with self.snapshot():
                return self.rows(sql, **params)
        return self._runner.run(self._query(self._session, sql, params))

    @staticmethod
    async def _query(session, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        from sqlalchemy import text

        return [dict(row._mapping) for row in await session.execute(text(sql), params)]

    @contextmanager
    def snapshot(self) -> Iterator[None]:
        unit = self._db.read()  # turns an unusable database into a StoreError on the way out
        session = self._runner.run(unit.__aenter__())
        try:
            if self._db.dialect == "postgresql":
                self._runner.run(session.connection(execution_options={"isolation_level": "REPEATABLE READ"}))
            self._session = session
            yield
        except BaseException as exc:
            self._session = None
            if not self._runner.run(unit.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self._session = None
            self._runner.run(unit.__aexit__(None, None, None))

    def instant(self, value: datetime) -> Any:
        return sqlite_instant(value) if self._db.dialect == "sqlite" else value

    def close(self) -> None:
        try:
            self._runner.run(self._db.close())
        finally:
            self._runner.close()


def open_reader(url: str | None, *, password: str | None = None) -> Reader:
    """A reader for the database ``url`` names (None: the default SQLite file)."""
    path = sqlite_file(url)
    if path is not None:
        return SqliteReader(path)
    from controller.store.database import resolve_url

    return DatabaseReader(resolve_url(url, password))
