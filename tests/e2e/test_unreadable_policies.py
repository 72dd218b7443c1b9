"""A stage whose policy file became unreadable after the daemon started: the runner does not
crash on it, never places a release nothing can verify, and rolls the rollout back saying why.

The daemon runs in this process on the simulator (clock 10x) with its own copy of the shipped
policies; the file is broken after the daemon's start-up check, and the rollout is written to
the store after that (as if `canaryctl rollout start` had checked the file just before).
"""

from __future__ import annotations

import shutil

import yaml

from controller.rollout.decide import Status
from controller.rollout.info import create_rollout
from controller.rollout.pipeline import pipeline_from_document
from controller.store import audit
from controller.store.deployments import live_deployment
from tests.daemon.harness import POLICIES
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, daemon_on_sim


async def test_a_stage_whose_policies_cannot_be_read_is_not_placed_and_rolls_back(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    releases = {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"}
    async with daemon_on_sim(tmp_path, releases, policies=policies) as site:
        (policies / "stage-c.yaml").write_text("policies: [unclosed\n")
        pipeline = pipeline_from_document(yaml.safe_load(CANARY_PIPELINE))
        rollout = await create_rollout(site.db, site.clock, version="1.1.0", pipeline=pipeline, actor="tester")
        final = await site.until(rollout.id, Status.ROLLED_BACK, Status.FAILED, timeout=30)
        assert final.status is Status.ROLLED_BACK, final.state
        assert final.state.reason.startswith("placing stage C failed: ConfigError: "), final.state.reason
        assert "stage-c.yaml" in final.state.reason
        # Nothing reached the canary account: no deployment, no bot.
        assert await live_deployment(site.db, "sim", "canary") is None
        assert await site.daemon.site.deployer("sim").status(site.daemon.site.instance("sim", "canary")) is None
        assert (await audit.verify(site.db)).ok
