"""Operators drive a live rollout with canaryctl while the daemon runs: pause, a refused
promote, resume, sign-off, a forced promote with its reason, and a rollback that puts the
previous release and its leverage back on the canary account.

The daemon runs in this process on the simulator (clock 10x); canaryctl runs as real
processes against the same SQLite file, in threads so that the daemon keeps turning.
"""

from __future__ import annotations

import aiohttp
import pytest

from controller.rollout.decide import Status
from controller.rollout.info import get_rollout
from controller.rollout.rollback import load_plan
from controller.store import audit
from controller.store.deployments import live_deployment
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, daemon_on_sim

SPEED = 10.0
RELEASES = {"1.0.0": "strategy.yaml", "1.1.0": "strategy-next.yaml", "1.3.0": "strategy.yaml"}


@pytest.fixture
async def running(tmp_path):
    """A daemon on the simulator with three releases recorded and 1.0.0 on the master account."""
    (tmp_path / "pipeline.yaml").write_text(CANARY_PIPELINE)
    async with daemon_on_sim(tmp_path, {v: BOT / f for v, f in RELEASES.items()}, speed=SPEED) as site:
        yield site, str(tmp_path / "pipeline.yaml")


async def test_operators_pause_sign_off_force_promote_and_roll_back(running):
    site, pipeline = running
    db, daemon = site.db, site.daemon
    started = await site.ctl("rollout", "start", "1.1.0", "--pipeline", pipeline, "--json")
    assert started.code == 0, started
    first = (await get_rollout(db, "1.1.0")).id
    await site.until(first, Status.RUNNING)

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

    paused = await site.ctl("pause", "1.1.0", "--reason", "maintenance window")
    assert paused.code == 0 and "pause accepted" in paused.out, paused
    assert (await get_rollout(db, first)).status is Status.PAUSED

    refused = await site.ctl("promote", "1.1.0")
    assert refused.code == 1, refused
    assert "the gate is shut" in refused.out and "sign-off missing: owner-review" in refused.out

    assert (await site.ctl("promote", "1.1.0", "--force")).code == 2  # a forced promote needs a reason
    elsewhere = await site.ctl("promote", "1.1.0", "--stage", "D", "--force", "--reason", "meant for D")
    assert elsewhere.code == 1 and "at stage C, not D: nothing promoted" in elsewhere.out, elsewhere

    resumed = await site.ctl("resume", "1.1.0")
    assert resumed.code == 0, resumed
    signed = await site.ctl("signoff", "1.1.0", "C", "--by", "alice")
    assert signed.code == 0 and "signed owner-review" in signed.out, signed
    again = await site.ctl("signoff", "1.1.0", "C", "--by", "bob")
    assert again.code == 1 and "already signed: owner-review by alice" in again.out, again

    forced = await site.ctl("promote", "1.1.0", "--force", "--reason", "owner accepts the short canary")
    assert forced.code == 0, forced
    assert (await site.until(first, Status.PROMOTED)).state.signoffs == {"C/owner-review": "alice"}

    # A second release on the canary account, rolled back by an operator: 1.1.0 comes back.
    await site.ctl("rollout", "start", "1.3.0", "--pipeline", pipeline)
    second = (await get_rollout(db, "1.3.0")).id
    await site.until(second, Status.RUNNING)
    rolled = await site.ctl("rollback", "1.3.0", "--reason", "fills look wrong")
    assert rolled.code == 0, (rolled, (await get_rollout(db, second)).state.reason)
    await site.until(second, Status.ROLLED_BACK)
    steps = await load_plan(db, second)
    assert [s.name for s in steps] == ["stop_release", "cancel_orders", "positions", "restore_leverage",
                                       "start_previous", "verify_previous"]
    assert all(s.state == "done" and s.attempts == 1 for s in steps)
    live = await live_deployment(db, "sim", "canary")
    assert live.release == "1.1.0"
    running_now = await daemon.site.deployer("sim").status(daemon.site.instance("sim", "canary"))
    assert running_now is not None and running_now.release == "1.1.0"

    chain = await audit.verify(db)
    assert chain.ok
    kinds = [r.kind async for r in audit.query(db, audit.AuditFilter())]
    assert kinds.count("rollout.forced_promote") == 1
    assert kinds.count("rollback.step.done") == 6


async def test_a_command_for_a_finished_rollout_is_refused_with_the_reason(running):
    site, pipeline = running
    db = site.db
    await site.ctl("rollout", "start", "1.1.0", "--pipeline", pipeline)
    rollout_id = (await get_rollout(db, "1.1.0")).id
    await site.until(rollout_id, Status.RUNNING)
    assert (await site.ctl("rollback", "1.1.0", "--reason", "operator test")).code == 0
    await site.until(rollout_id, Status.ROLLED_BACK)
    late = await site.ctl("pause", str(rollout_id))
    assert late.code == 1 and "the rollout is rolled_back: nothing to pause" in late.out, late
    busy = await site.ctl("rollout", "start", "no-such-version")
    assert busy.code == 2 and "no release 'no-such-version'" in busy.err, busy
