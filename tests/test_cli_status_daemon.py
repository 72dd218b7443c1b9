"""canaryctl status against a live daemon: the shipped stage C policies judging a real canary on
the simulator, then an operator's rollback whose six steps the status shows done.

The daemon runs in this process on the simulator with a real-time clock (so that this host's
clock and the daemon's agree on the time left); canaryctl runs as real processes, in threads so
that the daemon keeps turning.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from controller.clock import SimulatedClock
from controller.config.daemon import DaemonConfig
from controller.daemon.service import Daemon, DaemonOptions
from controller.demo import EXAMPLES, POLICIES
from controller.release_files import read_release
from controller.rollout import records
from controller.rollout.decide import Status
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.cli import canaryctl

PIPELINE = """
name: ops
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master, positions: flatten, signoffs: [owner-review]}
"""


@pytest.fixture
async def daemon(tmp_path):
    """A daemon on the simulator, 1.0.0 on the master account and a rollout of 1.1.0 running stage C."""
    url = f"sqlite:///{tmp_path / 'canary.db'}"
    db = Database(resolve_url(url))
    clock = SimulatedClock(datetime.now(tz=UTC), speed=1.0)
    await upgrade(db)
    for version, config in (("1.0.0", "strategy.yaml"), ("1.1.0", "strategy-next.yaml")):
        await add_release(db, clock, read_release(version, EXAMPLES / "demo" / "manifest.yaml",
                                                  EXAMPLES / "reference-bot" / config), actor="tester")
    config = DaemonConfig.model_validate({"environments": {"sim": {"kind": "sim"}}, "admin": {"port": 0},
                                          "policies_dir": str(POLICIES)})
    service = Daemon(config, db, clock, DaemonOptions(state_dir=tmp_path / "state", speed=1.0,
                                                      stop_releases_on_exit=True))
    task = asyncio.create_task(service.run(), name="test-daemon")
    await asyncio.wait_for(service.ready.wait(), 30)
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    try:
        assert (await ctl("baseline", "1.0.0", "--account", "master", db=url)).code == 0
        assert (await ctl("rollout", "start", "1.1.0", "--pipeline", str(tmp_path / "pipeline.yaml"), db=url)).code == 0
        yield url, db
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)
        await db.close()


async def ctl(*args, db):
    return await asyncio.to_thread(canaryctl, *args, db=db)


async def until(check, timeout: float = 60.0):
    async with asyncio.timeout(timeout):
        while not (found := await check()):
            await asyncio.sleep(0.2)  # the daemon writes rows; polling the store is how a client sees them
        return found


async def status_json(url: str, ref: str = "1.1.0") -> dict:
    result = await ctl("status", ref, "--json", db=url)
    assert result.code == 0, result
    return json.loads(result.out)["rollouts"][0]


async def test_status_follows_a_live_canary_through_an_operator_rollback(daemon):
    url, db = daemon
    rollout = (await records.get_rollout(db, "1.1.0")).id

    async def judged():
        doc = await status_json(url)
        share = doc["capital_share"]["measured"]
        return doc if doc["state"] == "running" and share is not None and len(doc["policies"]) >= 10 else None

    live = await until(judged)
    assert live["baseline"] == {"release": "1.0.0", "live": True, "environment": "sim", "account": "master"}
    assert 3300 < live["stage"]["remaining_seconds"] <= 3600
    assert 0 < live["capital_share"]["measured"] <= 0.02 and live["capital_share"]["cap"] == "0.02"
    assert live["signoffs"]["pending"] == ["owner-review"]
    names = {p["policy"] for p in live["policies"]}
    assert {"c-capital-share-within-cap", "c-leverage-mismatch-zero", "c-bot-process-up"} <= names
    assert all(p["verdict"] in ("pass", "nodata", "inconclusive", "fail") for p in live["policies"])
    text = await ctl("status", db=url)
    assert f"rollout {rollout} · release 1.1.0 · running" in text.out and "left of 1h 00m" in text.out

    rolled = await ctl("rollback", str(rollout), "--reason", "fills look wrong", db=url)
    assert rolled.code == 0, rolled

    async def rolled_back():
        return (await records.get_rollout(db, rollout)).status is Status.ROLLED_BACK

    await until(rolled_back)
    done = await status_json(url, str(rollout))
    last = done["last_rollback"]
    assert (done["state"], last["trigger"], last["reason"]) == ("rolled_back", "operator", "fills look wrong")
    assert (last["done"], last["total"], last["current"]) == (6, 6, None)
    assert all(s["state"] == "done" and s["account"] == "canary" for s in last["steps"])
    assert done["stage"]["remaining_seconds"] is None and done["stage"]["outcome"] == "rolled_back"
    text = await ctl("status", str(rollout), db=url)
    assert "6/6 steps done · operator: fills look wrong" in text.out and "✓ verify_previous" in text.out
