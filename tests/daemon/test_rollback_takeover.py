"""Two daemons on one PostgreSQL: the owner of a rollout dies in the middle of its rollback (phase 1
begun: the release stopped, its orders cancelled), and the standby takes the rollout over once the
lease expired and completes the rollback, every step exactly once (the store's steps and audit, and
the simulator's order and leverage history), the bots under their supervisors.

The daemons run as `canaryctl run` processes, the simulator as `canaryctl sim serve`; the owner
kills itself at ``rollback.cancel_orders.after`` (`controller.failpoints`).
"""

from __future__ import annotations

import json

import pytest
import yaml
from sqlalchemy import select

from controller.release_files import read_release
from controller.rollout.decide import Status
from controller.rollout.info import create_rollout, get_rollout
from controller.rollout.pipeline import DEFAULT_PIPELINE, load_pipeline
from controller.rollout.rollback import STEPS, load_plan
from controller.store import audit, leases, placement_leases
from controller.store.database import Database, resolve_url
from controller.store.models import AuditEvent
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.daemon.harness import (ACTOR, CLOCK, RELEASES, assert_account_restored, daemon_died, exchange_config, place_baseline,
                                  poll, roll_back_until_killed)
from tests.support.checkout import EXAMPLES

PIPELINE = load_pipeline(DEFAULT_PIPELINE.with_name("demo.yaml"))
LEASE = 3.0
KILLED_AFTER = "cancel_orders"


@pytest.mark.postgres
async def test_the_standby_completes_a_rollback_its_dead_owner_began_every_step_once(tmp_path, processes,
                                                                                       postgres_url):
    db = Database(resolve_url(postgres_url))
    await upgrade(db)
    for version, config in RELEASES:
        await add_release(db, CLOCK, read_release(version, EXAMPLES / "demo" / "manifest.yaml",
                                                  EXAMPLES / "reference-bot" / config, "test"), actor=ACTOR)
    sim = processes.start_sim(seed=11)
    config = exchange_config(tmp_path, sim)
    config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "lease_seconds": LEASE}))
    state_dir = tmp_path / "state"
    first_log, second_log = tmp_path / "daemon-a.log", tmp_path / "daemon-b.log"
    first = processes.start_daemon(db_url=postgres_url, config=config, state_dir=state_dir, log=first_log,
                                   failpoints=f"rollback.{KILLED_AFTER}.after")
    try:
        placed = await place_baseline(db, daemon_died(first, first_log))
        assert placed.outcome == "accepted", placed.message
        rollout = await create_rollout(db, CLOCK, version="1.1.0", pipeline=PIPELINE, actor=ACTOR)

        async def owned():
            lease = (await leases.leases(db)).get(rollout.id)
            return lease if lease is not None and lease.owner.endswith(f":{first.pid}") else None

        owner_lease = await poll(owned, timeout=20, what="the first daemon to own the rollout",
                                 alive=daemon_died(first, first_log))
        second = processes.start_daemon(db_url=postgres_url, config=config, state_dir=state_dir, log=second_log)

        await roll_back_until_killed(db, rollout.id, first, first_log, step=KILLED_AFTER, reason="takeover test",
                                     timeout=60)
        plan = await load_plan(db, rollout.id)
        done_before = STEPS.index(KILLED_AFTER) + 1
        assert [s.state for s in plan] == ["done"] * done_before + ["pending"] * (len(STEPS) - done_before)

        async def rolled_back():
            info = await get_rollout(db, rollout.id)
            return info if info.status in (Status.ROLLED_BACK, Status.FAILED) else None

        final = await poll(rolled_back, timeout=60, what="the standby to complete the rollback",
                           alive=daemon_died(second, second_log))
        assert final.status is Status.ROLLED_BACK, final.state

        # The standby took the rollout over at the next epoch, and every step ran once, in order.
        [taken] = [e async for e in audit.query(db, audit.AuditFilter(kind="lease.taken_over"))]
        assert (taken.payload["previous_owner"], taken.payload["previous_epoch"]) == (owner_lease.owner,
                                                                                       owner_lease.epoch)
        assert taken.payload["owner"].endswith(f":{second.pid}")
        plan = await load_plan(db, rollout.id)
        assert [(s.name, s.state, s.attempts) for s in plan] == [(name, "done", 1) for name in STEPS]
        async with db.read() as session:
            events = (await session.execute(select(AuditEvent).where(AuditEvent.kind.like("rollback.%"))
                                            .order_by(AuditEvent.seq))).scalars().all()
        kinds = [e.kind for e in events]
        assert kinds.count("rollback.planned") == 1 and "rollback.step.failed" not in kinds
        assert [json.loads(e.payload)["position"] for e in events if e.kind == "rollback.step.done"] == \
            list(range(len(STEPS)))
        assert (await audit.verify(db)).ok

        # The previous release runs on the canary account under its supervisor, which holds the lease.
        start = next(s for s in plan if s.name == "start_previous")
        held = await placement_leases.holder(db, "sim-canary")
        assert held.owner.endswith(f":{start.detail['result']['pid']}")

        # Exchange: no flatten order sent twice, leverage as the previous config says.
        await assert_account_restored(sim, db, "1.0.0", plan[STEPS.index("positions")].detail["client_id_prefix"])
    finally:
        await db.close()
