"""Alembic environment: runs migrations on the connection the controller hands it.

`controller.store.schema` calls Alembic with ``config.attributes["connection"]`` set to a sync
connection obtained from the async engine (``AsyncConnection.run_sync``), so the SQLite
pragmas and the PostgreSQL driver are the controller's own. Run standalone (``alembic -x
url=...``), it opens the URL itself.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from controller.store.database import create_engine, resolve_url
from controller.store.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone(url: str) -> None:
    engine = create_engine(resolve_url(url))
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
elif context.is_offline_mode():
    raise SystemExit("offline (SQL script) migrations are not supported; run `canaryctl db upgrade`")
else:
    asyncio.run(_run_standalone(context.get_x_argument(as_dictionary=True).get("url", "")))
