"""Stage D as the checklist writes it, through the daemon on the simulator, its week shrunk to six
minutes of clock (10x): verdict digests every minute for the first three minutes and every three
after, written on schedule as ``stage.digest`` audit events; a standup review per two-minute period
(``standup-review/period-N``), a period that ends unsigned said overdue (audit and gauge), and the
gate waiting for every period's sign-off, the late one included.

The stage is judged by one policy (the bot's process is up) holding on failure or missing data, so
what keeps the gate shut is the sign-offs alone. canaryctl runs as real processes.
"""

from __future__ import annotations

import json

from controller.rollout.decide import Status
from controller.rollout.info import get_rollout
from controller.store import audit
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, daemon_on_sim
from tests.support.admin import scraped
from tests.support.policy_files import holding_policies

PIPELINE = """
name: week
stages:
  - name: D
    environment: sim
    account: canary
    duration: 6m
    policies: stage-c.yaml
    capital_cap: 0.02
    digest: {every: 1m, first: 3m, then: 3m}
    signoffs: [{name: standup-review, every: 2m}]
"""
LATE = 60.0
"""Clock seconds a digest may be written after its period's end (the runner turns every half second)."""


async def test_digests_are_written_on_schedule_and_the_gate_waits_for_every_periods_signoff(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(PIPELINE)
    releases = {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"}
    async with daemon_on_sim(tmp_path, releases, policies=holding_policies(tmp_path / "policies")) as site:
        db, port = site.db, site.daemon.admin_port
        assert (await site.ctl("rollout", "start", "1.1.0", "--pipeline", str(tmp_path / "pipeline.yaml"))).code == 0
        rollout_id = (await get_rollout(db, "1.1.0")).id
        started = (await site.until(rollout_id, Status.RUNNING)).state.stage_started

        today = await site.ctl("signoff", "1.1.0", "D", "--by", "alice")  # the current period's
        assert today.code == 0 and "standup-review/period-1" in today.out, today
        early = await site.ctl("signoff", "1.1.0", "D", "--by", "alice", "--item", "standup-review/period-3")
        assert early.code != 0 and "has not begun" in early.out + early.err, early

        async def said_overdue():
            events = [e async for e in audit.query(db, audit.AuditFilter(kind="signoff.overdue"))]
            return events or None

        (overdue,) = await poll(said_overdue, timeout=120, alive=site.gone, what="period 2 to be said overdue")
        assert overdue.payload["item"] == "standup-review/period-2"
        assert await poll(lambda: scraped(port, "canary_signoffs_overdue", rollout=str(rollout_id)),
                          timeout=30, what="the overdue gauge") == 1.0
        assert site.clock.time() >= started + 240  # period 3 has begun
        third = await site.ctl("signoff", "1.1.0", "D", "--by", "alice", "--item", "standup-review/period-3")
        assert third.code == 0, third

        waiting = await site.until(rollout_id, Status.AWAITING_SIGNOFF, timeout=120)
        assert waiting.state.reason == "sign-off missing: standup-review/period-2", waiting.state.reason
        shown = json.loads((await site.ctl("status", "1.1.0", "--json")).out)["rollouts"][0]["signoffs"]
        assert shown["required"] == [f"standup-review/period-{n}" for n in (1, 2, 3)]
        assert shown["pending"] == ["standup-review/period-2"]
        assert shown["overdue"] == ["standup-review/period-2"]  # its period ended unsigned
        screen = (await site.ctl("status", "1.1.0")).out
        assert "overdue: standup-review/period-2" in screen, screen

        async def digests():
            events = [e async for e in audit.query(db, audit.AuditFilter(kind="stage.digest"))]
            return events if len(events) >= 4 else None

        written = await poll(digests, timeout=60, alive=site.gone, what="four digests")
        late = await site.ctl("signoff", "1.1.0", "D", "--by", "bob", "--item", "standup-review/period-2")
        assert late.code == 0, late
        final = await site.until(rollout_id, Status.PROMOTED, Status.ROLLED_BACK, timeout=60)
        assert final.status is Status.PROMOTED, final.state.reason

    periods = [(e.payload["number"], e.payload["start"] - started, e.payload["end"] - started) for e in written[:4]]
    assert periods == [(1, 0, 60), (2, 60, 120), (3, 120, 180), (4, 180, 360)]
    for event in written[:4]:
        end = event.payload["end"]
        assert end <= event.ts.timestamp() <= end + LATE, (event.payload["number"], event.ts.timestamp() - end)
        policy = event.payload["policies"]["c-bot-process-up"]
        assert sum(policy["outcomes"].values()) + len(policy["at_start"]) >= 1  # every period says what held
    daily = written[3].payload
    assert daily["policies"]["c-bot-process-up"]["at_start"] == {"": "pass"}
    assert (daily["worst"], daily["breaches"]) == ("pass", 0)
    assert [e.payload["number"] for e in written] == sorted({e.payload["number"] for e in written})
