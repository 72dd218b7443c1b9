"""A runner woken for a command its own process has just stored takes it at once, not at its next
poll of the store (the harness polls seldom and wakes the runner for its own commands)."""

from __future__ import annotations

import asyncio

from controller.config.yamlfile import load_model_text
from controller.metrics import ControllerMetrics
from controller.release_files import read_release
from controller.rollout.decide import State, Status
from controller.rollout.engine import PolicySet, RolloutRunner, RunnerCadence
from controller.rollout.info import RolloutInfo, create_rollout, get_rollout, save_decision
from controller.rollout.pipeline import Pipeline
from controller.rollout.site import Site
from controller.store.commands import get_command, submit_command
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.support.checkout import EXAMPLES, POLICIES

CANARY = """\
name: canary-only
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02}
"""
HOUR = 3600.0


class TurnsCounted(RolloutRunner):
    """A runner that says when it has taken a turn."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.turned = asyncio.Event()

    async def _turn(self, info: RolloutInfo) -> RolloutInfo:
        info = await super()._turn(info)
        self.turned.set()
        return info


async def test_a_woken_runner_takes_a_command_before_its_next_poll(tmp_path, sim_clock):
    db = Database(resolve_url(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"))
    await upgrade(db)
    task = None
    try:
        await add_release(db, sim_clock, read_release("1.1.0", EXAMPLES / "demo" / "manifest.yaml",
                                                      EXAMPLES / "reference-bot" / "strategy.yaml"), actor="tester")
        info = await create_rollout(db, sim_clock, version="1.1.0", actor="tester",
                                    pipeline=load_model_text(Pipeline, CANARY, "pipeline.yaml"))
        # A rollout whose rollback failed waits for an operator: its runner places and watches nothing.
        await save_decision(db, sim_clock, info, State(status=Status.FAILED, reason="a step failed"))
        runner = TurnsCounted(rollout_id=info.id, db=db, site=Site(sim_clock, {}), policies=PolicySet(POLICIES),
                              metrics=ControllerMetrics(sim_clock), cadence=RunnerCadence(command_poll=HOUR))
        task = asyncio.create_task(runner.run())
        await asyncio.wait_for(runner.turned.wait(), 30)  # it turned once: its next poll is an hour away

        retry = await submit_command(db, sim_clock, rollout_id=info.id, kind="rollback", actor="tester",
                                     reason="retry")
        runner.wake()
        done = await asyncio.wait_for(task, 30)  # it rolls back, and a rolled-back rollout's runner ends

        assert (await get_command(db, retry.id)).outcome == "accepted"
        assert done.status is (await get_rollout(db, info.id)).status is Status.ROLLED_BACK
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await db.close()
