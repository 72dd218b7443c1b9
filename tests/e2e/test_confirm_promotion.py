"""Confirm-promotion through the daemon on the simulator: once stage C's gate is open, the daemon asks a
real aiohttp endpoint, which answers 503 (the rollout waits, saying why in status) and then 200 (the
rollout promotes, the confirmation audited). The endpoint's URL carries a token status never shows.

Stage C is judged by one policy (the bot's process is up) over a two-minute stage, the clock 10x.
"""

from __future__ import annotations

import json

from controller.rollout.decide import Status
from controller.rollout.info import get_rollout
from controller.store import audit
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, daemon_on_sim
from tests.support.webhook_endpoint import Endpoint
from tests.support.policy_files import holding_policies

TOKEN = "confirm-token-never-shown"


def pipeline(url: str) -> str:
    return f"""
name: ops
stages:
  - name: C
    environment: sim
    account: canary
    duration: 2m
    policies: stage-c.yaml
    capital_cap: 0.02
    baseline: master
    confirm_promotion: {{url: "{url}?token={TOKEN}", timeout: 5s}}
"""


async def test_the_rollout_waits_for_a_503_then_promotes_on_a_200(tmp_path):
    endpoint = Endpoint([503])
    releases = {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"}
    policies = holding_policies(tmp_path / "policies")
    async with endpoint as url:
        (tmp_path / "pipeline.yaml").write_text(pipeline(url))
        async with daemon_on_sim(tmp_path, releases, policies=policies) as site:
            started = await site.ctl("rollout", "start", "1.1.0", "--pipeline", str(tmp_path / "pipeline.yaml"))
            assert started.code == 0, started
            rollout_id = (await get_rollout(site.db, "1.1.0")).id
            where = url.split("://", 1)[1]

            async def refused():
                info = await get_rollout(site.db, rollout_id)
                return info if info.state.reason == f"waiting for confirm-promotion: HTTP 503 from {where}" else None

            waiting = await poll(refused, timeout=90, what="the rollout to wait for its confirmation")
            assert waiting.status is Status.AWAITING_SIGNOFF
            shown = await site.ctl("status", str(rollout_id), "--json")
            assert shown.code == 0 and TOKEN not in shown.out, shown
            reason = json.loads(shown.out)["rollouts"][0]["reason"]
            assert reason == f"waiting for confirm-promotion: HTTP 503 from {where}"

            final = await site.until(rollout_id, Status.PROMOTED, Status.ROLLED_BACK, timeout=60)
            assert final.status is Status.PROMOTED
            events = [e async for e in audit.query(site.db, audit.AuditFilter(kind="rollout.promotion_confirmed"))]
    assert len(endpoint.received) == 2  # the 503, then the 200
    question = endpoint.events()[-1]
    assert (question["rollout"], question["stage"], question["release"]) == (rollout_id, "C", "1.1.0")
    assert question["verdicts"]["gate"] == {"c-bot-process-up": "pass"} and question["verdicts"]["clean"] is True
    (confirmed,) = events
    assert confirmed.payload["stage"] == "C" and confirmed.payload["status"] == 200
    assert confirmed.payload["endpoint"] == url and TOKEN not in json.dumps(confirmed.payload)
