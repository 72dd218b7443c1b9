"""The daemon in the test's own process, on the embedded simulator: releases recorded, a baseline
placed on the master account through a real `canaryctl baseline`.

What the end-to-end tests share (operator commands, defects, status, report): they differ only in
the releases, the clock's speed and the cadence. Clients see the daemon the way an operator does,
through the store, so waiting is polling the store under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from controller.clock import SimulatedClock
from controller.config.daemon import DaemonConfig
from controller.daemon.service import Daemon, DaemonOptions
from controller.release_files import read_release
from controller.rollout.decide import Status
from controller.rollout.engine import RunnerCadence
from controller.sim.embed import EmbeddedSimulators
from controller.rollout.info import RolloutInfo, get_rollout
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.daemon.harness import poll
from tests.support.canaryctl import canaryctl
from tests.support.checkout import EXAMPLES, POLICIES

MANIFEST = EXAMPLES / "demo" / "manifest.yaml"  # the reference bot, trading every second of its clock
BOT = EXAMPLES / "reference-bot"
CANARY_PIPELINE = """
name: ops
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master, positions: flatten, signoffs: [owner-review]}
"""
"""Stage C alone, an hour long, with the owner's sign-off: a canary operators can act on."""


@dataclass
class Running:
    url: str
    db: Database
    clock: SimulatedClock
    daemon: Daemon
    task: asyncio.Task
    state: Path
    """The daemon's state folder (the process deployer's instances live under it)."""
    simulators: EmbeddedSimulators
    """The simulator behind the daemon's ``sim`` environment, as the CLI injects it."""

    @property
    def admin_port(self) -> int:
        """Where the daemon's admin server (/healthz, /readyz, /metrics) listens."""
        return self.daemon.admin_port

    def gone(self) -> str | None:
        """Why the daemon is no longer running, or None while it runs."""
        if not self.task.done():
            return None
        return f"the daemon stopped: {'cancelled' if self.task.cancelled() else self.task.exception()!r}"

    async def until(self, rollout_id: int, *states: Status, timeout: float = 60.0) -> RolloutInfo:
        """The rollout once it is in one of ``states``; fails at once if the daemon died."""
        async def reached():
            info = await get_rollout(self.db, rollout_id)
            return info if info.status in states else None
        return await poll(reached, timeout=timeout, alive=self.gone,
                          what=f"rollout {rollout_id} to be {' or '.join(sorted(states))}")

    async def ctl(self, *args: str):
        """canaryctl as a real process, in a thread so that the daemon keeps turning."""
        return await asyncio.to_thread(canaryctl, *args, db=self.url)


@contextlib.asynccontextmanager
async def daemon_on_sim(folder: Path, releases: Mapping[str, Path], *, speed: float = 10.0,
                        cadence: RunnerCadence | None = None, baseline: str | None = "1.0.0",
                        policies: Path = POLICIES, settings: Mapping[str, Any] | None = None) -> AsyncIterator[Running]:
    """A fresh SQLite store in ``folder`` with ``releases`` (version -> strategy file) recorded, the
    daemon running on the simulator with the policies folder ``policies`` (and the daemon config's
    other ``settings``) and ``baseline`` placed on the master account."""
    url = f"sqlite:///{folder / 'canary.db'}"
    db = Database(resolve_url(url))
    clock = SimulatedClock(datetime.now(tz=UTC), speed=speed)
    await upgrade(db)
    for version, strategy in releases.items():
        await add_release(db, clock, read_release(version, MANIFEST, strategy), actor="tester")
    config = DaemonConfig.model_validate({"environments": {"sim": {"kind": "sim"}}, "admin": {"port": 0},
                                          "policies_dir": str(policies), **(settings or {})})
    options = DaemonOptions(state_dir=folder / "state", stop_releases_on_exit=True,
                            **({"cadence": cadence} if cadence else {}))
    simulators = EmbeddedSimulators(clock, speed=speed)
    daemon = Daemon(config, db, clock, options, simulators=simulators)
    task = asyncio.create_task(daemon.run(), name="test-daemon")
    running = Running(url, db, clock, daemon, task, options.state_dir, simulators)
    try:
        await asyncio.wait_for(daemon.ready.wait(), 30)
        if baseline is not None:
            placed = await running.ctl("baseline", baseline, "--account", "master")
            assert placed.code == 0, placed
        yield running
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
        await db.close()
