"""Verdict changes are stored with their evidence, once per change, and survive a restart."""

from __future__ import annotations

import json

from sqlalchemy import select

from controller.analysis.verdict import Outcome, Verdict
from controller.store.models import Release, Rollout, VerdictChange, ConfigSnapshot
from controller.store.verdicts import VerdictLog

T0 = 1_800_000_000.0


async def a_rollout(db, clock) -> int:
    async with db.write() as session:
        session.add(ConfigSnapshot(sha256="c" * 64, content="{}", created_at=clock.now()))
        release = Release(version="1.0.0", manifest="{}", manifest_sha256="m" * 64, artifact_sha256="a" * 64,
                          config_sha256="c" * 64, created_by="t", created_at=clock.now())
        session.add(release)
        await session.flush()
        rollout = Rollout(release_id=release.id, pipeline="{}", state="running", stage="C",
                          created_at=clock.now(), updated_at=clock.now())
        session.add(rollout)
        await session.flush()
        return rollout.id


def verdict(outcome, at, value, action=None, group=()):
    return Verdict(policy="c-leverage", outcome=outcome, at=at, value=value, threshold=0.0, condition="== 0",
                   window=86400.0, samples=3, group=group, reason="r", action=action)


async def stored(db):
    async with db.read() as session:
        return (await session.execute(select(VerdictChange).order_by(VerdictChange.id))).scalars().all()


async def test_only_changes_are_stored_with_their_evidence(db, clock):
    log = VerdictLog(db, await a_rollout(db, clock))
    assert len(await log.record([verdict(Outcome.PASS, T0, 0.0)])) == 1
    assert await log.record([verdict(Outcome.PASS, T0 + 1, 0.0)]) == []
    breach = verdict(Outcome.FAIL, T0 + 2, 1.0, action="rollback", group=(("symbol", "SOLUSDT"),))
    assert await log.record([breach]) == [breach]
    rows = await stored(db)
    assert [(r.verdict, r.value) for r in rows] == [("pass", 0.0), ("fail", 1.0)]
    evidence = json.loads(rows[1].evidence)
    assert evidence["group"] == [["symbol", "SOLUSDT"]] and evidence["action"] == "rollback"
    assert rows[1].evaluated_at.timestamp() == T0 + 2 and rows[1].window_seconds == 86400


async def test_after_a_restart_an_unchanged_verdict_is_not_stored_again(db, clock):
    rollout = await a_rollout(db, clock)
    await VerdictLog(db, rollout).record([verdict(Outcome.FAIL, T0, 1.0, action="rollback")])
    restarted = VerdictLog(db, rollout)
    await restarted.resume()
    assert await restarted.record([verdict(Outcome.FAIL, T0 + 5, 1.0, action="rollback")]) == []
    assert len(await restarted.record([verdict(Outcome.PASS, T0 + 6, 0.0)])) == 1
    assert len(await stored(db)) == 2


async def test_each_group_of_a_policy_is_stored_when_its_own_outcome_changes(db, clock):
    """20 symbols judged one after another: one row per group and change, not one per alternation."""
    log = VerdictLog(db, await a_rollout(db, clock))
    symbols = [f"S{n:02d}USDT" for n in range(20)]
    for second in range(30):
        await log.record([verdict(Outcome.PASS, T0 + second, 0.0, group=(("symbol", s),)) for s in symbols])
    await log.record([verdict(Outcome.FAIL, T0 + 31, 1.0, action="rollback", group=(("symbol", "S07USDT"),))])
    rows = await stored(db)
    assert len(rows) == 21
    assert [(r.group_key, r.verdict) for r in rows[-1:]] == [("symbol=S07USDT", "fail")]
    restarted = VerdictLog(db, rows[0].rollout_id)
    await restarted.resume()
    assert await restarted.record([verdict(Outcome.PASS, T0 + 40, 0.0, group=(("symbol", s),))
                                   for s in symbols if s != "S07USDT"]) == []
