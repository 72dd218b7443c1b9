"""A policy's limits through the daemon: a dry-run policy's breach is recorded and shown and the
rollout keeps running; a policy inconclusive too often in a row pauses the rollout for a person.

The daemon runs in this process on the simulator (clock 10x) with the shipped policies plus one
policy per test, appended to its own copy of ``stage-c.yaml``; the healthy reference bot runs the
canary stage C of an hour, so nothing but the added policy acts within the test's seconds.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from sqlalchemy import select

from controller.rollout.decide import Status
from controller.rollout.info import create_rollout, get_rollout
from controller.rollout.pipeline import pipeline_from_document
from controller.store import audit
from controller.store.models import VerdictChange
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, daemon_on_sim
from tests.support.checkout import POLICIES

RELEASES = {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"}


def policies_with(folder: Path, policy: dict) -> Path:
    """A copy of the shipped policies whose stage C has ``policy`` too."""
    shutil.copytree(POLICIES, folder)
    stage_c = folder / "stage-c.yaml"
    document = yaml.safe_load(stage_c.read_text())
    document["policies"].append(policy)
    stage_c.write_text(yaml.safe_dump(document, sort_keys=False))
    return folder


async def kinds_audited(db, kind: str) -> list[audit.AuditRecord]:
    return [record async for record in audit.query(db, audit.AuditFilter(kind=kind))]


async def test_a_dry_run_breach_is_recorded_and_shown_and_the_rollout_keeps_running(tmp_path):
    # The bot's process is up: a policy that wants it down fails on its first sample.
    policies = policies_with(tmp_path / "policies", {
        "name": "c-dry-run-process-down", "checklist": "C: Ensure alerting is active and quiet",
        "source": "process", "metric": "up", "aggregate": "last", "window": "1m", "condition": "== 0",
        "on_breach": "rollback", "dry_run": True})
    async with daemon_on_sim(tmp_path, RELEASES, policies=policies) as site:
        pipeline = pipeline_from_document(yaml.safe_load(CANARY_PIPELINE))
        rollout = await create_rollout(site.db, site.clock, version="1.1.0", pipeline=pipeline, actor="tester")

        async def would_have():
            info = await get_rollout(site.db, rollout.id)
            return info if "c-dry-run-process-down" in info.state.dry_run else None

        info = await poll(would_have, timeout=60, alive=site.gone, what="the dry-run policy's breach")
        record = info.state.dry_run["c-dry-run-process-down"]
        assert record.would == "rolled back" and record.reason == "1 is not == 0"
        (event,) = await kinds_audited(site.db, "policy.dry_run_breach")
        assert event.payload["policy"] == "c-dry-run-process-down" and event.payload["would_have"] == "rolled back"
        async with site.db.read() as session:
            stored = (await session.execute(select(VerdictChange.verdict).where(
                VerdictChange.policy == "c-dry-run-process-down"))).scalars().all()
        assert "fail" in stored
        # Not acted on: a turn later (the verdicts go on failing every tick) the rollout still runs.
        shown = await site.ctl("status", str(rollout.id))
        assert shown.code == 0 and "c-dry-run-process-down would have rolled back" in shown.out, shown.out
        info = await get_rollout(site.db, rollout.id)
        assert info.status is Status.RUNNING and not await kinds_audited(site.db, "rollback.started")
        assert info.state.dry_run["c-dry-run-process-down"].count == 1  # one breach, counted once
        assert (await audit.verify(site.db)).ok


async def test_a_policy_inconclusive_too_often_in_a_row_pauses_the_rollout(tmp_path):
    # One process sample every 5 s of clock can never make 1000: inconclusive on every tick.
    policies = policies_with(tmp_path / "policies", {
        "name": "c-process-samples-limit", "checklist": "C: Ensure alerting is active and quiet",
        "source": "process", "metric": "up", "aggregate": "last", "window": "1m", "condition": "== 1",
        "min_samples": 1000, "on_breach": "hold", "gate": False, "inconclusive_limit": 5})
    async with daemon_on_sim(tmp_path, RELEASES, policies=policies) as site:
        pipeline = pipeline_from_document(yaml.safe_load(CANARY_PIPELINE))
        rollout = await create_rollout(site.db, site.clock, version="1.1.0", pipeline=pipeline, actor="tester")
        paused = await site.until(rollout.id, Status.PAUSED, Status.ROLLING_BACK, Status.ROLLED_BACK, timeout=60)
        assert paused.status is Status.PAUSED, paused.state
        assert paused.state.paused_from is Status.RUNNING
        assert paused.state.reason.startswith(
            "c-process-samples-limit: 5 inconclusive evaluations in a row (inconclusive_limit 5)"), paused.state.reason
        (event,) = await kinds_audited(site.db, "policy.limit_reached")
        assert event.payload["policy"] == "c-process-samples-limit" and event.payload["outcome"] == "inconclusive"
        # A person decides: the rollout waits paused, its release still verified, until then.
        assert (await get_rollout(site.db, rollout.id)).status is Status.PAUSED
        assert (await audit.verify(site.db)).ok
