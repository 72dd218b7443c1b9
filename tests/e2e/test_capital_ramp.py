"""A capital ramp through the daemon on the simulator: stage C raises the canary's capital from the
simulator's 1.5 % of the firm's to 0.5 %, 1 % and 2 %, each step once the stage's policies have been
clean for the step before, moving USDT with the master's transfer key; a breach at the second step
rolls back, and the rollback gives the canary back the capital it had before the ramp.

The canary's capital is read from the simulator's own ledger: 1 500 USDT at the start, plus every
transfer it records. The cap is 2.5 % here, not 2 %: a last step exactly at the cap leaves the cap
policy no room for the firm's capital to shrink by the baseline's fees (the README says so). Stage C
keeps the shipped policies that judge the capital and the exchange's leverage (the others need hours
of trading to speak): the gate every step waits on is the cap's.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from controller import failpoints
from controller.config.yamlfile import load_model_text
from controller.demo import CADENCE
from controller.rollout.decide import TERMINAL, Status
from controller.rollout.info import create_rollout
from controller.rollout.pipeline import Pipeline
from controller.rollout.rollback import load_plan
from controller.store import audit
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, Running, daemon_on_sim
from tests.support.checkout import POLICIES
from tests.support.clients import binance_client

HEALTHY = BOT / "strategy.yaml"
PREVIOUS, CANDIDATE = "1.0.0", "2.0.0"
START = Decimal("1500")
"""The embedded simulator's canary: 1.5 % of the firm's 100 000 USDT."""
PIPELINE = """
name: ramp
stages:
  - {name: C, environment: sim, account: canary, duration: 5m, policies: stage-c.yaml, capital_cap: 0.025,
     baseline: master, positions: flatten, progress_deadline: 10m,
     ramp: [{share: 0.5%, for: 1m}, {share: 1%, for: 1m}, {share: 2%}]}
"""


GATE = ("c-capital-share-within-cap", "c-capital-share-within-cap-plus-profit", "c-exchange-leverage-matches-config")


@pytest.fixture
def policies(tmp_path) -> Path:
    """The shipped policies, stage C's cut down to `GATE`."""
    folder = tmp_path / "policies"
    folder.mkdir()
    for path in POLICIES.glob("*.yaml"):
        (folder / path.name).write_text(path.read_text())
    stage_c = folder / "stage-c.yaml"
    document = yaml.safe_load(stage_c.read_text())
    document["policies"] = [p for p in document["policies"] if p["name"] in GATE]
    stage_c.write_text(yaml.safe_dump(document, sort_keys=False))
    return folder


def capital(site: Running) -> Decimal:
    """The capital in the canary as the simulator's ledger has it: its start plus every transfer."""
    ledger = site.simulators.started["sim"].engine.ledger
    return START + sum((i.amount for i in ledger.income["canary"] if i.type == "TRANSFER"), Decimal(0))


async def transfers(site: Running, rollout: int) -> list[dict]:
    return [r.payload async for r in audit.query(site.db, audit.AuditFilter(kind="capital.transferred"))
            if r.subject == f"rollout:{rollout}"]


async def start(site: Running) -> int:
    return (await create_rollout(site.db, site.clock, version=CANDIDATE,
                                 pipeline=load_model_text(Pipeline, PIPELINE, "pipeline"), actor="tester")).id


async def test_a_healthy_release_ramps_its_capital_step_by_step_to_two_percent(tmp_path, policies):
    async with daemon_on_sim(tmp_path, {PREVIOUS: HEALTHY, CANDIDATE: HEALTHY}, speed=10.0, cadence=CADENCE,
                             baseline=PREVIOUS, policies=policies) as site:
        rollout = await start(site)
        final = await site.until(rollout, *(TERMINAL | {Status.FAILED}), timeout=120)

        assert final.status is Status.PROMOTED
        moved = await transfers(site, rollout)
        assert [m["step"] for m in moved] == [1, 2, 3]
        assert [(m["from"], m["to"]) for m in moved] == [
            ("sim/canary", "sim/master"), ("sim/master", "sim/canary"), ("sim/master", "sim/canary")]
        assert [m["share"] for m in moved] == ["0.005", "0.01", "0.02"]
        for m in moved:  # each step's share of the firm's capital as it was then, to the cent below
            assert 0 <= Decimal(m["share"]) * Decimal(m["firm_total"]) - Decimal(m["capital_after"]) < Decimal("0.02")
        # On the exchange's books: what the last step left, some 2 % of the firm's capital.
        assert capital(site) == Decimal(moved[-1]["capital_after"])
        assert Decimal("0.0199") < capital(site) / Decimal(moved[-1]["firm_total"]) <= Decimal("0.02")
        master = site.simulators.started["sim"].accounts["master"]
        assert [r for r in site.simulators.started["sim"].requests
                if r.path.endswith("/internalTransfer") and r.key != "transfer"] == []
        assert master.key("transfer").rights["enableWithdrawals"] is False


async def test_a_breach_at_the_second_step_rolls_back_and_gives_the_capital_back(tmp_path, policies):
    async with daemon_on_sim(tmp_path, {PREVIOUS: HEALTHY, CANDIDATE: HEALTHY}, speed=10.0, cadence=CADENCE,
                             baseline=PREVIOUS, policies=policies) as site:
        rollout = await start(site)

        async def second_step():
            moved = await transfers(site, rollout)
            return moved if len(moved) >= 2 else None

        moved = await poll(second_step, timeout=90, alive=site.gone, what="the ramp's second step")
        assert capital(site) == Decimal(moved[1]["capital_after"])  # some 1 % of the firm's capital
        # The breach: the canary's leverage on BTCUSDT is changed behind the release's back.
        async with binance_client(site.simulators.started["sim"], "canary") as canary:
            await canary.futures_change_leverage(symbol="BTCUSDT", leverage=20)
        final = await site.until(rollout, *(TERMINAL | {Status.FAILED}), timeout=90)

        assert final.status is Status.ROLLED_BACK, final.state
        moved = await transfers(site, rollout)
        assert [m["step"] for m in moved] == [1, 2, "rollback"]
        assert (moved[-1]["from"], moved[-1]["to"]) == ("sim/master", "sim/canary")
        assert capital(site) == START  # the canary's share before the ramp
        plan = await load_plan(site.db, rollout)
        returned = [s for s in plan if s.name == "return_capital"]
        assert [s.state for s in returned] == ["done"]
        # Phase 2: the account was safe (release stopped, orders canceled, positions flattened) first.
        names = [s.name for s in plan if s.detail.get("account") == "canary"]
        assert names.index("return_capital") > names.index("restore_leverage")
        assert names.index("return_capital") < names.index("start_previous")


async def test_a_first_step_that_fails_after_its_transfer_still_gives_the_capital_back(tmp_path, policies):
    """The money moved, then the step failed before anything recorded it (as if the daemon had died
    there): the rollback must still know where the ramp started, from a record written before the
    transfer, and give the canary back its capital."""
    async with daemon_on_sim(tmp_path, {PREVIOUS: HEALTHY, CANDIDATE: HEALTHY}, speed=10.0, cadence=CADENCE,
                             baseline=PREVIOUS, policies=policies) as site:
        with failpoints.armed("capital.transferred.before_audit", "raise"):
            rollout = await start(site)
            final = await site.until(rollout, *(TERMINAL | {Status.FAILED}), timeout=90)

        assert final.status is Status.ROLLED_BACK, final.state
        assert "capital ramp step 1" in final.state.reason
        ledger = site.simulators.started["sim"].engine.ledger
        assert [i.amount for i in ledger.income["canary"] if i.type == "TRANSFER"][0] < 0  # it did move
        assert capital(site) == START  # and it came back
        returned = [s for s in await load_plan(site.db, rollout) if s.name == "return_capital"]
        assert [s.state for s in returned] == ["done"]



async def test_a_transfer_key_that_can_withdraw_moves_no_money_and_the_stage_is_not_placed(tmp_path, policies):
    async with daemon_on_sim(tmp_path, {PREVIOUS: HEALTHY, CANDIDATE: HEALTHY}, speed=10.0, cadence=CADENCE,
                             baseline=PREVIOUS, policies=policies) as site:
        sim = site.simulators.started["sim"]
        sim.set_api_rights("master", "transfer", enableWithdrawals=True)  # widened after the daemon's start
        rollout = await start(site)
        final = await site.until(rollout, *(TERMINAL | {Status.FAILED}), timeout=60)

        assert final.status is Status.ROLLED_BACK, final.state
        assert "capital ramp step 1 not funded" in final.state.reason and "withdraw" in final.state.reason
        refused = [r.payload async for r in audit.query(site.db, audit.AuditFilter(kind="deploy.key_refused"))]
        assert refused and refused[0]["key"] == "transfer"
        assert [r for r in sim.requests if r.path.endswith("/internalTransfer")] == []
        assert capital(site) == START and await transfers(site, rollout) == []
        assert [d for d in sim.accounts["canary"].positions.values() if d.amount] == []
