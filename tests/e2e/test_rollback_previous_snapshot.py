"""A rollback starts the previous release with the exact snapshot the previous deployment ran,
not the release's registered config; a snapshot that cannot be found fails the step.

One simulator (clock 10x), a ``canary`` account: 1.0.0, whose manifest declares a feature toggle,
is placed with the toggle on (a snapshot that differs from its registered config), then 1.1.0 by a
rollout, and a `Rollback` of that rollout runs, with real bots and real SQLite.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from controller.clock import SimulatedClock
from controller.config.yamlfile import load_model_text
from controller.deploy.process import ProcessDeployer
from controller.release_files import read_release
from controller.rollout import placing
from controller.rollout.info import create_rollout, get_rollout
from controller.rollout.pipeline import Pipeline
from controller.rollout.rollback import Rollback, load_plan
from controller.rollout.site import Site
from controller.sim.embed import EmbeddedSimulators
from controller.store import audit
from controller.store.database import Database, resolve_url
from controller.store.deployments import get_deployment, live_deployment
from controller.store.releases import add_release, get_snapshot
from controller.store.schema import upgrade
from tests.daemon.inprocess import BOT, MANIFEST

SPEED = 10.0
PIPELINE = ("name: one\nstages:\n  - {name: C, environment: sim, account: canary, duration: 1h, "
            "policies: stage-c.yaml, positions: flatten}\n")


@contextlib.asynccontextmanager
async def toggled_then_rolled_out(folder: Path) -> AsyncIterator[tuple[Database, Site, int, int]]:
    """1.0.0 placed with its toggle on, then 1.1.0 by a rollout: (db, site, rollout id, 1.0.0's deployment id)."""
    config = folder / "strategy.yaml"
    config.write_text((BOT / "strategy.yaml").read_text() + "\nbot:\n  stream_prices: false\n")
    manifest = folder / "manifest.yaml"
    manifest.write_text(MANIFEST.read_text() + "toggle:\n  config_key: bot.stream_prices\n")
    db = Database(resolve_url(f"sqlite:///{folder / 'canary.db'}"))
    clock = SimulatedClock(datetime.now(tz=UTC), speed=SPEED)
    await upgrade(db)
    await add_release(db, clock, read_release("1.0.0", manifest, config), actor="tester")
    await add_release(db, clock, read_release("1.1.0", MANIFEST, BOT / "strategy-next.yaml"), actor="tester")
    simulators = EmbeddedSimulators(clock, speed=SPEED)
    deployer = ProcessDeployer(folder / "state", clock)
    site = Site(clock, {"sim": await simulators.open("sim", deployer)})
    try:
        previous, _ = await placing.place(db, site, environment="sim", account="canary", release="1.0.0",
                                          rollout_id=None, toggle=True)
        rollout = await create_rollout(db, clock, version="1.1.0",
                                       pipeline=load_model_text(Pipeline, PIPELINE, "pipeline"), actor="tester")
        await placing.place(db, site, environment="sim", account="canary", release="1.1.0", rollout_id=rollout.id)
        yield db, site, rollout.id, previous.id
    finally:
        await deployer.stop(site.instance("sim", "canary"), grace=0)
        await site.close()
        await simulators.close()
        await db.close()


async def test_the_previous_release_restarts_with_the_snapshot_its_deployment_ran(tmp_path):
    async with toggled_then_rolled_out(tmp_path) as (db, site, rollout_id, previous_id):
        previous = await get_deployment(db, previous_id)
        registered = await get_snapshot(db, "1.0.0")
        assert previous.config_sha256 != registered.sha256  # the toggle made the placed snapshot differ
        assert (await get_snapshot(db, previous.config_sha256)).config["bot"]["stream_prices"] is True

        rollback = Rollback(db, site, attempts=1, backoff=0.0)
        await rollback.plan(await get_rollout(db, rollout_id), trigger="operator", reason="restore the snapshot")
        outcome = await rollback.run(await get_rollout(db, rollout_id))

        assert outcome.ok, outcome
        restored = await live_deployment(db, "sim", "canary")
        assert (restored.release, restored.config_sha256) == ("1.0.0", previous.config_sha256)
        running = await site.deployer("sim").status(site.instance("sim", "canary"))
        assert (running.release, running.config_sha256) == ("1.0.0", previous.config_sha256)
        assert (await audit.verify(db)).ok


async def test_a_previous_snapshot_that_cannot_be_found_fails_the_start_and_starts_nothing(tmp_path):
    async with toggled_then_rolled_out(tmp_path) as (db, site, rollout_id, previous_id):
        lost = (await get_deployment(db, previous_id)).config_sha256
        # The snapshot's row gone from the store (the store itself refuses that: foreign keys are off here).
        with contextlib.closing(sqlite3.connect(tmp_path / "canary.db")) as raw, raw:
            raw.execute("DELETE FROM config_snapshots WHERE sha256 = ?", (lost,))

        rollback = Rollback(db, site, attempts=1, backoff=0.0)
        await rollback.plan(await get_rollout(db, rollout_id), trigger="operator", reason="snapshot lost")
        outcome = await rollback.run(await get_rollout(db, rollout_id))

        assert not outcome.ok and outcome.failed_step == "start_previous", outcome
        assert lost in outcome.error and "not in the store" in outcome.error, outcome.error
        states = {s.name: s.state for s in await load_plan(db, rollout_id)}
        assert states["restore_leverage"] == "done" and states["start_previous"] == "failed", states
        # Not started with the release's registered config instead: nothing runs on the account.
        assert await site.deployer("sim").status(site.instance("sim", "canary")) is None
