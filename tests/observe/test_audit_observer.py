"""The audit source reports whether the chain verifies, and a database it cannot read is nodata."""

from __future__ import annotations

from sqlalchemy import text

from controller.observe.audit import AuditObserver
from controller.observe.observation import Heartbeat, Observation
from controller.store import audit
from controller.store.database import Database, resolve_url


async def test_an_intact_chain_is_observed_as_1_and_an_edited_one_as_0(db, clock):
    seen = []
    observer = AuditObserver(db, clock=clock, sink=seen.append)
    async with db.write() as session:
        await audit.append(session, clock, actor="alice", kind="test", subject="x")
    assert await observer.check_once() is True
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_events SET actor = 'mallory'"))
    assert await observer.check_once() is False
    values = [o.value for o in seen if isinstance(o, Observation)]
    assert values == [1.0, 0.0] and all(h.ok for h in seen if isinstance(h, Heartbeat))


async def test_an_unreadable_database_is_a_failed_heartbeat_and_no_observation(tmp_path, clock):
    missing = Database(resolve_url(f"sqlite:///{tmp_path / 'never-migrated.db'}"))
    seen = []
    try:
        assert await AuditObserver(missing, clock=clock, sink=seen.append).check_once() is None
    finally:
        await missing.close()
    assert [type(s) for s in seen] == [Heartbeat] and not seen[0].ok
