"""A rollback in flight goes on while the store cannot be written: the account is made safe, and
the steps' rows and audit events are written, in order and with no gap in the chain, once the
store answers again. Service is restored only then: starting the previous release is a placement,
and a placement writes its intent first.

The store is SQLite held by a second connection (``BEGIN IMMEDIATE``): every write of the
rollback fails with "database is locked" after a short busy timeout, reads still answer.
"""

from __future__ import annotations

import asyncio
import sqlite3

from controller.rollout.rollback import STEPS, Rollback, load_plan
from controller.store import audit
from controller.store import database as store_database
from controller.store.audit import AuditFilter
from tests.daemon.harness import poll
from tests.support.canary_accounts import PREVIOUS, canary_on_each


async def test_a_rollback_makes_the_account_safe_while_the_store_is_locked_and_records_it_after(
        tmp_path, monkeypatch):
    monkeypatch.setattr(store_database, "SQLITE_BUSY_TIMEOUT_MS", 200)
    async with canary_on_each(tmp_path, ["a"]) as accounts:
        rollback = Rollback(accounts.db, accounts.site)
        await rollback.plan(accounts.rollout, trigger="operator", reason="store down")
        other_writer = sqlite3.connect(tmp_path / "canary.db", isolation_level=None)
        other_writer.execute("BEGIN IMMEDIATE")
        running = asyncio.create_task(rollback.run(accounts.rollout))
        try:
            async def safe():
                assert not running.done(), running.result()
                stopped = await accounts.running("a") is None
                return stopped and await accounts.leverage("a") == PREVIOUS and rollback.safe_wall is not None

            await poll(safe, timeout=60, what="the account made safe while the store is locked")
            client = await accounts.site.client("a", "canary")
            assert await client.open_orders() == []
            # Nothing could be written: the plan still reads as it was planned.
            assert [s.state for s in await load_plan(accounts.db, accounts.rollout.id)] == ["pending"] * len(STEPS)
        finally:
            other_writer.rollback()
            other_writer.close()
        outcome = await asyncio.wait_for(running, timeout=60)

        assert outcome.ok, outcome
        assert await accounts.running("a") == "1.0.0"
        plan = await load_plan(accounts.db, accounts.rollout.id)
        assert [(s.name, s.state) for s in plan] == [(name, "done") for name in STEPS]
        assert (await audit.verify(accounts.db)).ok
        done = [e.payload["position"] async for e in audit.query(accounts.db, AuditFilter(kind="rollback.step.done"))]
        assert done == list(range(len(STEPS)))
