"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest

from controller.store.database import Database, resolve_url
from controller.store.schema import upgrade


@pytest.fixture
async def sqlite_db(sqlite_url):
    database = Database(resolve_url(sqlite_url))
    await upgrade(database)
    yield database
    await database.close()
