"""canaryctl status against a live daemon: the shipped stage C policies judging a real canary on
the simulator, then an operator's rollback whose six steps the status shows done.

The daemon runs in this process on the simulator with a real-time clock (so that this host's
clock and the daemon's agree on the time left); canaryctl runs as real processes, in threads so
that the daemon keeps turning.
"""

from __future__ import annotations

import json

import pytest

from controller.rollout.decide import Status
from controller.rollout.info import get_rollout
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, daemon_on_sim


@pytest.fixture
async def daemon(tmp_path):
    """A daemon on the simulator, 1.0.0 on the master account and a rollout of 1.1.0 running stage C."""
    (tmp_path / "pipeline.yaml").write_text(CANARY_PIPELINE)
    releases = {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"}
    async with daemon_on_sim(tmp_path, releases, speed=1.0) as site:
        assert (await site.ctl("rollout", "start", "1.1.0", "--pipeline", str(tmp_path / "pipeline.yaml"))).code == 0
        yield site


async def until(check, timeout: float = 60.0):
    return await poll(check, timeout=timeout, what="the status the test waits for", every=0.2)


async def status_json(site, ref: str = "1.1.0") -> dict:
    result = await site.ctl("status", ref, "--json")
    assert result.code == 0, result
    return json.loads(result.out)["rollouts"][0]


async def test_status_follows_a_live_canary_through_an_operator_rollback(daemon):
    site, db = daemon, daemon.db
    rollout = (await get_rollout(db, "1.1.0")).id

    async def judged():
        doc = await status_json(site)
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
    text = await site.ctl("status")
    assert f"rollout {rollout} · release 1.1.0 · running" in text.out and "left of 1h 00m" in text.out
    owner = live["owner"]
    assert (owner["owner"], owner["expired"]) == (site.daemon.owner, False) and owner["epoch"] >= 1
    assert f"owner         {site.daemon.owner} since {owner['since'][:10]}" in text.out

    rolled = await site.ctl("rollback", str(rollout), "--reason", "fills look wrong")
    assert rolled.code == 0, rolled

    await site.until(rollout, Status.ROLLED_BACK)
    done = await status_json(site, str(rollout))
    last = done["last_rollback"]
    assert (done["state"], last["trigger"], last["reason"]) == ("rolled_back", "operator", "fills look wrong")
    assert (last["done"], last["total"], last["current"]) == (6, 6, None)
    assert all(s["state"] == "done" and s["account"] == "canary" for s in last["steps"])
    assert done["stage"]["remaining_seconds"] is None and done["stage"]["outcome"] == "rolled_back"
    text = await site.ctl("status", str(rollout))
    assert "6/6 steps done · operator: fills look wrong" in text.out and "✓ verify_previous" in text.out
