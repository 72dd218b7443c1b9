"""Two rollout runners on one rollout, on a real PostgreSQL: the one whose lease was taken over has its
next write refused (nothing changes, `fencing.refused` is audited) and stops; the new owner carries the
operator's command out, once."""

from __future__ import annotations

import asyncio

import pytest

from controller.config.yamlfile import load_model_text
from controller.metrics import ControllerMetrics
from controller.release_files import read_release
from controller.rollout.decide import State, Status, WriteDigest
from controller.rollout.engine import PolicySet, RolloutRunner, RunnerCadence
from controller.rollout.info import create_rollout, get_rollout, save_decision
from controller.rollout.pipeline import Pipeline
from controller.rollout.site import Site
from controller.store import audit, leases
from controller.store.commands import get_command, submit_command
from controller.store.database import Database, resolve_url
from controller.store.leases import Fence, FencingRefused
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.daemon.harness import poll
from tests.support.checkout import EXAMPLES, POLICIES

CANARY = """\
name: canary-only
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02}
"""


@pytest.mark.postgres
async def test_the_runner_whose_lease_was_taken_over_is_refused_and_stops_and_the_new_owner_acts(postgres_url, clock):
    db = Database(resolve_url(postgres_url))
    await upgrade(db)
    runners: list[asyncio.Task] = []
    try:
        await add_release(db, clock, read_release("1.1.0", EXAMPLES / "demo" / "manifest.yaml",
                                                  EXAMPLES / "reference-bot" / "strategy.yaml"), actor="tester")
        info = await create_rollout(db, clock, version="1.1.0", actor="tester",
                                    pipeline=load_model_text(Pipeline, CANARY, "pipeline.yaml"))
        # A rollout whose rollback failed waits for an operator: its runner places and watches nothing.
        await save_decision(db, clock, info, State(status=Status.FAILED, reason="a step failed"))
        site = Site(clock, {})

        def runner(owner: str, epoch: int) -> asyncio.Task:
            fenced = db.guarded(Fence(info.id, epoch, owner, clock))
            task = asyncio.create_task(RolloutRunner(
                rollout_id=info.id, db=fenced, site=site, policies=PolicySet(POLICIES), metrics=ControllerMetrics(clock),
                cadence=RunnerCadence(command_poll=0.05)).run())
            runners.append(task)
            return task

        [(lease_a, _)] = await leases.claim(db, clock, "host-a:1", seconds=0)  # expires at once: a daemon that paused
        first = runner("host-a:1", lease_a.epoch)
        [(lease_b, previous)] = await leases.claim(db, clock, "host-b:2", seconds=60)
        assert (previous, lease_b.epoch) == ("host-a:1", lease_a.epoch + 1)

        retry = await submit_command(db, clock, rollout_id=info.id, kind="rollback", actor="tester", reason="retry")
        with pytest.raises(FencingRefused):
            await asyncio.wait_for(first, 30)  # its next write, deciding the command, was refused: it stopped
        assert (await get_rollout(db, info.id)).status is Status.FAILED  # and changed nothing
        assert (await get_command(db, retry.id)).acked_at is None
        second = runner("host-b:2", lease_b.epoch)

        async def done():
            rollout = await get_rollout(db, info.id)
            return rollout if rollout.status is Status.ROLLED_BACK else None

        await poll(done, timeout=30, what="the new owner to carry the rollback out")
        await asyncio.wait_for(second, 30)
        answered = await get_command(db, retry.id)
        assert answered.outcome == "accepted"
        refused = [e async for e in audit.query(db, audit.AuditFilter(kind="fencing.refused"))]
        assert refused and {(e.payload["owner"], e.payload["current_owner"]) for e in refused} == \
            {("host-a:1", "host-b:2")}
        transitions = [e.payload["to"] async for e in audit.query(db, audit.AuditFilter(kind="rollout.transition"))
                       if e.payload.get("from") == "failed"]
        assert transitions == ["rolling_back"]  # decided once, by the owner
        assert (await audit.verify(db)).ok
    finally:
        for task in runners:
            task.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        await db.close()


DIGESTED = """\
name: digested
stages:
  - {name: D, environment: sim, account: canary, duration: 2h, policies: stage-c.yaml, capital_cap: 0.02,
     digest: {every: 1h}}
"""


async def test_a_digest_write_refused_by_the_fence_stops_the_runner_instead_of_being_logged(tmp_path, sim_clock):
    """A digest that could not be written is logged and asked for again, but a write refused because
    another daemon took the rollout over is no failure of the digest: the runner must stop at once."""
    db = Database(resolve_url(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"))
    await upgrade(db)
    try:
        await add_release(db, sim_clock, read_release("1.1.0", EXAMPLES / "demo" / "manifest.yaml",
                                                      EXAMPLES / "reference-bot" / "strategy.yaml"), actor="tester")
        info = await create_rollout(db, sim_clock, version="1.1.0", actor="tester",
                                    pipeline=load_model_text(Pipeline, DIGESTED, "pipeline.yaml"))
        [(lease, _)] = await leases.claim(db, sim_clock, "host-a:1", seconds=0)
        await leases.claim(db, sim_clock, "host-b:2", seconds=60)  # takes it over: host-a's epoch is stale
        stale = RolloutRunner(rollout_id=info.id, db=db.guarded(Fence(info.id, lease.epoch, "host-a:1", sim_clock)),
                              site=Site(sim_clock, {}), policies=PolicySet(POLICIES),
                              metrics=ControllerMetrics(sim_clock), cadence=RunnerCadence(command_poll=0.05))
        with pytest.raises(FencingRefused):
            await stale._write_digest(info, WriteDigest(stage=0, number=1, start=sim_clock.time() - 3600,
                                                        end=sim_clock.time()))
        assert [e async for e in audit.query(db, audit.AuditFilter(kind="stage.digest"))] == []
    finally:
        await db.close()
