"""The daemon checks its policies before it says READY: a missing folder, or a policy file that a
rollout under way needs, is an error (exit status 2 from `canaryctl run`), never a ready daemon."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime

import pytest

from controller.clock import RealClock, SimulatedClock
from controller.config.daemon import DaemonConfig
from controller.config.yamlfile import load_model_text
from controller.daemon.service import Daemon, DaemonOptions
from controller.errors import ConfigError
from controller.rollout.info import create_rollout
from controller.sim.embed import EmbeddedSimulators
from controller.rollout.pipeline import Pipeline
from controller.store.database import Database, resolve_url
from tests.daemon.harness import prepare_database, sim_config
from tests.support.canaryctl import assert_refused, canaryctl
from tests.support.checkout import POLICIES

CANARY = """\
name: canary-only
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master}
"""


def test_canaryctl_run_with_a_missing_policies_folder_exits_2_and_never_becomes_ready(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'canary.db'}"
    assert canaryctl("db", "upgrade", db=db_url).code == 0
    config = sim_config(tmp_path, policies_dir=tmp_path / "no-policies")
    result = canaryctl("--db", db_url, "--config", str(config), "run", "--state-dir", str(tmp_path / "state"),
                       timeout=60)
    assert_refused(result, f"error: {tmp_path / 'no-policies'}: the policies folder does not exist")
    assert "daemon_ready" not in result.out + result.err


async def test_a_policy_file_needed_by_a_rollout_under_way_keeps_the_daemon_from_becoming_ready(tmp_path):
    policies = tmp_path / "policies"
    shutil.copytree(POLICIES, policies)
    db = Database(resolve_url(await prepare_database(tmp_path / "canary.db")))
    try:
        info = await create_rollout(db, RealClock(), version="1.1.0", actor="tester",
                                            pipeline=load_model_text(Pipeline, CANARY, "canary.yaml"))
        (policies / "stage-c.yaml").unlink()
        config = DaemonConfig.model_validate({"environments": {"sim": {"kind": "sim"}}, "admin": {"port": 0},
                                              "policies_dir": str(policies)})
        clock = SimulatedClock(datetime.now(tz=UTC), speed=10.0)
        daemon = Daemon(config, db, clock, DaemonOptions(state_dir=tmp_path / "state"),
                        simulators=EmbeddedSimulators(clock, speed=10.0))
        with pytest.raises(ConfigError) as refused:
            await asyncio.wait_for(daemon.run(), 60)  # a daemon that ran on would time out here
        assert not daemon.ready.is_set() and daemon.site is None  # nothing started, nothing placed
        assert (refused.value.file, refused.value.field) == (f"rollout {info.id} of 1.1.0", "stages[0].policies")
        assert f"stage C names the policy file stage-c.yaml, which is not in the policies folder {policies}" \
            in refused.value.message
    finally:
        await db.close()
