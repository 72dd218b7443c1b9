"""Rate limits never fail a rollback: a 429 storm is waited out, under the rollback's deadline.

The daemon runs in this process on the embedded simulator (clock 10x). Once the canary runs, the
simulator answers every REST request with 429 and a Retry-After for a while (its
``rate-limit-storm`` knob), and an operator rolls back. A storm shorter than the deadline makes
the rollback wait and end ``rolled_back``; one longer than the deadline (a short one, from the
daemon config) ends it ``failed``, saying the deadline passed. What the account holds at the end
is read back through python-binance.
"""

from __future__ import annotations

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
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, daemon_on_sim

RELEASES = {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"}


async def roll_back_in_a_storm(site, storm: float) -> tuple:
    """Start the canary, start a storm of ``storm`` clock seconds, roll back; the final rollout."""
    db, clock = site.db, site.clock
    pipeline = load_model_text(Pipeline, CANARY_PIPELINE, "pipeline")
    rollout = await create_rollout(db, clock, version="1.1.0", pipeline=pipeline, actor="tester")
    await site.until(rollout.id, Status.RUNNING)
    site.simulators.started["sim"].faults.rate_limit_storm(storm)
    await submit_command(db, clock, rollout_id=rollout.id, kind="rollback", actor="tester",
                         reason="rate limit test")
    return await site.until(rollout.id, *(TERMINAL | {Status.FAILED}), timeout=90)


async def test_a_storm_shorter_than_the_deadline_is_waited_out_and_the_rollback_completes(tmp_path):
    async with daemon_on_sim(tmp_path, RELEASES) as site:
        final = await roll_back_in_a_storm(site, storm=60.0)  # "back off 58 s", as Binance says it

        assert final.status is Status.ROLLED_BACK, final.state
        waits = [r async for r in audit.query(site.db, audit.AuditFilter(kind="rollback.step.rate_limited"))]
        assert waits, "the rollback never met the storm: the test tests nothing"
        assert all(w.payload["wait"] >= 1 for w in waits)
        plan = {s.name: s for s in await load_plan(site.db, final.id)}
        assert all(s.state == "done" for s in plan.values()), plan
        waited = {w.payload["step"] for w in waits}
        assert all(plan[name].attempts == 1 for name in waited), plan  # a wait spends no attempt

        sim = site.simulators.started["sim"]
        keys = sim.accounts["canary"]
        async with ExchangeClient(account="canary", api_key=keys.api_key, api_secret=keys.api_secret,
                                  endpoints=Endpoints(sim.rest_url, sim.ws_url, sim.sapi_url), clock=site.clock,
                                  budget=WeightBudget(site.clock, share=0.1)) as client:
            leverage = {s.symbol: s.leverage for s in await client.symbol_settings()}
        assert leverage["SOLUSDT"] == 3 and leverage["BTCUSDT"] == 5  # 1.0.0's config
        running = await site.daemon.site.deployer("sim").status(site.daemon.site.instance("sim", "canary"))
        assert running is not None and running.release == "1.0.0"
        assert (await audit.verify(site.db)).ok


async def test_a_storm_longer_than_the_deadline_fails_the_rollback_saying_the_deadline_passed(tmp_path):
    async with daemon_on_sim(tmp_path, RELEASES, settings={"rollback": {"deadline": "20s"}}) as site:
        try:
            final = await roll_back_in_a_storm(site, storm=600.0)
        finally:
            site.simulators.started["sim"].faults.clear()  # the daemon's shutdown stops the bots cleanly

        assert final.status is Status.FAILED, final.state
        assert "deadline passed: the rollback did not end within 20 s" in final.state.reason, final.state.reason
        failed = [s for s in await load_plan(site.db, final.id) if s.state == "failed"]
        assert [s.name for s in failed] == ["cancel_orders"], failed
        assert failed[0].error.startswith("deadline passed") and "RateLimited" in failed[0].error, failed[0].error
        # What CanaryRollbackFailed fires on (monitoring/alerts.yaml).
        assert site.daemon.metrics.registry.get_sample_value(
            "canary_rollout_state", {"rollout": str(final.id), "release": "1.1.0", "state": "failed"}) == 1
