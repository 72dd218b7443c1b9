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


def latency(at, value, breaching_since=None, group=()):
    """A policy with a `for` of 10 minutes: past its threshold, a pass is pending until then."""
    return Verdict(policy="c-latency", outcome=Outcome.PASS, at=at, value=value, threshold=0.5, condition="< 0.5",
                   window=900.0, samples=30, group=group, breaching_since=breaching_since,
                   fails_at=None if breaching_since is None else breaching_since + 600)


async def test_a_pass_turning_pending_is_stored_with_when_its_for_runs_out(db, clock):
    log = VerdictLog(db, await a_rollout(db, clock))
    await log.record([latency(T0, 0.2)])
    assert len(await log.record([latency(T0 + 10, 0.7, breaching_since=T0 + 10)])) == 1
    assert await log.record([latency(T0 + 11, 0.8, breaching_since=T0 + 10)]) == []  # the same breach
    evidence = json.loads((await stored(db))[-1].evidence)
    assert (evidence["breaching_since"], evidence["fails_at"]) == (T0 + 10, T0 + 610)


async def test_a_policy_flapping_round_its_threshold_is_stored_pending_once_and_its_calm_return_once(db, clock):
    """Pending and back every 5 s for an hour: not a row per turn. The return to a plain pass is
    stored once it has held for the calm, and a restarted log knows the policy was pending."""
    rollout = await a_rollout(db, clock)
    log = VerdictLog(db, rollout)
    await log.record([latency(T0, 0.2)])
    for step in range(720):
        at = T0 + 5 * step
        await log.record([latency(at, 0.7, breaching_since=at) if step % 2 else latency(at, 0.4)])
    rows = await stored(db)
    # the first pass, the first pending, then a later breach's countdown once per `for` run out (10 min)
    assert len(rows) == 1 + 1 + 5, [(r.verdict, json.loads(r.evidence)["breaching_since"]) for r in rows]
    assert json.loads(rows[-1].evidence)["breaching_since"] is not None  # it is still shown pending

    restarted = VerdictLog(db, rollout)
    await restarted.resume()
    calm = T0 + 3600
    assert await restarted.record([latency(calm + s, 0.2) for s in range(0, 60, 5)]) == []
    (back,) = await restarted.record([latency(calm + 60, 0.2)])
    assert back.breaching_since is None
    assert await restarted.record([latency(calm + 120, 0.2)]) == []


async def test_a_pending_group_cleared_by_another_groups_plain_pass(db, clock):
    """A policy's verdict speaks for its worst group: SOL pending, then BTC's plain pass (SOL recovered)
    is stored once calm, so the newest pass of the policy is a plain one."""
    log = VerdictLog(db, await a_rollout(db, clock))
    sol, btc = (("symbol", "SOLUSDT"),), (("symbol", "BTCUSDT"),)
    await log.record([latency(T0, 0.2, group=btc)])
    await log.record([latency(T0 + 1, 0.7, breaching_since=T0 + 1, group=sol)])
    assert await log.record([latency(T0 + 2, 0.2, group=btc)]) == []
    assert [v.group for v in await log.record([latency(T0 + 62, 0.2, group=btc)])] == [btc]
    assert [(r.group_key, json.loads(r.evidence)["breaching_since"]) for r in await stored(db)] == [
        ("symbol=BTCUSDT", None), ("symbol=SOLUSDT", T0 + 1), ("symbol=BTCUSDT", None)]
