"""Operators drive a live rollout with canaryctl while the daemon runs: pause, a refused
promote, resume, sign-off, a forced promote with its reason, and a rollback that puts the
previous release and its leverage back on the canary account.

The daemon runs in this process on the simulator (clock 10x); canaryctl runs as real
processes against the same SQLite file, in threads so that the daemon keeps turning.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import aiohttp
import pytest

from controller.clock import SimulatedClock
from controller.config.daemon import DaemonConfig
from controller.daemon.service import Daemon, DaemonOptions
from controller.demo import EXAMPLES, POLICIES
from controller.release_files import read_release
from controller.rollout import records
from controller.rollout.decide import Status
from controller.rollout.rollback import load_plan
from controller.store import audit
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.cli import canaryctl
from tests.daemon.harness import poll

SPEED = 10.0
PIPELINE = """
name: ops
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master, positions: flatten, signoffs: [owner-review]}
"""
RELEASES = {"1.0.0": "strategy.yaml", "1.1.0": "strategy-next.yaml", "1.3.0": "strategy.yaml"}


@pytest.fixture
async def running(tmp_path):
    """A daemon on the simulator with three releases recorded and 1.0.0 on the master account."""
    url = f"sqlite:///{tmp_path / 'canary.db'}"
    db = Database(resolve_url(url))
    clock = SimulatedClock(datetime.now(tz=UTC), speed=SPEED)
    await upgrade(db)
    for version, config in RELEASES.items():
        await add_release(db, clock, read_release(version, EXAMPLES / "demo" / "manifest.yaml",
                                                  EXAMPLES / "reference-bot" / config), actor="tester")
    config = DaemonConfig.model_validate({"environments": {"sim": {"kind": "sim"}}, "admin": {"port": 0},
                                          "policies_dir": str(POLICIES)})
    daemon = Daemon(config, db, clock, DaemonOptions(state_dir=tmp_path / "state", speed=SPEED, stop_releases_on_exit=True))
    task = asyncio.create_task(daemon.run(), name="test-daemon")
    await asyncio.wait_for(daemon.ready.wait(), 30)
    placed = await asyncio.to_thread(canaryctl, "baseline", "1.0.0", "--account", "master", db=url)
    assert placed.code == 0, placed
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    try:
        yield url, db, daemon, str(tmp_path / "pipeline.yaml")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
        await db.close()


async def until(db, rollout_id, *states: Status, timeout: float = 30.0):
    async with asyncio.timeout(timeout):
        while True:
            info = await records.get_rollout(db, rollout_id)
            if info.status in states:
                return info
            await asyncio.sleep(0.1)  # the daemon writes the row; polling the store is how a client sees it


async def ctl(*args, db):
    return await asyncio.to_thread(canaryctl, *args, db=db)


async def test_operators_pause_sign_off_force_promote_and_roll_back(running):
    url, db, daemon, pipeline = running
    started = await ctl("rollout", "start", "1.1.0", "--pipeline", pipeline, "--json", db=url)
    assert started.code == 0, started
    first = (await records.get_rollout(db, "1.1.0")).id
    await until(db, first, Status.RUNNING)

    async def exported() -> dict[str, float] | None:  # the canary's stream and weight, on /metrics
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{daemon.admin_port}/metrics") as response:
                text = await response.text()
        found = {line.split("{")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith(("canary_stream_connected{", "canary_exchange_weight_used{"))
                 and 'account="canary"' in line}
        return found if found.get("canary_stream_connected") == 1 and found.get("canary_exchange_weight_used") else None

    gauges = await poll(exported, timeout=30, what="the canary's stream and weight gauges")
    assert gauges["canary_exchange_weight_used"] > 0

    paused = await ctl("pause", "1.1.0", "--reason", "maintenance window", db=url)
    assert paused.code == 0 and "pause accepted" in paused.out, paused
    assert (await records.get_rollout(db, first)).status is Status.PAUSED

    refused = await ctl("promote", "1.1.0", db=url)
    assert refused.code == 1, refused
    assert "the gate is shut" in refused.out and "sign-off missing: owner-review" in refused.out

    assert (await ctl("promote", "1.1.0", "--force", db=url)).code == 2  # a forced promote needs a reason
    elsewhere = await ctl("promote", "1.1.0", "--stage", "D", "--force", "--reason", "meant for D", db=url)
    assert elsewhere.code == 1 and "at stage C, not D: nothing promoted" in elsewhere.out, elsewhere

    resumed = await ctl("resume", "1.1.0", db=url)
    assert resumed.code == 0, resumed
    signed = await ctl("signoff", "1.1.0", "C", "--by", "alice", db=url)
    assert signed.code == 0 and "signed owner-review" in signed.out, signed
    again = await ctl("signoff", "1.1.0", "C", "--by", "bob", db=url)
    assert again.code == 1 and "already signed: owner-review by alice" in again.out, again

    forced = await ctl("promote", "1.1.0", "--force", "--reason", "owner accepts the short canary", db=url)
    assert forced.code == 0, forced
    assert (await until(db, first, Status.PROMOTED)).state.signoffs == {"C/owner-review": "alice"}

    # A second release on the canary account, rolled back by an operator: 1.1.0 comes back.
    await ctl("rollout", "start", "1.3.0", "--pipeline", pipeline, db=url)
    second = (await records.get_rollout(db, "1.3.0")).id
    await until(db, second, Status.RUNNING)
    rolled = await ctl("rollback", "1.3.0", "--reason", "fills look wrong", db=url)
    assert rolled.code == 0, (rolled, (await records.get_rollout(db, second)).state.reason)
    await until(db, second, Status.ROLLED_BACK)
    steps = await load_plan(db, second)
    assert [s.name for s in steps] == ["stop_release", "cancel_orders", "positions", "restore_leverage",
                                       "start_previous", "verify_previous"]
    assert all(s.state == "done" and s.attempts == 1 for s in steps)
    live = await records.live_deployment(db, "sim", "canary")
    assert live.release == "1.1.0"
    running_now = await daemon.site.deployer("sim").status(daemon.site.instance("sim", "canary"))
    assert running_now is not None and running_now.release == "1.1.0"

    chain = await audit.verify(db)
    assert chain.ok
    kinds = [r.kind async for r in audit.query(db, audit.AuditFilter())]
    assert kinds.count("rollout.forced_promote") == 1
    assert kinds.count("rollback.step.done") == 6


async def test_a_command_for_a_finished_rollout_is_refused_with_the_reason(running):
    url, db, _, pipeline = running
    await ctl("rollout", "start", "1.1.0", "--pipeline", pipeline, db=url)
    rollout_id = (await records.get_rollout(db, "1.1.0")).id
    await until(db, rollout_id, Status.RUNNING)
    assert (await ctl("rollback", "1.1.0", "--reason", "operator test", db=url)).code == 0
    await until(db, rollout_id, Status.ROLLED_BACK)
    late = await ctl("pause", str(rollout_id), db=url)
    assert late.code == 1 and "the rollout is rolled_back: nothing to pause" in late.out, late
    busy = await ctl("rollout", "start", "no-such-version", db=url)
    assert busy.code == 2 and "no release 'no-such-version'" in busy.err, busy
