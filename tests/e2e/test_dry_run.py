"""A dry-run rollout through the daemon on the simulator: a defective release (wrong leverage) is
placed on the canary account and judged live by stage C's shipped policies, and nothing is acted on.

The breach is recorded as the rollout's "would have rolled back", once; from the release's placement
to the stage's end the simulator counts no state-changing request from the controller (its requests
say who sends them: the bot shares the account's key); at the stage's end the account gets its
previous release back and the rollout ends ``dry_run_done``. Status and report say it as a dry run.
"""

from __future__ import annotations

import json
import textwrap

from controller.config.yamlfile import load_model_text
from controller.demo import CADENCE
from controller.exchange.client import USER_AGENT
from controller.rollout.decide import TERMINAL, Status
from controller.rollout.info import create_rollout, get_rollout
from controller.rollout.pipeline import Pipeline
from controller.store import audit
from controller.store.deployments import live_deployment
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, daemon_on_sim

HEALTHY = BOT / "strategy.yaml"
PIPELINE = """
name: defect-canary
stages:
  - {name: C, environment: sim, account: canary, duration: 3m, policies: stage-c.yaml,
     capital_cap: 0.02, baseline: master, positions: flatten}
"""
CAUGHT_BY = {"c-leverage-mismatch-zero", "c-exchange-leverage-matches-config"}


async def test_a_dry_run_records_the_breach_acts_on_nothing_and_gives_the_account_back(tmp_path):
    defective = tmp_path / "strategy-defect.yaml"
    defective.write_text(f"{HEALTHY.read_text()}\nbot:\n  defects:\n"
                         f"{textwrap.indent('wrong_leverage: {symbol: SOLUSDT, leverage: 10}', '    ')}\n")
    async with daemon_on_sim(tmp_path, {"1.0.0": HEALTHY, "2.0.0": defective}, speed=10, cadence=CADENCE) as site:
        pipeline = load_model_text(Pipeline, PIPELINE, "pipeline").dry_run_of("C")
        rollout = await create_rollout(site.db, site.clock, version="2.0.0", pipeline=pipeline, actor="tester")

        # Within the stage: the breach is recorded as the decision, and the rollout keeps running.
        judged = await site.until(rollout.id, Status.RUNNING, timeout=30)

        async def decided():
            info = await get_rollout(site.db, rollout.id)
            return info if info.state.would_have is not None else None

        info = await poll(decided, timeout=30, alive=site.gone, what="the dry run's decision")
        assert info.status is Status.RUNNING, info.state
        would = info.state.would_have
        assert would.would == "rolled back" and would.policy in CAUGHT_BY, would
        shown = await site.ctl("status", str(rollout.id))
        assert shown.code == 0 and "would have rolled back" in shown.out and "not acted on" in shown.out, shown.out
        as_json = json.loads((await site.ctl("status", str(rollout.id), "--json")).out)
        (row,) = as_json["rollouts"]
        assert row["would_have"]["policy"] == would.policy and row["would_have"]["acted_on"] is False
        assert row["stage"]["dry_run"] is True

        final = await site.until(rollout.id, *TERMINAL, Status.FAILED, timeout=60)
        assert final.status is Status.DRY_RUN_DONE, final.state
        assert final.state.would_have == would  # the first breach decided; later ones did not replace it
        assert "would have rolled back" in final.state.reason

        events = [r async for r in audit.query(site.db, audit.AuditFilter())]
        kinds = [e.kind for e in events]
        assert kinds.count("rollout.would_roll_back") == 1, kinds
        assert "rollout.would_promote" not in kinds and "rollout.would_hold" not in kinds
        (planned,) = [e for e in events if e.kind == "rollback.planned"]
        assert planned.payload["trigger"] == "dry_run"
        moves = [(e.payload["from"], e.payload["to"]) for e in events if e.kind == "rollout.transition"]
        assert moves == [("pending", "promoting"), ("promoting", "running"), ("running", "rolling_back"),
                         ("rolling_back", "dry_run_done")]

        # The exchange's count: nothing that changes the account from the controller while the stage ran.
        sim = site.simulators.started["sim"]
        start = judged.state.stage_started
        end = start + pipeline.stages[0].duration
        records = list(sim.requests)
        assert records[0].time <= start, "the simulator's request log dropped requests of the stage"
        ours = [r for r in records if r.account == "canary" and r.agent == USER_AGENT]
        during = [r for r in ours if start <= r.time < end]
        assert during, "no request of the controller's during the stage: the count would prove nothing"
        changing = [(r.method, r.path) for r in during if r.changes_state]
        assert changing == [], changing
        # ...while the bot's own requests did change it (it set the wrong leverage), and the controller's
        # restore after the stage's end is counted the same way.
        assert any(r.changes_state and r.agent != USER_AGENT for r in records
                   if r.account == "canary" and start <= r.time < end)
        assert any(r.changes_state and r.time >= end for r in ours)

        # The account has its previous release again (the baseline's, on the canary account).
        assert (await live_deployment(site.db, "sim", "canary")).release == "1.0.0"

        report = await site.ctl("report", "render", str(rollout.id))
        assert report.code == 0, report
        assert "## Dry run" in report.out and "would have rolled back" in report.out, report.out
