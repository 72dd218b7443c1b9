"""A command that moves a release forward is refused as expired when the daemon reads it after its
expiry, and never applied late; a pause given at the same time is still carried out.

The commands are written while no daemon runs, by a clock eleven minutes behind the daemon's (as if
they had been given eleven minutes before it started); the daemon then runs in process on the
embedded simulator and reads them on its first turn.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import yaml

from controller.clock import SimulatedClock
from controller.release_files import read_release
from controller.rollout.decide import State, Status
from controller.rollout.info import create_rollout, save_decision
from controller.rollout.pipeline import pipeline_from_document
from controller.store import audit
from controller.store.commands import get_command, submit_command
from controller.store.database import Database, resolve_url
from controller.store.deployments import live_deployment
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, MANIFEST, daemon_on_sim

PIPELINE = """
name: two-stages
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml}
  - {name: D, environment: sim, account: master, duration: 1h, policies: stage-c.yaml}
"""


async def test_a_promote_given_before_the_daemon_started_is_expired_not_applied(tmp_path):
    db = Database(resolve_url(f"sqlite:///{tmp_path / 'canary.db'}"))
    given = SimulatedClock(datetime.now(tz=UTC) - timedelta(minutes=11))
    try:
        await upgrade(db)
        for version, strategy in {"1.0.0": "strategy.yaml", "1.1.0": "strategy-next.yaml"}.items():
            await add_release(db, given, read_release(version, MANIFEST, BOT / strategy), actor="tester")
        info = await create_rollout(db, given, version="1.1.0", pipeline=pipeline_from_document(
            yaml.safe_load(PIPELINE)), actor="tester")
        info = await save_decision(db, given, info, State(Status.RUNNING, 0, given.time()))
        # Would be accepted had it been read in time: a forced promote with its reason.
        promote = await submit_command(db, given, rollout_id=info.id, kind="promote", actor="alice",
                                       reason="owner accepts", args={"force": True, "stage": "C"})
        pause = await submit_command(db, given, rollout_id=info.id, kind="pause", actor="alice")
    finally:
        await db.close()

    async with daemon_on_sim(tmp_path, {}, baseline=None) as running:
        async def answered():
            commands = [await get_command(running.db, c.id) for c in (promote, pause)]
            return commands if all(c.acked_at is not None for c in commands) else None
        expired, paused = await poll(answered, timeout=30, alive=running.gone, what="both commands' acks")

        deadline = (promote.created_at + timedelta(minutes=10)).isoformat(timespec="seconds").replace("+00:00", "Z")
        assert expired.outcome == "rejected", expired
        assert expired.message.startswith(f"expired at {deadline} (given at "), expired.message
        assert paused.outcome == "accepted", paused
        # The stage was never placed (its verification finds no bot and may roll back soon after):
        # what counts is that the rollout never left stage C.
        moves = [(r.payload["from"], r.payload["to"], r.payload["stage"]) async for r in
                 audit.query(running.db, audit.AuditFilter(kind="rollout.transition"))]
        assert moves[0] == ("running", "paused", "C"), moves
        assert all(stage == "C" and to != "promoting" for _, to, stage in moves), moves
        assert await live_deployment(running.db, "sim", "master") is None  # stage D was never placed
        [record] = [r async for r in audit.query(running.db, audit.AuditFilter(kind="command.promote"))]
        assert record.payload["accepted"] is False and record.payload["expired_at"] > 0


async def test_a_command_given_now_is_not_expired_by_a_daemon_whose_clock_runs_ahead(tmp_path):
    """`canaryctl` stamps a command on the wall clock; a daemon on an accelerated simulated clock
    (`--speed`, the demo) is soon hours ahead of it. The command's age is judged on the clock
    that stamped it, so a baseline given now is placed, not refused as given long ago."""
    async with daemon_on_sim(tmp_path, {"1.0.0": BOT / "strategy.yaml"}, baseline=None) as running:
        running.clock.advance(3600)  # the daemon's clock is an hour past the wall clock
        placed = await running.ctl("baseline", "1.0.0", "--account", "master")
        assert placed.code == 0, placed
        assert "expired" not in placed.out, placed.out
        assert await live_deployment(running.db, "sim", "master") is not None
