"""The same rollout on the canary account of several exchange environments (an embedded simulator
each): 1.0.0 placed, then 1.1.0 of one rollout, for the rollback tests that make each account safe."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from controller.clock import SimulatedClock
from controller.config.yamlfile import load_model_text
from controller.deploy.process import ProcessDeployer
from controller.release_files import read_release
from controller.rollout import placing
from controller.rollout.info import RolloutInfo, create_rollout, get_rollout
from controller.rollout.pipeline import Pipeline
from controller.rollout.site import Site
from controller.sim.embed import EmbeddedSimulators
from controller.sim.server import Simulator
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.daemon.inprocess import BOT, MANIFEST

SPEED = 10.0
PREVIOUS = {"SOLUSDT": 3, "BTCUSDT": 5}  # 1.0.0's leverage where 1.1.0 differs (SOLUSDT 5) and where not


@dataclass
class Accounts:
    db: Database
    site: Site
    simulators: EmbeddedSimulators
    rollout: RolloutInfo

    def simulator(self, environment: str) -> Simulator:
        return self.simulators.started[environment]

    async def running(self, environment: str) -> str | None:
        """The release that runs on the environment's canary account, or None."""
        running = await self.site.deployer(environment).status(self.site.instance(environment, "canary"))
        return running.release if running else None

    async def leverage(self, environment: str) -> dict[str, int]:
        client = await self.site.client(environment, "canary")
        return {s.symbol: s.leverage for s in await client.symbol_settings() if s.symbol in PREVIOUS}


@contextlib.asynccontextmanager
async def canary_on_each(folder: Path, environments: Iterable[str]) -> AsyncIterator[Accounts]:
    """1.0.0, then 1.1.0 of one rollout, on the canary account of each environment."""
    environments = tuple(environments)
    db = Database(resolve_url(f"sqlite:///{folder / 'canary.db'}"))
    clock = SimulatedClock(datetime.now(tz=UTC), speed=SPEED)
    await upgrade(db)
    for version, strategy in {"1.0.0": "strategy.yaml", "1.1.0": "strategy-next.yaml"}.items():
        await add_release(db, clock, read_release(version, MANIFEST, BOT / strategy), actor="tester")
    simulators = EmbeddedSimulators(clock, speed=SPEED)
    deployer = ProcessDeployer(folder / "state", clock)
    site = Site(clock, {name: await simulators.open(name, deployer) for name in environments})
    try:
        stages = "\n".join(f"  - {{name: {name.upper()}, environment: {name}, account: canary, duration: 1h, "
                           f"policies: stage-c.yaml, positions: flatten}}" for name in environments)
        pipeline = load_model_text(Pipeline, f"name: three\nstages:\n{stages}\n", "pipeline")
        for name in environments:
            await placing.place(db, site, environment=name, account="canary", release="1.0.0", rollout_id=None)
        rollout = await create_rollout(db, clock, version="1.1.0", pipeline=pipeline, actor="tester")
        for name in environments:
            await placing.place(db, site, environment=name, account="canary", release="1.1.0", rollout_id=rollout.id)
        yield Accounts(db, site, simulators, await get_rollout(db, rollout.id))
    finally:
        for name in environments:
            await deployer.stop(site.instance(name, "canary"), grace=0)
        await site.close()
        await simulators.close()
        await db.close()
