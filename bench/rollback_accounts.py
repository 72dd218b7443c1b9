"""How long a rollback takes to make 1, 3 and 10 accounts safe, with 20 ms of exchange latency.

Each account is the canary account of an exchange environment of its own, an embedded simulator
(clock 10x): one simulator holding 10 accounts would see 10 bots' requests from one IP, and ban
it (418) before any rollback. On each account the previous release 1.0.0 of
the reference bot runs, then 1.1.0 of one rollout (real bot processes, a real SQLite store), and
a `Rollback` of that rollout runs. Time to safe is wall time from the rollback's start until
every account has passed phase 1 (release stopped, orders canceled, positions flattened,
leverage restored); time to done adds phase 2 (previous release started and verified). Prints
figures; asserts nothing.

    .venv/bin/python bench/rollback_accounts.py [--accounts 1 3 10]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from controller.clock import SimulatedClock
from controller.config.yamlfile import load_model_text
from controller.deploy.process import ProcessDeployer
from controller.logs import configure as configure_logs
from controller.release_files import read_release
from controller.rollout import placing
from controller.rollout.info import create_rollout, get_rollout
from controller.rollout.pipeline import Pipeline
from controller.rollout.rollback import Rollback
from controller.rollout.site import Site
from controller.sim.embed import EmbeddedSimulators
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SPEED = 10.0
LATENCY = 0.020  # clock seconds added to every exchange answer


async def one_run(accounts: int, folder: Path) -> tuple[float, float]:
    """Wall seconds to safe and to done for a rollback of ``accounts`` accounts."""
    names = [f"env{n:02d}" for n in range(1, accounts + 1)]
    db = Database(resolve_url(f"sqlite:///{folder / 'canary.db'}"))
    clock = SimulatedClock(datetime.now(tz=UTC), speed=SPEED)
    await upgrade(db)
    manifest = EXAMPLES / "demo" / "manifest.yaml"
    for version, strategy in {"1.0.0": "strategy.yaml", "1.1.0": "strategy-next.yaml"}.items():
        await add_release(db, clock, read_release(version, manifest, EXAMPLES / "reference-bot" / strategy),
                          actor="bench")
    simulators = EmbeddedSimulators(clock, speed=SPEED)
    deployer = ProcessDeployer(folder / "state", clock)
    site = Site(clock, {name: await simulators.open(name, deployer) for name in names})
    try:
        stages = "\n".join(f"  - {{name: S{n}, environment: {name}, account: canary, duration: 1h, "
                           f"policies: stage-c.yaml, positions: flatten}}" for n, name in enumerate(names))
        pipeline = load_model_text(Pipeline, f"name: bench\nstages:\n{stages}\n", "pipeline")
        for name in names:
            await placing.place(db, site, environment=name, account="canary", release="1.0.0", rollout_id=None)
        rollout = await create_rollout(db, clock, version="1.1.0", pipeline=pipeline, actor="bench")
        for name in names:
            await placing.place(db, site, environment=name, account="canary", release="1.1.0",
                                rollout_id=rollout.id)
        info = await get_rollout(db, rollout.id)
        for simulator in simulators.started.values():
            simulator.faults.add_latency(LATENCY)
        rollback = Rollback(db, site)
        await rollback.plan(info, trigger="operator", reason="bench")
        began = time.monotonic()
        outcome = await rollback.run(info)
        done = time.monotonic()
        if not outcome.ok or rollback.safe_wall is None:
            raise RuntimeError(f"the rollback of {accounts} accounts did not complete: {outcome}")
        return rollback.safe_wall - began, done - began
    finally:
        for name in names:
            await deployer.stop(site.instance(name, "canary"), grace=0)
        await site.close()
        await simulators.close()
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, nargs="+", default=[1, 3, 10])
    args = parser.parse_args()
    configure_logs(level="error")
    print(f"rollback with {LATENCY * 1000:g} ms of exchange latency (clock {SPEED:g}x), wall seconds")
    print(f"{'accounts':>8}  {'to safe':>8}  {'to done':>8}")
    for accounts in args.accounts:
        with tempfile.TemporaryDirectory(prefix="rollback-bench-") as folder:
            safe, done = asyncio.run(one_run(accounts, Path(folder)))
        print(f"{accounts:>8}  {safe:8.2f}  {done:8.2f}")


if __name__ == "__main__":
    main()
