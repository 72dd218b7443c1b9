"""A rollback of several accounts makes every account safe at once, and one account's failure
holds back none of the others.

Three exchange environments, each its own simulator (clock 10x) with a ``canary`` account: the
previous release 1.0.0 runs on each, then the rollout puts 1.1.0 on all three (as a rollout of
three stages would have by its last stage) and a `Rollback` of the rollout runs, with real bots,
real SQLite and what each account holds read back through python-binance.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from controller.clock import SimulatedClock
from controller.config.yamlfile import load_model_text
from controller.deploy.process import ProcessDeployer
from controller.release_files import read_release
from controller.rollout import placing
from controller.rollout.info import RolloutInfo, create_rollout, get_rollout
from controller.rollout.pipeline import Pipeline
from controller.rollout.rollback import Rollback, load_plan
from controller.rollout.site import Site
from controller.sim.embed import EmbeddedSimulators
from controller.sim.server import Simulator
from controller.store import audit
from controller.store.database import Database, resolve_url
from controller.store.models import RollbackStep
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.daemon.inprocess import BOT, MANIFEST

SPEED = 10.0
ENVIRONMENTS = ("a", "b", "c")
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


async def step_rows(db: Database, rollout_id: int) -> list[RollbackStep]:
    async with db.read() as session:
        return list((await session.execute(select(RollbackStep).where(RollbackStep.rollout_id == rollout_id)
                                           .order_by(RollbackStep.position))).scalars())


async def test_an_account_whose_orders_cannot_be_canceled_holds_back_none_of_the_others(tmp_path):
    async with canary_on_each(tmp_path, ENVIRONMENTS) as accounts:
        # b's exchange refuses every cancel; the plan lists the accounts newest first: c, b, a.
        accounts.simulator("b").faults.fail("DELETE /fapi/v1/allOpenOrders")
        rollback = Rollback(accounts.db, accounts.site, attempts=2, backoff=0.0)
        await rollback.plan(accounts.rollout, trigger="operator", reason="one account fails")
        outcome = await rollback.run(accounts.rollout)

        states = {(s.detail["environment"], s.name): s.state for s in await load_plan(accounts.db, accounts.rollout.id)}
        for name in ("a", "c"):
            assert {step: state for (env, step), state in states.items() if env == name} == dict.fromkeys(
                ("stop_release", "cancel_orders", "positions", "restore_leverage", "start_previous",
                 "verify_previous"), "done"), states
            assert await accounts.running(name) == "1.0.0"
            assert await accounts.leverage(name) == PREVIOUS
        assert [states[("b", step)] for step in ("stop_release", "cancel_orders", "positions")] == \
            ["done", "failed", "pending"]
        assert await accounts.running("b") is None  # stopped, and not restarted on an account not yet safe
        assert not outcome.ok and outcome.failed_step == "cancel_orders", outcome
        assert "cancel_orders on b/canary" in outcome.error and outcome.error.count(" on ") == 1, outcome.error
        assert outcome.safe_at is None  # not every account is safe: the rollout must not say it is
        assert (await audit.verify(accounts.db)).ok


async def test_every_account_is_made_safe_concurrently_and_then_runs_its_previous_release(tmp_path):
    async with canary_on_each(tmp_path, ENVIRONMENTS) as accounts:
        for name in ENVIRONMENTS:
            accounts.simulator(name).faults.add_latency(0.020)
        rollback = Rollback(accounts.db, accounts.site)
        await rollback.plan(accounts.rollout, trigger="operator", reason="concurrency")
        outcome = await rollback.run(accounts.rollout)

        assert outcome.ok and outcome.safe_at is not None and rollback.safe_wall is not None, outcome
        rows = await step_rows(accounts.db, accounts.rollout.id)
        first = {r.name: max(s.started_at for s in rows if s.name == r.name) for r in rows}
        last = {r.name: min(s.finished_at for s in rows if s.name == r.name) for r in rows}
        # Every account began being made safe before any account was safe (one after another, the
        # first account would be safe before the next one's release was stopped) ...
        assert first["stop_release"] < last["restore_leverage"], rows
        # ... and service is restored only once every account is safe.
        assert max(r.finished_at for r in rows if r.name == "restore_leverage") <= first["start_previous"]
        for name in ENVIRONMENTS:
            assert await accounts.running(name) == "1.0.0"
            assert await accounts.leverage(name) == PREVIOUS
        assert (await audit.verify(accounts.db)).ok
