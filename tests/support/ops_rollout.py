"""A rollout the CLI tests read (`canaryctl status`, `review`, `note`, identities): 1.0.0 live on
sim/master, 1.1.0 running stage C on sim/canary for 15 minutes with its verdicts stored, the
owner's sign-off missing and an operator's promote not yet answered, all written through the
store's own API as the daemon writes them."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import yaml

from controller.analysis.verdict import Outcome, Verdict
from controller.clock import SimulatedClock
from controller.release_files import read_release
from controller.rollout.decide import State, Status
from controller.rollout.info import RolloutInfo, create_rollout, save_decision, start_stage_run
from controller.rollout.pipeline import Pipeline
from controller.store.commands import submit_command
from controller.store.deployments import record_placement
from controller.store.releases import add_release
from controller.store.verdicts import VerdictLog
from tests.support.checkout import EXAMPLES

PIPELINE = Pipeline.model_validate(yaml.safe_load("""
name: ops
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master, positions: flatten, signoffs: [owner-review]}
  - {name: D, environment: sim, account: master, duration: 24h, policies: stage-d.yaml, signoffs: [standup-review]}
"""))
STAGE_AGO = 900.0  # the stage started this many seconds before the test; it lasts an hour


def verdict(policy: str, outcome: Outcome, at: float, value: float | None = None, threshold: float | None = None, *,
             condition: str, group: tuple = (), reason: str = "", action: str | None = None) -> Verdict:
    return Verdict(policy, outcome, at, value, threshold, condition, 600.0, 0 if value is None else 30, group, reason,
                   action)


async def canary(db, *, releases=("1.0.0", "1.1.0")) -> tuple[RolloutInfo, SimulatedClock]:
    """1.0.0 live on sim/master; a rollout of 1.1.0 running stage C on sim/canary for 15 minutes,
    with verdicts, the owner's sign-off still missing and an operator's promote not answered."""
    clock = SimulatedClock(datetime.now(tz=UTC) - timedelta(seconds=STAGE_AGO + 5))
    for version in releases:
        await add_release(db, clock, read_release(version, EXAMPLES / "demo" / "manifest.yaml",
                                                  EXAMPLES / "reference-bot" / "strategy.yaml"), actor="tester")
    await record_placement(db, clock, rollout_id=None, environment="sim", account="master",
                                   instance="sim-master", release=releases[0])
    info = await create_rollout(db, clock, version=releases[1], pipeline=PIPELINE, actor="tester")
    clock.advance(5)
    await record_placement(db, clock, rollout_id=info.id, environment="sim", account="canary",
                                   instance="sim-canary", release=releases[1])
    started = clock.time()
    run_id = await start_stage_run(db, info, 0, started)
    info = await save_decision(db, clock, info, State(Status.RUNNING, 0, started))
    log = VerdictLog(db, info.id, run_id)
    share, latency = "c-capital-share-within-cap", "c-queue-latency-p95"
    for offset, verdicts in [
        (5, [verdict(share, Outcome.NODATA, 0, condition="<= capital_cap", action="hold",
                      reason="no data from the exchange source yet"),
             verdict(latency, Outcome.PASS, 0, 0.21, 0.5, condition="< 0.500"),
             verdict("c-bot-process-up", Outcome.PASS, 0, 1.0, 1.0, condition="== 1"),
             verdict("c-exchange-leverage-matches-config", Outcome.PASS, 0, 0.0, 0.0, condition="== 0",
                      group=(("symbol", "BTCUSDT"),))]),
        (30, [verdict(share, Outcome.PASS, 0, 0.012, 0.02, condition="<= capital_cap")]),
        (300, [verdict(share, Outcome.NODATA, 0, condition="<= capital_cap", action="hold", reason="stale"),
               verdict(latency, Outcome.FAIL, 0, 0.62, 0.5, condition="< 0.500", action="hold",
                        reason="0.62 is not < 0.500"),
               verdict("c-exchange-leverage-matches-config", Outcome.PASS, 0, 0.0, 0.0, condition="== 0",
                        group=(("symbol", "ETHUSDT"),))]),
        (330, [verdict(share, Outcome.PASS, 0, 0.015, 0.02, condition="<= capital_cap")]),
    ]:
        await log.record([replace(v, at=started + offset) for v in verdicts])
    await submit_command(db, clock, rollout_id=info.id, kind="promote", actor="bob", args={"force": False})
    return info, clock
