"""Schema revisions: upgrade, downgrade and the check every command makes before using the store.

Alembic is imported only when migrating; the check reads ``alembic_version`` directly and
compares it with `SCHEMA_REVISION`, which a test keeps equal to the migrations' head.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from controller import shipped
from controller.errors import StoreError
from controller.store import SCHEMA_REVISION
from controller.store.database import Database, display_url


def migrations_dir() -> Path:
    """The Alembic scripts, as the package ships them (see `controller.shipped`)."""
    folder = shipped.migrations_dir()
    if not (folder / "env.py").is_file():
        raise StoreError(f"the migrations folder is missing or incomplete (no env.py in {folder})")
    return folder


def _alembic_config(connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["connection"] = connection
    return config


async def upgrade(db: Database, revision: str = "head") -> tuple[str | None, str | None]:
    """Migrate to ``revision``; returns (revision before, revision after)."""
    from alembic import command

    before = await current_revision(db)
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), revision))
    return before, await current_revision(db)


async def downgrade(db: Database, revision: str) -> tuple[str | None, str | None]:
    from alembic import command

    before = await current_revision(db)
    async with db.engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), revision))
    return before, await current_revision(db)


async def current_revision(db: Database) -> str | None:
    """The schema revision of the database, or None when it has never been migrated."""
    try:
        async with db.connect() as conn:
            has_table = await conn.run_sync(lambda sync: sync.dialect.has_table(sync, "alembic_version"))
            if not has_table:
                return None
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one_or_none()
    except (DBAPIError, OSError) as exc:
        raise StoreError(f"cannot open the database {display_url(db.url)}: {_first_line(exc)}") from None


async def require_current(db: Database) -> None:
    """Refuse to use a database whose schema is not the one this code was written for."""
    found = await current_revision(db)
    if found == SCHEMA_REVISION:
        return
    where = display_url(db.url)
    if found is None:
        raise StoreError(f"the database {where} has no schema yet; run `canaryctl db upgrade` first")
    raise StoreError(
        f"the database {where} is at schema revision {found}, this canaryctl needs {SCHEMA_REVISION}; "
        "run `canaryctl db upgrade` (or use the canaryctl that matches the database)"
    )


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    return str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
