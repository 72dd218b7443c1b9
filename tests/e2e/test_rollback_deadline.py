"""Every attempt of a rollback step has a deadline: a call that hangs fails the step, with a
message saying so, instead of holding the rollback (and the account) forever.

The daemon runs in this process on the embedded simulator; the rollout is paused by an operator
so that its runner leaves the account alone, and the test runs a `Rollback` of its own, with a
step deadline of half a second, while the simulator answers order cancels 3 s late.
"""

from __future__ import annotations

import time

from controller.config.yamlfile import load_model_text
from controller.rollout.decide import Status
from controller.rollout.info import create_rollout, get_rollout
from controller.rollout.pipeline import Pipeline
from controller.rollout.rollback import Rollback, load_plan
from controller.store.commands import await_ack, submit_command
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, daemon_on_sim

SPEED = 2.0


async def test_a_step_whose_call_outlasts_the_deadline_fails_naming_the_deadline(tmp_path):
    async with daemon_on_sim(tmp_path, {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"},
                             speed=SPEED) as site:
        db, clock = site.db, site.clock
        pipeline = load_model_text(Pipeline, CANARY_PIPELINE, "pipeline")
        rollout = await create_rollout(db, clock, version="1.1.0", pipeline=pipeline, actor="tester")
        await site.until(rollout.id, Status.RUNNING)
        pause = await submit_command(db, clock, rollout_id=rollout.id, kind="pause", actor="tester",
                                     reason="the test rolls back by itself")
        assert (await await_ack(db, pause.id, timeout=10)).outcome == "accepted"

        sim = site.simulators.started["sim"]
        sim.faults.add_latency(3.0 * SPEED, endpoint="/fapi/v1/allOpenOrders")  # clock seconds: 3 s of the wall
        rollback = Rollback(db, site.daemon.site, attempts=2, backoff=0.0, step_timeout=0.5)
        info = await get_rollout(db, rollout.id)
        await rollback.plan(info, trigger="operator", reason="deadline test")
        began = time.monotonic()
        outcome = await rollback.run(info)
        elapsed = time.monotonic() - began

        assert not outcome.ok and outcome.failed_step == "cancel_orders", outcome
        assert outcome.error.endswith("StepTimeout: did not end within 0.5 s"), outcome.error
        assert elapsed < 2.5  # two bounded attempts, not two 3 s answers
        steps = {s.name: s for s in await load_plan(db, rollout.id)}
        assert steps["stop_release"].state == "done"
        assert (steps["cancel_orders"].state, steps["cancel_orders"].attempts) == ("failed", 2)
        assert steps["cancel_orders"].error == "StepTimeout: did not end within 0.5 s"

        sim.faults.add_latency(0.0, endpoint="/fapi/v1/allOpenOrders")
        rollback.step_timeout = 60.0  # room for the previous release's start-up
        resumed = await rollback.run(info)  # an operator's retry resumes at the failed step
        assert resumed.ok, resumed
        steps = {s.name: s for s in await load_plan(db, rollout.id)}
        assert all(s.state == "done" for s in steps.values()) and steps["cancel_orders"].attempts == 3
