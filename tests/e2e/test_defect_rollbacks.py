"""Each deliberate defect of the reference bot, carried by a release through the daemon's canary
stage C on the simulator, meets the shipped policy that should catch it.

The daemon runs in this process on the embedded simulator with ``policies/stage-c.yaml`` exactly
as shipped. 1.0.0 is placed on the master account with ``canaryctl baseline``; the defective
release 2.0.0 (``strategy.yaml`` plus one ``bot: defects:`` entry) goes to the empty canary account.
The rollout's previous release is then the baseline's, so a rollback must leave 1.0.0 running
on the canary account at 1.0.0's leverage. The clock runs at 10x; at 30x for the burst of
rejected orders, whose policy wants its breach to last 10 minutes of clock.

Left out, because no stage-C policy catches them, and the stage whose policy does would take
far longer than this module's budget:

- ``oversized_exits``: the exchange expires the rest of each oversized reduce-only close. The
  bot counts those orders as ``expired``, not failed (c-order-failure-rate), and the exchange's
  fill sizing skips reduce-only fills (c-fills-sized-within-bucket): a 7-minute stage C
  promotes such a release with no policy failing. Only stage A's
  ``a-exchange-order-failure-rate`` sees it (``hold``: 200 orders, then ``for: 10m``, over a
  minute of wall time at 10x). At 30x a healthy bot's latency, in clock seconds, breaches stage
  A's absolute thresholds (p95 < 400 ms, ``rollback``) first: the run would judge the clock,
  not the release. Covered at the policy level by
  tests/observe/exchange/test_order_failure_verdicts.py.
- ``exits_never_sent``: only stage B's ``b-bucket-locks-released`` catches it (``hold``, no
  verdict before 1000 scrapes: about 4 h of clock, over 20 minutes of wall time at 10x).
  Covered at the policy level by tests/observe/exchange/test_bucket_lock_verdicts.py, which
  moves the clock by hand (a daemon with bots in other processes cannot). In stage C the bot
  all but stops trading once its buckets are full (9 orders in 8 minutes), so the order and
  latency policies stay inconclusive and the gate never opens: the stage's progress deadline
  rolls it back, an hour after the stage's end, naming no policy.
"""

from __future__ import annotations

import contextlib
import json
import textwrap
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from controller.clock import SimulatedClock
from controller.config.daemon import Endpoints
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model, load_model_text
from controller.daemon.service import Daemon
from controller.demo import CADENCE
from controller.exchange.client import ExchangeClient
from controller.exchange.weights import WeightBudget
from controller.rollout.decide import TERMINAL, Status
from controller.rollout.info import RolloutInfo, create_rollout, get_rollout
from controller.rollout.pipeline import Pipeline
from controller.rollout.rollback import load_plan
from controller.store import audit
from controller.store.commands import await_ack, submit_command
from controller.store.database import Database
from controller.store.deployments import live_deployment
from controller.store.models import VerdictChange
from tests.daemon.inprocess import BOT, Running, daemon_on_sim

HEALTHY = BOT / "strategy.yaml"
PREVIOUS, CANDIDATE = "1.0.0", "2.0.0"
PIPELINE = """
name: defect-canary
stages:
  - {{name: C, environment: sim, account: canary, duration: {duration}, policies: stage-c.yaml,
     capital_cap: 0.02, baseline: master, positions: flatten}}
"""


@dataclass(frozen=True)
class Defect:
    entry: str       # the strategy's ``bot: defects:`` entry
    speed: float     # of the simulated clock
    timeout: float   # wall seconds from the rollout's start to its outcome


@dataclass
class Canary:
    """The daemon on the simulator, 1.0.0 on the master account, the defective 2.0.0 recorded."""

    site: Running

    @property
    def db(self) -> Database:
        return self.site.db

    @property
    def clock(self) -> SimulatedClock:
        return self.site.clock

    @property
    def daemon(self) -> Daemon:
        return self.site.daemon

    async def start_rollout(self, duration: str) -> int:
        pipeline = load_model_text(Pipeline, PIPELINE.format(duration=duration), "pipeline")
        return (await create_rollout(self.db, self.clock, version=CANDIDATE, pipeline=pipeline,
                                             actor="tester")).id

    async def until(self, rollout_id: int, states: Collection[Status], *, timeout: float) -> RolloutInfo:
        return await self.site.until(rollout_id, *states, timeout=timeout)

    async def audits(self, kind: str) -> list[audit.AuditRecord]:
        return [r async for r in audit.query(self.db, audit.AuditFilter(kind=kind))]

    async def verdicts(self, rollout_id: int, policy: str) -> list[VerdictChange]:
        async with self.db.read() as session:
            return list((await session.execute(select(VerdictChange).where(
                VerdictChange.rollout_id == rollout_id, VerdictChange.policy == policy).order_by(VerdictChange.id)
            )).scalars())

    async def running(self, account: str) -> str | None:
        """The release the deployer runs on the account (it checks the process is alive)."""
        running = await self.daemon.site.deployer("sim").status(self.daemon.site.instance("sim", account))
        return running.release if running else None

    async def exchange_settings(self, account: str) -> dict[str, tuple[int, str]]:
        """Leverage and margin type per symbol, as the exchange tells a client of our own."""
        sim = self.site.simulators.started["sim"]
        keys = sim.accounts[account]
        async with ExchangeClient(account=account, api_key=keys.api_key, api_secret=keys.api_secret,
                                  endpoints=Endpoints(sim.rest_url, sim.ws_url, sim.sapi_url), clock=self.clock,
                                  budget=WeightBudget(self.clock, share=0.1)) as client:
            return {s.symbol: (s.leverage, s.margin_type) for s in await client.symbol_settings()}


@contextlib.asynccontextmanager
async def canary_site(tmp_path: Path, defect: Defect) -> AsyncIterator[Canary]:
    defective = tmp_path / "strategy-defect.yaml"
    defective.write_text(f"{HEALTHY.read_text()}\nbot:\n  defects:\n{textwrap.indent(defect.entry, '    ')}\n")
    async with daemon_on_sim(tmp_path, {PREVIOUS: HEALTHY, CANDIDATE: defective}, speed=defect.speed,
                             cadence=CADENCE, baseline=PREVIOUS) as site:
        yield Canary(site)


def settings_of(strategy: Path) -> dict[str, tuple[int, str]]:
    return {s: (c.leverage, c.margin_type) for s, c in load_model(StrategyConfig, strategy).symbols.items()}


# ---------------------------------------------------------------- defects a rollback policy catches

ROLLED_BACK = {
    # The bot's own read-back and the exchange's view watch the same leverage; whichever reads
    # first after the bot sets it wins, and both are the policy that should catch it.
    "wrong_leverage": (Defect("wrong_leverage: {symbol: SOLUSDT, leverage: 10}", speed=10, timeout=30),
                       {"c-leverage-mismatch-zero", "c-exchange-leverage-matches-config"}),
    # Orders three times their size, 0.3 of the bucket's limit each: within one fill's limit
    # (c-fills-sized-within-bucket), but a few of them put the bucket over its allocation.
    "oversized_orders": (Defect("oversized_orders: 3", speed=10, timeout=30),
                         {"c-bucket-usage-within-allocation"}),
    # The traceback is in the log seconds after the crash; c-bot-process-up, which watches the
    # same crash, needs the process down for 30 s of clock first.
    "unhandled_exception_after_seconds": (Defect("unhandled_exception_after_seconds: 20", speed=10, timeout=30),
                                          {"c-no-unhandled-exceptions"}),
    # 200 refused orders against a few hundred good ones: the failure rate must stay above
    # 0.5 % for 10 minutes of clock before it rolls back.
    "rejected_orders_burst": (Defect("rejected_orders_burst: 200", speed=30, timeout=45),
                              {"c-order-failure-rate"}),
}


@pytest.mark.parametrize("name", sorted(ROLLED_BACK))
async def test_a_defect_is_rolled_back_by_its_policy_and_the_previous_release_runs_again(tmp_path, name):
    defect, caught_by = ROLLED_BACK[name]
    async with canary_site(tmp_path, defect) as canary:
        rollout_id = await canary.start_rollout("1h")  # the stage outlasts the test: only a breach ends it
        final = await canary.until(rollout_id, TERMINAL | {Status.FAILED}, timeout=defect.timeout)
        assert final.status is Status.ROLLED_BACK, final.state

        # The audit names the breach: "POLICY failed: VALUE is not CONDITION".
        [breach] = [e for e in await canary.audits("rollout.transition") if e.payload["to"] == "rolling_back"]
        policy, verb, _ = breach.payload["reason"].split(" ", 2)
        assert policy in caught_by and verb == "failed:", breach.payload
        assert canary.daemon.reports[rollout_id].policy == policy
        [planned] = await canary.audits("rollback.planned")
        assert planned.payload["trigger"] == "policy" and planned.payload["reason"] == breach.payload["reason"]
        evidence = [v for v in await canary.verdicts(rollout_id, policy) if v.verdict == "fail"]
        assert evidence and json.loads(evidence[-1].evidence)["action"] == "rollback"

        # 2.0.0 stopped, 1.0.0 runs on the canary account, at its own leverage.
        steps = await load_plan(canary.db, rollout_id)
        assert all(step.state == "done" for step in steps), steps
        releases = {step.name: step.detail["release"] for step in steps if "release" in step.detail}
        assert releases == {"stop_release": CANDIDATE, "start_previous": PREVIOUS, "verify_previous": PREVIOUS}
        assert (await live_deployment(canary.db, "sim", "canary")).release == PREVIOUS
        assert await canary.running("canary") == PREVIOUS
        applied = await canary.exchange_settings("canary")
        previous = settings_of(HEALTHY)
        assert {s: applied.get(s) for s in previous} == previous


# ---------------------------------------------------------------- a defect only a hold policy catches

SLOW_SIGNALS = Defect("slow_signal_seconds: 0.5", speed=10, timeout=60)
LATENCY = "c-signal-latency-like-baseline-5m"  # the 5-minute pair fails first; the hour-long test may follow
LATENCIES = {LATENCY, "c-signal-latency-like-baseline"}


async def test_slow_signals_spoil_the_gate_and_the_stage_ends_paused_for_a_person(tmp_path):
    """Signals half a second slower than the baseline's are caught by c-signal-latency-like-baseline
    and its 5-minute pair, whose answer is ``hold``: a person judges a release that trades slower. The release keeps
    running, the gate stays shut, and at the stage's end the rollout pauses naming the policy;
    a plain promote is refused. Nothing is promoted and nothing is rolled back.

    The policy fails some 6 minutes of clock into the stage (50 samples on each side, then
    ``for: 5m``); the stage lasts 7, so that it fails a minute before the end. The bot's delay is
    wall time (as its latency is measured), so each slow iteration holds the bot half a second
    of the wall, five of the clock: a longer one would leave too few samples. The clock runs at
    10x here: c-queue-latency-p95's absolute 0.5 s, on a clock 30 times faster than the wall,
    is 17 ms of real time, which two busy bots miss (a hold of the clock, not of the release).
    """
    async with canary_site(tmp_path, SLOW_SIGNALS) as canary:
        rollout_id = await canary.start_rollout("7m")
        final = await canary.until(rollout_id, TERMINAL | {Status.PAUSED, Status.FAILED, Status.ROLLING_BACK},
                                   timeout=SLOW_SIGNALS.timeout)
        assert final.status is Status.PAUSED and final.state.paused_from is Status.RUNNING, final.state
        assert LATENCY in final.state.spoiled and set(final.state.spoiled) <= LATENCIES, final.state
        assert f"{LATENCY} failed during the stage" in final.state.reason
        assert final.state.reason.endswith("promote --force or rollback")

        # The 5-minute rank test spoils the gate first; the hour-long one may join it before the end.
        spoiled, *joined = await canary.audits("gate.spoiled")
        assert spoiled.payload["policy"] == LATENCY and spoiled.payload["value"] > spoiled.payload["threshold"]
        assert {e.payload["policy"] for e in joined} <= LATENCIES - {LATENCY}
        evidence = [v for v in await canary.verdicts(rollout_id, LATENCY) if v.verdict == "fail"]
        assert evidence and json.loads(evidence[-1].evidence)["action"] == "hold"
        moves = [(e.payload["from"], e.payload["to"]) for e in await canary.audits("rollout.transition")]
        assert moves == [("pending", "promoting"), ("promoting", "running"), ("running", "paused")]
        assert await canary.audits("rollback.planned") == []

        command = await submit_command(canary.db, canary.clock, rollout_id=rollout_id, kind="promote",
                                               actor="tester")
        refused = await await_ack(canary.db, command.id, timeout=10)
        assert refused.outcome == "rejected" and f"{LATENCY} failed during the stage" in refused.message, refused
        assert (await get_rollout(canary.db, rollout_id)).status is Status.PAUSED
        assert await canary.running("canary") == CANDIDATE  # held: it runs on while a person decides


