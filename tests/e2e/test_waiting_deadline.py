"""Waiting has a deadline: a paused rollout whose stage says ``on_waiting_deadline: rollback`` rolls
back once it has waited that long, and says why; meanwhile status and /metrics count down to it.
With ``alert`` it says so once (an audit event; the gauge at 0 for the alert rule) and goes on waiting.

The daemon runs in this process on the simulator (clock 10x); the test moves the simulated clock
past the deadline rather than waiting for it. A jump of half an hour leaves every source that
many seconds stale, so stage C is judged here by one policy that holds (never rolls back) on a
failure or missing data: what rolls the rollout back is the wait, nothing else. canaryctl runs
as real processes against the same SQLite file, in threads so that the daemon keeps turning.
"""

from __future__ import annotations

import json
import re

from controller.rollout.decide import Status
from controller.rollout.info import get_rollout
from controller.store import audit
from controller.store.deployments import live_deployment
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, daemon_on_sim
from tests.support.admin import scraped
from tests.support.policy_files import holding_policies

SPEED = 10.0
DEADLINE = 1800.0


def pipeline(on_deadline: str) -> str:
    """Stage C alone, an hour long, its wait bounded by `DEADLINE` with ``on_waiting_deadline: on_deadline``."""
    return f"""
name: ops
stages:
  - {{name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master, positions: flatten, signoffs: [owner-review],
     waiting_deadline: {DEADLINE:.0f}s, on_waiting_deadline: {on_deadline}}}
"""


async def test_a_paused_rollout_rolls_back_at_its_waiting_deadline(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(pipeline("rollback"))
    releases = {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"}
    policies = holding_policies(tmp_path / "policies")
    async with daemon_on_sim(tmp_path, releases, speed=SPEED, policies=policies) as site:
        db, port = site.db, site.daemon.admin_port
        started = await site.ctl("rollout", "start", "1.1.0", "--pipeline", str(tmp_path / "pipeline.yaml"))
        assert started.code == 0, started
        rollout_id = (await get_rollout(db, "1.1.0")).id
        await site.until(rollout_id, Status.RUNNING)
        paused = await site.ctl("pause", "1.1.0", "--reason", "owner away")
        assert paused.code == 0, paused
        since = (await get_rollout(db, rollout_id)).state.waiting_since
        assert since is not None

        async def counting_down() -> float | None:  # the stage has an hour; the wait half of it
            left = await scraped(port, "canary_stage_time_remaining_seconds", rollout=str(rollout_id))
            return left if left is not None and left <= DEADLINE else None

        assert DEADLINE - 120 < await poll(counting_down, timeout=30, what="the wait's time left on /metrics")
        screen = await site.ctl("status", "1.1.0")
        assert re.search(r"waiting since .* \(deadline in (2[89]|30)m \d\ds, then rolls back\)", screen.out), screen.out

        site.clock.advance(DEADLINE)
        info = await site.until(rollout_id, Status.ROLLED_BACK, timeout=90)

        assert info.state.reason.startswith("stage C waited 18"), info.state.reason
        assert "s paused since " in info.state.reason and "past its waiting deadline of 1800 s" in info.state.reason
        planned = [r async for r in audit.query(db, audit.AuditFilter()) if r.kind == "rollback.planned"]
        assert [p.payload["trigger"] for p in planned] == ["waiting"]
        live = await live_deployment(db, "sim", "canary")
        assert live is None or live.release != "1.1.0"
        shown = await site.ctl("status", "1.1.0", "--json")
        assert '"trigger": "waiting"' in shown.out, shown
        assert await scraped(port, "canary_rollbacks_total", trigger="waiting") == 1.0


async def test_a_paused_rollout_past_its_waiting_deadline_alerts_once_and_goes_on_waiting(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(pipeline("alert"))
    releases = {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"}
    policies = holding_policies(tmp_path / "policies")
    async with daemon_on_sim(tmp_path, releases, speed=SPEED, policies=policies) as site:
        db, port = site.db, site.daemon.admin_port
        started = await site.ctl("rollout", "start", "1.1.0", "--pipeline", str(tmp_path / "pipeline.yaml"))
        assert started.code == 0, started
        rollout_id = (await get_rollout(db, "1.1.0")).id
        await site.until(rollout_id, Status.RUNNING)
        assert (await site.ctl("pause", "1.1.0", "--reason", "owner away")).code == 0

        site.clock.advance(DEADLINE)

        async def overdue():
            info = await get_rollout(db, rollout_id)
            return info if info.state.waiting_overdue else None

        info = await poll(overdue, timeout=60, alive=site.gone, what="the wait to be said overdue")
        assert info.status is Status.PAUSED
        # A command answered is a turn of the runner after the one that said it: still said once.
        signed = await site.ctl("signoff", "1.1.0", "C", "--by", "alice")
        assert signed.code == 0, signed
        events = [r async for r in audit.query(db, audit.AuditFilter(kind="rollout.waiting_overdue"))]
        assert len(events) == 1 and events[0].payload["stage"] == "C", events
        assert "past its waiting deadline of 1800 s" in events[0].payload["reason"]
        assert await scraped(port, "canary_stage_time_remaining_seconds", rollout=str(rollout_id)) == 0.0
        shown = await site.ctl("status", "1.1.0", "--json")
        waiting = json.loads(shown.out)["rollouts"][0]["waiting"]
        assert (waiting["overdue"], waiting["on_deadline"]) == (True, "alert"), waiting
        assert (await get_rollout(db, rollout_id)).status is Status.PAUSED
