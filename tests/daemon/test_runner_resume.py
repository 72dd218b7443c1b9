"""A daemon killed in the middle of a placement, restarted: what its runner does first.

The exchange outlives the daemon (`canaryctl sim serve` as its own process, reached as a
``testnet`` environment); the daemon is `canaryctl run` with a failpoint that SIGKILLs it right
after the release is placed on the canary account (``engine.place.after``) or right after its
stage run is written (``engine.stage_run.after``), before the decision that says ``placed``.
The restarted daemon finds the rollout ``promoting``.
"""

from __future__ import annotations

from sqlalchemy import select

from controller.rollout.decide import Status
from controller.rollout.info import create_rollout, get_rollout
from controller.rollout.pipeline import DEFAULT_PIPELINE, load_pipeline
from controller.store.commands import get_command, submit_command
from controller.store.database import Database, resolve_url
from controller.store.deployments import live_deployment
from controller.store.models import StageRun
from tests.daemon.harness import (ACTOR, CLOCK, daemon_died, exchange_config, log_events, place_baseline, poll,
                                  prepare_database)

PIPELINE = load_pipeline(DEFAULT_PIPELINE.with_name("demo.yaml"))



async def _killed_while_placing(failpoint, tmp_path, processes):
    """The baseline on the master account, then a rollout of 1.1.0 whose daemon dies at ``failpoint``."""
    sim = processes.start_sim(seed=11)
    db_url = await prepare_database(tmp_path / "canary.db")
    config = exchange_config(tmp_path, sim)
    first_log = tmp_path / "daemon-1.log"
    daemon = processes.start_daemon(db_url=db_url, config=config, state_dir=tmp_path / "state", log=first_log,
                                    failpoints=failpoint)
    db = Database(resolve_url(db_url))
    placed = await place_baseline(db, daemon_died(daemon, first_log))
    assert placed.outcome == "accepted", placed.message
    rollout = await create_rollout(db, CLOCK, version="1.1.0", pipeline=PIPELINE, actor=ACTOR)

    async def died():
        return daemon.poll() is not None

    await poll(died, timeout=40, what=f"the daemon to die at {failpoint}")
    assert daemon.returncode == -9, first_log.read_text(errors="replace")[-3000:]
    assert (await get_rollout(db, rollout.id)).status is Status.PROMOTING
    assert (await live_deployment(db, "sim", "canary")).release == "1.1.0"
    return db, db_url, config, rollout


async def _stage_runs(db, rollout_id):
    async with db.read() as session:
        return (await session.execute(select(StageRun).where(StageRun.rollout_id == rollout_id)
                                      .order_by(StageRun.id))).scalars().all()


async def test_a_rollback_given_while_the_daemon_was_down_is_decided_before_the_resume_places(tmp_path, processes):
    db, db_url, config, rollout = await _killed_while_placing("engine.place.after", tmp_path, processes)
    try:
        command = await submit_command(db, CLOCK, rollout_id=rollout.id, kind="rollback", actor=ACTOR,
                                       reason="the canary must not run")
        second_log = tmp_path / "daemon-2.log"
        second = processes.start_daemon(db_url=db_url, config=config, state_dir=tmp_path / "state", log=second_log)

        async def finished():
            info = await get_rollout(db, rollout.id)
            return info if info.status in (Status.ROLLED_BACK, Status.FAILED) else None

        final = await poll(finished, timeout=45, what="the operator's rollback", alive=daemon_died(second, second_log))
        assert final.status is Status.ROLLED_BACK, final.state
        answer = await get_command(db, command.id)
        assert (answer.outcome, answer.message) == ("accepted", "rolling back")
        # The restarted runner neither placed the release again nor opened a stage run for it.
        said = [e.get("text", "") for e in log_events(second_log) if e.get("event") == "rollout_event"]
        assert not [text for text in said if "placed on sim/canary" in text], said
        assert await _stage_runs(db, rollout.id) == []
        assert (await live_deployment(db, "sim", "canary")).release == "1.0.0"
    finally:
        await db.close()


async def test_a_placement_resumed_after_a_crash_reuses_its_stage_run(tmp_path, processes):
    db, db_url, config, rollout = await _killed_while_placing("engine.stage_run.after", tmp_path, processes)
    try:
        (first,) = await _stage_runs(db, rollout.id)
        second_log = tmp_path / "daemon-2.log"
        second = processes.start_daemon(db_url=db_url, config=config, state_dir=tmp_path / "state", log=second_log)

        async def placed():
            info = await get_rollout(db, rollout.id)
            return info if info.status is not Status.PROMOTING else None

        await poll(placed, timeout=45, what="the resumed placement", alive=daemon_died(second, second_log))
        (run,) = await _stage_runs(db, rollout.id)
        assert run.id == first.id and run.stage == PIPELINE.stages[0].name
        assert run.started_at > first.started_at  # the stage's clock restarts with the resumed placement
    finally:
        await db.close()
