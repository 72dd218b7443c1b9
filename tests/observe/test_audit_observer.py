"""The audit source reports whether the chain verifies, and a database it cannot read is nodata."""

from __future__ import annotations

from sqlalchemy import text

from controller.analysis.observation import Heartbeat, Observation
from controller.observe.audit import AuditObserver
from controller.store import audit
from controller.store.database import Database, resolve_url


async def test_an_intact_chain_is_observed_as_1_and_an_edited_one_as_0(db, clock):
    seen = []
    observer = AuditObserver(db, clock=clock, sink=seen.append)
    async with db.write() as session:
        await audit.append(session, clock, actor="alice", kind="test", subject="x")
    assert await observer.read_once() is True
    async with db.engine.begin() as conn:
        await conn.execute(text("UPDATE audit_events SET actor = 'mallory'"))
    assert await observer.read_once() is False
    values = [o.value for o in seen if isinstance(o, Observation)]
    assert values == [1.0, 0.0] and all(h.ok for h in seen if isinstance(h, Heartbeat))


async def test_an_unreadable_database_is_a_failed_heartbeat_and_no_observation(tmp_path, clock):
    missing = Database(resolve_url(f"sqlite:///{tmp_path / 'never-migrated.db'}"))
    seen = []
    try:
        assert await AuditObserver(missing, clock=clock, sink=seen.append).read_once() is None
    finally:
        await missing.close()
    assert [type(s) for s in seen] == [Heartbeat] and not seen[0].ok


async def test_the_shipped_audit_policy_passes_an_intact_chain_and_holds_on_a_tampered_one(db, clock):
    from controller.analysis.policy import load_policies
    from controller.analysis.verdict import Outcome
    from controller.config.strategy import StrategyConfig
    from controller.config.yamlfile import load_model
    from controller.verification import Verification
    from tests.support.checkout import EXAMPLES, REPO

    policy = next(p for f in load_policies([REPO / "policies"]).values() for p in f.policies
                  if p.name == "a-audit-chain-verifies")
    latest = {}
    verification = Verification(policies=[policy], clock=clock, on_verdicts=lambda vs: latest.update({v.policy: v for v in vs}),
                                config=load_model(StrategyConfig, EXAMPLES / "reference-bot" / "strategy.yaml"))
    observer = AuditObserver(db, clock=clock, sink=verification.sink)
    async with db.write() as session:
        await audit.append(session, clock, actor="alice", kind="release.added", subject="release:1.0.0")
    await observer.read_once()
    assert latest[policy.name].outcome is Outcome.PASS
    async with db.engine.begin() as conn:
        await conn.execute(text("DELETE FROM audit_events"))
    await observer.read_once()
    verdict = latest[policy.name]
    assert verdict.outcome is Outcome.FAIL and verdict.action == "hold" and verdict.value == 0
