"""Deployments written as intents: the 0003 migration (a state and the settings snapshot), and the
rows a placement writes before and after its release starts.

The migration is run on a real SQLite file holding 0002's rows; the store functions on the
suite's databases.
"""

from __future__ import annotations

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError

from controller.release_files import read_release
from controller.store import audit
from controller.store.database import Database, resolve_url
from controller.store.deployments import live_deployment, record_intent, record_running
from controller.store.releases import add_release
from controller.store.schema import current_revision, downgrade, upgrade
from tests.support.checkout import EXAMPLES

NOW = "2026-12-01 10:00:00.000000"
SNAPSHOT = {"symbols": {"ADAUSDT": [7, "CROSSED"], "BTCUSDT": [5, "CROSSED"]}, "position_mode": "one-way",
            "multi_assets": False}


async def _columns(database: Database) -> set[str]:
    async with database.connect() as conn:
        rows = (await conn.execute(text("PRAGMA table_info(deployments)"))).all()
    return {row[1] for row in rows}


async def _insert_deployment(database: Database, *, stopped: bool) -> None:
    async with database.engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO deployments (environment, account, instance, release_id, config_sha256, started_at, "
            "stopped_at) VALUES ('sim', 'canary', 'sim-canary', 1, :sha, :now, :stopped)"),
            {"sha": "a" * 64, "now": NOW, "stopped": NOW if stopped else None})


async def test_upgrading_from_0002_keeps_the_deployments_as_running_without_a_snapshot(sqlite_url):
    database = Database(resolve_url(sqlite_url))
    try:
        await upgrade(database, "0002")
        async with database.engine.begin() as conn:
            await conn.execute(text("INSERT INTO config_snapshots (sha256, content, created_at) "
                                    "VALUES (:sha, '{}', :now)"), {"sha": "a" * 64, "now": NOW})
            await conn.execute(text(
                "INSERT INTO releases (version, manifest, manifest_sha256, artifact_sha256, config_sha256, created_by, "
                "created_at) VALUES ('1.0.0', '{}', :sha, :sha, :sha, 'tester', :now)"), {"sha": "a" * 64, "now": NOW})
        await _insert_deployment(database, stopped=True)
        await _insert_deployment(database, stopped=False)

        assert await upgrade(database, "0003") == ("0002", "0003")
        async with database.connect() as conn:
            rows = (await conn.execute(text("SELECT stopped_at IS NULL, state, settings_before FROM deployments "
                                            "ORDER BY id"))).all()
        assert [tuple(r) for r in rows] == [(0, "running", None), (1, "running", None)]
        live = await live_deployment(database, "sim", "canary")
        assert (live.state, live.settings_before, live.release) == ("running", None, "1.0.0")
        with pytest.raises(IntegrityError):  # still one live deployment per account
            await _insert_deployment(database, stopped=False)

        assert await downgrade(database, "0002") == ("0003", "0002")
        assert {"state", "settings_before"}.isdisjoint(await _columns(database))
        with pytest.raises(IntegrityError):  # the table rebuilt without the columns keeps its partial index
            await _insert_deployment(database, stopped=False)
        await _insert_deployment(database, stopped=True)
        await upgrade(database, "0003")
        assert await current_revision(database) == "0003"
    finally:
        await database.close()


async def test_an_intent_holds_the_account_from_before_the_start_and_says_running_once(db, clock):
    for version in ("1.0.0", "1.1.0"):
        await add_release(db, clock, read_release(version, EXAMPLES / "demo" / "manifest.yaml",
                                                  EXAMPLES / "reference-bot" / "strategy.yaml"), actor="tester")
    first = await record_intent(db, clock, rollout_id=None, environment="sim", account="canary",
                                instance="sim-canary", release="1.0.0", settings_before=None)
    first = await record_running(db, clock, first.id)
    assert (first.state, first.previous_id) == ("running", None)

    intent = await record_intent(db, clock, rollout_id=None, environment="sim", account="canary",
                                 instance="sim-canary", release="1.1.0", settings_before=SNAPSHOT)
    # Written before anything changed: it names what it replaces and what the account had, and
    # it alone is live (the row of 1.0.0 closed with it).
    assert (intent.state, intent.previous_id, intent.settings_before) == ("starting", first.id, SNAPSHOT)
    live = await live_deployment(db, "sim", "canary")
    assert (live.id, live.state) == (intent.id, "starting")

    running = await record_running(db, clock, intent.id)
    again = await record_running(db, clock, intent.id)
    assert running.state == again.state == "running" and running.settings_before == SNAPSHOT
    placed = [e async for e in audit.query(db, audit.AuditFilter(kind="deploy.placed"))]
    assert [e.payload["deployment"] for e in placed] == [first.id, intent.id]  # said once each
    [said] = [e async for e in audit.query(db, audit.AuditFilter(kind="deploy.intent"))
              if e.payload["deployment"] == intent.id]
    assert said.payload["settings_before"] == SNAPSHOT and said.payload["replaced"] == first.id
    assert (await audit.verify(db)).ok



async def test_an_intent_is_synced_to_disk_at_its_commit_and_a_record_is_not(sqlite_url, clock):
    # SQLite in WAL mode at synchronous=NORMAL loses its last commits to a power loss: an intent, written
    # before the account is changed, must not be one of them (FULL); a record of what happened may (NORMAL).
    database = Database(resolve_url(sqlite_url))
    await upgrade(database)
    commits: list[tuple[int, list[str]]] = []
    written: list[str] = []

    @event.listens_for(database.engine.sync_engine, "before_cursor_execute")
    def _statement(conn, cursor, statement, *args) -> None:
        words = statement.split()
        if words[0].upper() in ("INSERT", "UPDATE"):  # INSERT INTO table (...) / UPDATE table SET ...
            written.append(words[2] if words[0].upper() == "INSERT" else words[1])

    @event.listens_for(database.engine.sync_engine, "commit")
    def _commit(conn) -> None:
        commits.append((conn.exec_driver_sql("PRAGMA synchronous").scalar(), sorted(set(written))))
        written.clear()

    try:
        await add_release(database, clock, read_release("1.0.0", EXAMPLES / "demo" / "manifest.yaml",
                                                        EXAMPLES / "reference-bot" / "strategy.yaml"), actor="tester")
        intent = await record_intent(database, clock, rollout_id=None, environment="sim", account="canary",
                                     instance="sim-canary", release="1.0.0", settings_before=None)
        await record_running(database, clock, intent.id)
    finally:
        await database.close()
    full, normal = 2, 1  # PRAGMA synchronous's numbers
    assert [level for level, tables in commits if "deployments" in tables] == \
        [full, normal], commits  # the intent at FULL; its "running" after the start, a record, at NORMAL
    assert commits[0][0] == normal  # the release added: a record
