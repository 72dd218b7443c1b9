"""SIGKILL of the daemon at every rollback step, restart, rollback completed exactly once.

The exchange must outlive the daemon, so the simulator runs as its own process
(`canaryctl sim serve`) and the daemon reaches it as a ``testnet`` environment with file:
secrets. The daemon runs as `canaryctl run` with ``CANARY_FAILPOINTS=rollback.<step>.after``:
it kills itself right after the step's row is ``done``, the most informative place: the
step's effects are on the exchange and in the store, and the restarted daemon must neither
repeat them nor lose the steps after it. (A kill ``before`` a step is the same as an
interrupted ``running`` row of the previous step's successor, which ``after`` of the step
before already covers for the plan, since nothing happens between the two failpoints.)

The rollback is an operator's (``rollback`` command on a healthy 1.1.0 canary): deterministic,
and independent of how fast a policy detects a breach on a real-time clock.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from controller.rollout.decide import Status
from controller.rollout.info import create_rollout, get_rollout
from controller.rollout.pipeline import DEFAULT_PIPELINE, load_pipeline
from controller.rollout.rollback import STEPS, load_plan
from controller.store import audit
from controller.store.database import Database, resolve_url
from controller.store.deployments import get_deployment
from controller.store.models import AuditEvent, Deployment
from tests.daemon.harness import (ACTOR, CLOCK, assert_account_restored, daemon_died, exchange_config, place_baseline, poll,
                                  prepare_database, roll_back_until_killed)

PIPELINE = load_pipeline(DEFAULT_PIPELINE.with_name("demo.yaml"))
CANARY_PLACEMENT = "instances/sim-canary/placement.json"


def _placement_pid(state_dir) -> int | None:
    path = state_dir / CANARY_PLACEMENT
    return json.loads(path.read_text())["pid"] if path.exists() else None



@pytest.mark.parametrize("step", ("planned", *STEPS))
async def test_daemon_killed_after_rollback_step_resumes_and_completes_once(step, tmp_path, processes):
    """``planned``: killed once the plan is written, before its first step."""
    sim = processes.start_sim(seed=11)
    db_url = await prepare_database(tmp_path / "canary.db")
    config = exchange_config(tmp_path, sim)
    state_dir = tmp_path / "state"
    first_log, second_log = tmp_path / "daemon-1.log", tmp_path / "daemon-2.log"
    daemon = processes.start_daemon(db_url=db_url, config=config, state_dir=state_dir, log=first_log,
                                    failpoints=f"rollback.{step}.after")
    db = Database(resolve_url(db_url))
    try:
        # The baseline on the master account, then the canary of 1.1.0 on the sub-account.
        placed = await place_baseline(db, daemon_died(daemon, first_log))
        assert placed.outcome == "accepted", placed.message
        rollout = await create_rollout(db, CLOCK, version="1.1.0", pipeline=PIPELINE, actor=ACTOR)

        # The operator's rollback starts the rollback unless a policy has already (the sim's
        # sub-account holds 1.8 % of capital, under the 2 % cap, so the capital policies pass).
        # Either way the daemon then dies at the failpoint.
        await roll_back_until_killed(db, rollout.id, daemon, first_log, step=step, reason="crash test", timeout=40)
        plan = await load_plan(db, rollout.id)
        assert [s.name for s in plan] == list(STEPS)  # one account: the canary
        killed_at = STEPS.index(step) if step in STEPS else -1
        assert [s.state for s in plan] == ["done"] * (killed_at + 1) + ["pending"] * (len(STEPS) - killed_at - 1)
        assert (await get_rollout(db, rollout.id)).status is Status.ROLLING_BACK
        pid_at_kill = _placement_pid(state_dir)

        # Restart without the failpoint: the plan resumes after the killed step.
        second = processes.start_daemon(db_url=db_url, config=config, state_dir=state_dir, log=second_log)

        async def rolled_back():
            info = await get_rollout(db, rollout.id)
            return info if info.status in (Status.ROLLED_BACK, Status.FAILED) else None

        final = await poll(rolled_back, timeout=45, what="the resumed rollback", alive=daemon_died(second, second_log))
        assert final.status is Status.ROLLED_BACK, final.state

        # Store: every step done, once; the killed step and those before it ran in the first life only.
        plan = await load_plan(db, rollout.id)
        assert [(s.name, s.state, s.attempts) for s in plan] == [(name, "done", 1) for name in STEPS]
        chain = await audit.verify(db)
        assert chain.ok, chain
        async with db.read() as session:
            events = (await session.execute(select(AuditEvent).where(AuditEvent.kind.like("rollback.%"))
                                            .order_by(AuditEvent.seq))).scalars().all()
            deployments = (await session.execute(select(Deployment).where(Deployment.account == "canary")
                                                 .order_by(Deployment.id))).scalars().all()
        kinds = [e.kind for e in events]
        assert kinds.count("rollback.planned") == 1
        assert "rollback.step.failed" not in kinds
        done = [json.loads(e.payload)["position"] for e in events if e.kind == "rollback.step.done"]
        assert done == list(range(len(STEPS)))  # exactly one per position, in order

        # The previous release (the baseline 1.0.0) was started on the canary exactly once.
        live = [d for d in deployments if d.stopped_at is None]
        assert len(live) == 1 and live[0].rollout_id is None
        assert (await get_deployment(db, live[0].id)).release == "1.0.0"
        assert len(deployments) == 2  # 1.1.0 (stopped by the rollback) and 1.0.0
        running_pid = _placement_pid(state_dir)
        if killed_at >= STEPS.index("start_previous"):
            assert running_pid == pid_at_kill, "the restarted daemon started the previous release again"
        start = next(s for s in plan if s.name == "start_previous")
        assert start.detail["result"]["pid"] == running_pid

        # Exchange: no flatten order sent twice, leverage as the previous config says.
        await assert_account_restored(sim, db, "1.0.0", plan[STEPS.index("positions")].detail["client_id_prefix"])
    finally:
        await db.close()
