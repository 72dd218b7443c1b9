"""A rollback of several accounts makes every account safe at once, and one account's failure
holds back none of the others.

Three exchange environments, each its own simulator (clock 10x) with a ``canary`` account: the
previous release 1.0.0 runs on each, then the rollout puts 1.1.0 on all three (as a rollout of
three stages would have by its last stage) and a `Rollback` of the rollout runs, with real bots,
real SQLite and what each account holds read back through python-binance.
"""

from __future__ import annotations

from sqlalchemy import select

from controller.rollout.rollback import Rollback, load_plan
from controller.store import audit
from controller.store.database import Database
from controller.store.models import RollbackStep
from tests.support.canary_accounts import PREVIOUS, canary_on_each

ENVIRONMENTS = ("a", "b", "c")


async def step_rows(db: Database, rollout_id: int) -> list[RollbackStep]:
    async with db.read() as session:
        return list((await session.execute(select(RollbackStep).where(RollbackStep.rollout_id == rollout_id)
                                           .order_by(RollbackStep.position))).scalars())


async def test_an_account_whose_orders_cannot_be_canceled_holds_back_none_of_the_others(tmp_path):
    async with canary_on_each(tmp_path, ENVIRONMENTS) as accounts:
        # b's exchange refuses every cancel; the plan lists the accounts newest first: c, b, a.
        accounts.simulator("b").faults.fail("DELETE /fapi/v1/allOpenOrders")
        rollback = Rollback(accounts.db, accounts.site, attempts=2, backoff=0.0)
        await rollback.plan(accounts.rollout, trigger="operator", reason="one account fails")
        outcome = await rollback.run(accounts.rollout)

        states = {(s.detail["environment"], s.name): s.state for s in await load_plan(accounts.db, accounts.rollout.id)}
        for name in ("a", "c"):
            assert {step: state for (env, step), state in states.items() if env == name} == dict.fromkeys(
                ("stop_release", "cancel_orders", "positions", "restore_leverage", "start_previous",
                 "verify_previous"), "done"), states
            assert await accounts.running(name) == "1.0.0"
            assert await accounts.leverage(name) == PREVIOUS
        assert [states[("b", step)] for step in ("stop_release", "cancel_orders", "positions")] == \
            ["done", "failed", "pending"]
        assert await accounts.running("b") is None  # stopped, and not restarted on an account not yet safe
        assert not outcome.ok and outcome.failed_step == "cancel_orders", outcome
        assert "cancel_orders on b/canary" in outcome.error and outcome.error.count(" on ") == 1, outcome.error
        assert outcome.safe_at is None  # not every account is safe: the rollout must not say it is
        assert (await audit.verify(accounts.db)).ok


async def test_every_account_is_made_safe_concurrently_and_then_runs_its_previous_release(tmp_path):
    async with canary_on_each(tmp_path, ENVIRONMENTS) as accounts:
        for name in ENVIRONMENTS:
            accounts.simulator(name).faults.add_latency(0.020)
        rollback = Rollback(accounts.db, accounts.site)
        await rollback.plan(accounts.rollout, trigger="operator", reason="concurrency")
        outcome = await rollback.run(accounts.rollout)

        assert outcome.ok and outcome.safe_at is not None and rollback.safe_wall is not None, outcome
        rows = await step_rows(accounts.db, accounts.rollout.id)
        first = {r.name: max(s.started_at for s in rows if s.name == r.name) for r in rows}
        last = {r.name: min(s.finished_at for s in rows if s.name == r.name) for r in rows}
        # Every account began being made safe before any account was safe (one after another, the
        # first account would be safe before the next one's release was stopped) ...
        assert first["stop_release"] < last["restore_leverage"], rows
        # ... and service is restored only once every account is safe.
        assert max(r.finished_at for r in rows if r.name == "restore_leverage") <= first["start_previous"]
        for name in ENVIRONMENTS:
            assert await accounts.running(name) == "1.0.0"
            assert await accounts.leverage(name) == PREVIOUS
        assert (await audit.verify(accounts.db)).ok
