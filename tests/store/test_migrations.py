"""Migrations upgrade and downgrade cleanly on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.config import Config
from sqlalchemy import inspect

from controller.errors import StoreError
from controller.store.database import Database, resolve_url
from controller.store.models import Base
from controller.store.schema import SCHEMA_REVISION, current_revision, downgrade, migrations_dir, require_current, upgrade

TABLES = {"releases", "deployments", "config_snapshots", "rollouts", "stage_runs", "verdicts", "operator_commands",
          "rollback_steps", "fills", "audit_events", "audit_head", "webhook_deliveries", "rollout_leases",
          "account_claims", "placement_leases"}


async def _tables(database: Database) -> set[str]:
    async with database.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names())) - {"alembic_version"}


def test_schema_revision_constant_is_the_migrations_head():
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_REVISION


async def test_upgrade_creates_every_table_then_downgrade_removes_them_and_upgrade_again_works(db_url):
    database = Database(resolve_url(db_url))
    try:
        assert await current_revision(database) is None
        assert await upgrade(database) == (None, SCHEMA_REVISION)
        assert await _tables(database) == TABLES
        assert await downgrade(database, "base") == (SCHEMA_REVISION, None)
        assert await _tables(database) == set()
        await upgrade(database)
        assert await current_revision(database) == SCHEMA_REVISION
    finally:
        await database.close()


async def test_upgrade_twice_is_a_no_op(db):
    assert await upgrade(db) == (SCHEMA_REVISION, SCHEMA_REVISION)


async def test_models_and_migrations_describe_the_same_schema(db):
    async with db.connect() as conn:
        diffs = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata))
    assert diffs == []


async def test_a_database_without_schema_is_refused_with_the_command_that_fixes_it(sqlite_url):
    database = Database(resolve_url(sqlite_url))
    try:
        with pytest.raises(StoreError, match="canaryctl db upgrade"):
            await require_current(database)
    finally:
        await database.close()


async def test_an_unreachable_database_is_a_store_error_without_its_password(postgres_server):
    url = f"postgresql://someone:hunter2@127.0.0.1:{postgres_server.port}/no_such_db"
    database = Database(resolve_url(url))
    try:
        with pytest.raises(StoreError) as info:
            await current_revision(database)
        assert "hunter2" not in str(info.value)
        assert "no_such_db" in str(info.value)
    finally:
        await database.close()


async def test_verdicts_stored_before_groups_had_a_column_take_their_group_from_their_evidence(db_url):
    from sqlalchemy import text

    database = Database(resolve_url(db_url))
    try:
        await upgrade(database, "0003")
        async with database.connect() as conn:
            await conn.execute(text(
                "INSERT INTO config_snapshots (sha256, content, created_at) VALUES (:c, '{}', CURRENT_TIMESTAMP)"),
                {"c": "c" * 64})
            await conn.execute(text(
                "INSERT INTO releases (version, manifest, manifest_sha256, artifact_sha256, config_sha256, created_by,"
                " created_at) VALUES ('1.0.0', '{}', :m, :a, :c, 't', CURRENT_TIMESTAMP)"),
                {"m": "m" * 64, "a": "a" * 64, "c": "c" * 64})
            await conn.execute(text(
                "INSERT INTO rollouts (release_id, pipeline, state, stage, created_at, updated_at)"
                " VALUES (1, '{}', 'running', 'C', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            for evidence in ('{"group": [["symbol", "BTCUSDT"]]}', '{"group": []}'):
                await conn.execute(text(
                    "INSERT INTO verdicts (rollout_id, policy, verdict, samples, evaluated_at, evidence)"
                    " VALUES (1, 'p', 'pass', 1, CURRENT_TIMESTAMP, :e)"), {"e": evidence})
            await conn.commit()
        await upgrade(database)
        async with database.connect() as conn:
            keys = (await conn.execute(text("SELECT group_key FROM verdicts ORDER BY id"))).scalars().all()
        assert keys == ["symbol=BTCUSDT", ""]
    finally:
        await database.close()


async def test_a_new_sqlite_file_is_readable_by_its_owner_only(tmp_path):
    database = Database(resolve_url(f"sqlite:///{tmp_path / 'canary.db'}"))
    try:
        await upgrade(database)
    finally:
        await database.close()
    assert (tmp_path / "canary.db").stat().st_mode & 0o777 == 0o600


def test_a_password_in_the_query_of_a_database_url_is_never_displayed():
    from controller.store.database import display_url

    shown = display_url(resolve_url("postgresql://canary@db.internal/canary?password=Pa55w0rd&sslmode=require"))
    assert "Pa55w0rd" not in shown and "sslmode=require" in shown
