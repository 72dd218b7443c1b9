"""SIGKILL of the daemon at every write boundary of a placement, restart: the stage is placed once.

The canary account runs 1.0.0; a rollout places 1.1.0 there. The daemon (`canaryctl run` with
``CANARY_FAILPOINTS=...``) dies at one boundary of the placement: after its intent is written,
after the old release is stopped, after the new settings are applied, between the spawn of the
bot and its record, after the start before the row says running, after the placement, after the
stage run is written. The restarted daemon must finish that placement, not start another: one
intent, one stage run, exactly one bot on the account (the new release, as Linux and the
placement record tell it), and the exchange's leverage as the new config says, read back through
the exchange client.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from controller.rollout.decide import Status
from controller.rollout.info import create_rollout, get_rollout
from controller.rollout.pipeline import Pipeline
from controller.store.database import Database, resolve_url
from controller.store.models import AuditEvent, Deployment, StageRun
from tests.daemon.harness import (ACTOR, CLOCK, bots_in, config_leverage, daemon_died, exchange_config,
                                  place_baseline, poll, prepare_database)

PIPELINE = Pipeline.model_validate({"name": "crash", "stages": [
    {"name": "C", "environment": "sim", "account": "canary", "duration": "1h", "policies": "stage-a.yaml"}]})
"""One stage on the canary account, an hour long, judged by policies a healthy 1.1.0 passes: the
restarted daemon places it and it stays running while the test looks."""

BOUNDARIES = ("placement.intent.after", "placement.stopped.after", "placement.settings.after",
              "deploy.process.spawned", "placement.started.after", "engine.place.after", "engine.stage_run.after")


@pytest.mark.parametrize("failpoint", BOUNDARIES)
async def test_daemon_killed_during_a_placement_places_the_release_once(failpoint, tmp_path, processes):
    sim = processes.start_sim(seed=19)
    db_url = await prepare_database(tmp_path / "canary.db")
    config = exchange_config(tmp_path, sim)
    state_dir = tmp_path / "state"
    folder = state_dir / "instances" / "sim-canary"
    setup_log, first_log, second_log = (tmp_path / f"daemon-{n}.log" for n in range(3))
    db = Database(resolve_url(db_url))
    try:
        # 1.0.0 on the canary account, placed by a daemon without failpoints that then stops (the bot
        # outlives it): the failpoints are armed for the rollout's placement only.
        setup = processes.start_daemon(db_url=db_url, config=config, state_dir=state_dir, log=setup_log)
        placed = await place_baseline(db, daemon_died(setup, setup_log), account="canary")
        assert placed.outcome == "accepted", placed.message
        setup.terminate()
        assert setup.wait(timeout=30) == 0, setup_log.read_text(errors="replace")[-3000:]
        [baseline_bot] = bots_in(folder)

        daemon = processes.start_daemon(db_url=db_url, config=config, state_dir=state_dir, log=first_log,
                                        failpoints=failpoint)
        rollout = await create_rollout(db, CLOCK, version="1.1.0", pipeline=PIPELINE, actor=ACTOR)

        async def died():
            return daemon.poll() is not None

        await poll(died, timeout=40, what=f"the daemon to die at {failpoint}")
        assert daemon.returncode == -9, first_log.read_text(errors="replace")[-3000:]

        second = processes.start_daemon(db_url=db_url, config=config, state_dir=state_dir, log=second_log)

        async def placed_and_running():
            info = await get_rollout(db, rollout.id)
            assert info.status not in (Status.ROLLING_BACK, Status.ROLLED_BACK, Status.FAILED), info.state
            record = folder / "placement.json"
            if info.status is not Status.RUNNING or not record.exists():
                return None
            return json.loads(record.read_text())

        record = await poll(placed_and_running, timeout=60, what="the placement finished by the restarted daemon",
                            alive=daemon_died(second, second_log))

        # Linux and the deployer's record: one bot on the account, the new release.
        assert record["release"] == "1.1.0"
        assert bots_in(folder) == [record["pid"]], "not exactly one bot on the canary account"
        assert record["pid"] != baseline_bot

        # The store: one intent, now running and live; one stage run; the chain intact.
        async with db.read() as session:
            mine = (await session.execute(select(Deployment).where(Deployment.rollout_id == rollout.id))).scalars().all()
            runs = (await session.execute(select(StageRun).where(StageRun.rollout_id == rollout.id))).scalars().all()
            intents = (await session.execute(select(AuditEvent).where(AuditEvent.kind == "deploy.intent"))).scalars().all()
        assert [(d.state, d.stopped_at) for d in mine] == [("running", None)]
        assert len(runs) == 1
        assert sum(json.loads(e.payload).get("rollout") == rollout.id for e in intents) == 1

        # The exchange: the new config's leverage on every symbol it names.
        expected = await config_leverage(db, "1.1.0")
        async with sim.client("canary") as client:
            await client.sync_time()
            applied = {s.symbol: s.leverage for s in await client.symbol_settings()}
        assert {s: applied.get(s) for s in expected} == expected
    finally:
        await db.close()
