"""A rollback restores the previous release's margin type on a symbol with a position open.

The exchange refuses a margin type change while the symbol has a position (-4048). The canary
release 2.0.0 does not trade XRPUSDT, so its placement leaves XRPUSDT at the exchange's default
(CROSSED) while the previous release 1.0.0 wants it ISOLATED at leverage 2; a position is
opened on XRPUSDT through python-binance, then an operator rolls back.

- ``positions: keep``: the position stays, so the margin type cannot be restored. The rollback
  restores the leverage, says what it could not restore (the step's result, an audit event) and
  ends ``rolled_back``, not ``failed``.
- ``positions: flatten``: the position is closed first, and the margin type is restored.

The daemon runs in this process on the embedded simulator (clock 10x); what the account holds at
the end is read back through python-binance.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from controller.config.daemon import Endpoints
from controller.config.yamlfile import load_model_text
from controller.exchange.client import ExchangeClient
from controller.exchange.weights import WeightBudget
from controller.rollout.decide import TERMINAL, Status
from controller.rollout.info import create_rollout
from controller.rollout.pipeline import Pipeline
from controller.rollout.rollback import load_plan
from controller.store import audit
from controller.store.commands import submit_command
from tests.daemon.inprocess import BOT, daemon_on_sim

PIPELINE = """
name: margin-type
stages:
  - {{name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master, positions: {positions}}}
"""
SYMBOL = "XRPUSDT"


def without_xrp() -> str:
    """The reference strategy without XRPUSDT."""
    text = (BOT / "strategy.yaml").read_text()
    text = text.replace("  XRPUSDT: {leverage: 2, margin_type: ISOLATED}\n", "")
    return text.replace("symbols: [SOLUSDT, BNBUSDT, XRPUSDT]", "symbols: [SOLUSDT, BNBUSDT]")


@pytest.mark.parametrize("positions", ["keep", "flatten"])
async def test_a_margin_type_blocked_by_a_kept_position_is_reported_and_does_not_fail_the_rollback(
        tmp_path, positions):
    candidate = tmp_path / "strategy-without-xrp.yaml"
    candidate.write_text(without_xrp())
    async with daemon_on_sim(tmp_path, {"1.0.0": BOT / "strategy.yaml", "2.0.0": candidate}) as site:
        db, clock = site.db, site.clock
        pipeline = load_model_text(Pipeline, PIPELINE.format(positions=positions), "pipeline")
        rollout = await create_rollout(db, clock, version="2.0.0", pipeline=pipeline, actor="tester")
        await site.until(rollout.id, Status.RUNNING)

        sim = site.simulators.started["sim"]
        keys = sim.accounts["canary"]
        async with ExchangeClient(account="canary", api_key=keys.api_key, api_secret=keys.api_secret,
                                  endpoints=Endpoints(sim.rest_url, sim.ws_url, sim.sapi_url), clock=clock,
                                  budget=WeightBudget(clock, share=0.1)) as client:
            before = {s.symbol: (s.leverage, s.margin_type) for s in await client.symbol_settings(SYMBOL)}
            assert before[SYMBOL][1] == "CROSSED"  # 2.0.0 left it as the exchange had it
            await client.new_order(symbol=SYMBOL, side="BUY", order_type="MARKET", quantity=Decimal("100"))

            await submit_command(db, clock, rollout_id=rollout.id, kind="rollback", actor="tester",
                                 reason="margin type test")
            final = await site.until(rollout.id, *(TERMINAL | {Status.FAILED}), timeout=60)
            assert final.status is Status.ROLLED_BACK, final.state

            settings = {s.symbol: (s.leverage, s.margin_type) for s in await client.symbol_settings(SYMBOL)}

        # (The position itself is 1.0.0's to manage once it runs again: it may have closed it since.)
        plan = {s.name: s for s in await load_plan(db, rollout.id)}
        restore = plan["restore_leverage"]
        assert restore.state == "done" and restore.attempts == 1, restore
        kept = [r async for r in audit.query(db, audit.AuditFilter(kind="rollback.margin_type_kept"))]
        if positions == "keep":
            assert settings[SYMBOL] == (2, "CROSSED")  # the leverage is 1.0.0's; the margin type could not be
            assert plan["positions"].detail["result"]["kept"] is True
            assert restore.detail["result"]["margin_type_kept"] == {SYMBOL: {"is": "CROSSED", "previous": "ISOLATED"}}
            assert restore.detail["result"]["message"].startswith(
                "leverage restored; margin type not restored while positions are open")
            [event] = kept
            assert event.payload["account"] == "canary" and set(event.payload["symbols"]) == {SYMBOL}
        else:
            assert settings[SYMBOL] == (2, "ISOLATED")
            assert SYMBOL in plan["positions"].detail["result"]["flattened"]
            assert "margin_type_kept" not in restore.detail["result"] and kept == []
        assert (await audit.verify(db)).ok
