"""Each environment's `deployer:` block chooses how its releases run: child processes (the
default) or instances of the systemd template unit."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from controller.clock import SimulatedClock
from controller.config.daemon import DaemonConfig
from controller.config.yamlfile import load_model_text
from controller.daemon.service import Daemon, DaemonOptions
from controller.deploy import ProcessDeployer, SystemdDeployer
from controller.errors import ConfigError
from controller.sim.embed import EmbeddedSimulators
from controller.store.database import Database, resolve_url
from controller.store.schema import upgrade
from tests.support.checkout import POLICIES

CONFIG = """\
environments:
  sim:
    kind: sim
  rehearsal:
    kind: sim
    deployer:
      kind: systemd
      env_dir: {env_dir}
      unit_template: canary-rehearsal@
admin: {{port: 0}}
policies_dir: {policies}
"""


async def test_the_daemon_runs_each_environments_releases_with_the_deployer_it_names(tmp_path):
    text = CONFIG.format(env_dir=tmp_path / "units", policies=POLICIES)
    config = load_model_text(DaemonConfig, text, "controller.yaml")
    db = Database(resolve_url(f"sqlite:///{tmp_path / 'canary.db'}"))
    await upgrade(db)
    clock = SimulatedClock(datetime.now(tz=UTC), speed=10.0)
    daemon = Daemon(config, db, clock, DaemonOptions(state_dir=tmp_path / "state"),
                    simulators=EmbeddedSimulators(clock))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        default, systemd = daemon.site.deployer("sim"), daemon.site.deployer("rehearsal")
        assert isinstance(default, ProcessDeployer)
        assert isinstance(systemd, SystemdDeployer)
        assert (systemd.env_dir, systemd.unit("sim-canary")) == (tmp_path / "units",
                                                                 "canary-rehearsal@sim-canary.service")
        assert (default.supervision, systemd.supervision) == (None, None)  # SQLite: one daemon, no supervisor
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
        await db.close()


@pytest.mark.parametrize("block, field", [
    ("deployer:\n      kind: docker\n", "environments.sim.deployer.kind"),
    ("deployer:\n      kind: systemd\n      env_dir: units\n", "environments.sim.deployer.env_dir"),
    ("deployer:\n      kind: systemd\n      unit_template: canary-strategy\n",
     "environments.sim.deployer.unit_template"),
], ids=["unknown-kind", "relative-env-dir", "not-a-template"])
def test_a_deployer_block_that_cannot_work_is_refused_with_its_line_and_field(block, field):
    text = "environments:\n  sim:\n    kind: sim\n    " + block
    with pytest.raises(ConfigError) as refused:
        load_model_text(DaemonConfig, text, "controller.yaml")
    assert refused.value.field == field, refused.value
    assert refused.value.line is not None and refused.value.line >= 4


def test_a_sim_environment_with_nothing_to_run_the_simulator_is_refused_by_name(tmp_path):
    """The daemon does not carry the simulator: only the CLI and the demo hand it one."""
    config = load_model_text(DaemonConfig, "environments:\n  rehearsal:\n    kind: sim\n", "controller.yaml")
    db = Database(resolve_url(f"sqlite:///{tmp_path / 'canary.db'}"))
    with pytest.raises(ConfigError) as refused:
        Daemon(config, db, SimulatedClock(datetime.now(tz=UTC), speed=10.0), DaemonOptions(state_dir=tmp_path))
    assert refused.value.field == "environments.rehearsal.kind", refused.value
    assert "simulator" in refused.value.message and "canaryctl run" in refused.value.message


async def test_bots_run_under_their_supervisor_by_default_on_postgresql_or_when_asked(tmp_path):
    text = CONFIG.format(env_dir=tmp_path / "units", policies=POLICIES).replace(
        "      unit_template: canary-rehearsal@\n", "      unit_template: canary-rehearsal@\n      supervise: true\n")
    config = load_model_text(DaemonConfig, text, "controller.yaml")
    db = Database(resolve_url(f"sqlite:///{tmp_path / 'canary.db'}"))
    clock = SimulatedClock(datetime.now(tz=UTC))
    daemon = Daemon(config, db, clock, DaemonOptions(state_dir=tmp_path / "state"),
                    simulators=EmbeddedSimulators(clock))
    try:
        asked = daemon._deployer(config.environments["rehearsal"].deployer).supervision
        assert asked.environment == {"CANARY_DB": f"sqlite+aiosqlite:///{tmp_path / 'canary.db'}"}
        assert asked.lease_seconds == config.lease_seconds
        assert daemon._deployer(config.environments["sim"].deployer).supervision is None
    finally:
        await db.close()
    db = Database(resolve_url("postgresql://canary:s3cret@127.0.0.1:9/canary"))  # never connected to
    clock = SimulatedClock(datetime.now(tz=UTC))
    daemon = Daemon(config, db, clock, DaemonOptions(state_dir=tmp_path / "state"),
                    simulators=EmbeddedSimulators(clock))
    try:
        supervision = daemon._deployer(config.environments["sim"].deployer).supervision
        assert supervision.environment == {"CANARY_DB": "postgresql+asyncpg://canary:s3cret@127.0.0.1:9/canary"}
    finally:
        await db.close()
