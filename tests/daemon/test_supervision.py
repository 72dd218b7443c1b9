"""The daemon's shell keeps going and tells the truth about it: a crashing runner restarts after a
growing backoff, the main loop outlives a database that refuses it, rollouts' metrics exist again
after a restart, a baseline is refused on an account a rollout holds and placed beside the loop,
and the probes say why they answer what they answer.

The daemon runs in process on the embedded simulator (`daemon_on_sim`); the database is real
SQLite, held locked by a second connection where a test needs it to fail."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime

import yaml

from controller.clock import SimulatedClock
from controller.daemon.service import RUNNER_BACKOFF_INITIAL
from controller.release_files import read_release
from controller.rollout.decide import State, Status
from controller.rollout.engine import RolloutRunner
from controller.rollout.info import create_rollout, save_decision
from controller.rollout.pipeline import pipeline_from_document
from controller.store import database as store_database
from controller.store.commands import CommandInfo, get_command, submit_command
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, MANIFEST, Running, daemon_on_sim
from tests.support.admin import probe, scraped

RELEASES = {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"}


def logged(caplog, event: str) -> int:
    return sum(1 for record in caplog.records if record.getMessage() == event)


async def turns(running: Running, count: int) -> None:
    """Wait until the daemon's main loop has begun ``count`` more turns."""
    seen = [running.daemon._last_turn]

    async def turned() -> bool:
        if running.daemon._last_turn != seen[-1]:
            seen.append(running.daemon._last_turn)
        return len(seen) > count

    await poll(turned, timeout=30, alive=running.gone, what=f"{count} turns of the main loop", every=0.02)


async def acked(running: Running, command_id: int, timeout: float = 60) -> CommandInfo:
    async def answer() -> CommandInfo | None:
        command = await get_command(running.db, command_id)
        return command if command.acked_at is not None else None
    return await poll(answer, timeout=timeout, alive=running.gone, what=f"command {command_id}'s acknowledgement")


def canary_pipeline(policies: str = "stage-c.yaml"):
    return pipeline_from_document(yaml.safe_load(CANARY_PIPELINE.replace("stage-c.yaml", policies)))


async def test_a_crashing_runner_restarts_after_a_growing_backoff_and_readyz_says_why(tmp_path, caplog,
                                                                                      monkeypatch):
    # A runner with a bug that raises each time it starts: the runner itself survives a policy
    # file gone after the rollout was created (it rolls back), so the bug is planted here.
    async def bug(self, info):
        raise RuntimeError("a bug in the runner")

    monkeypatch.setattr(RolloutRunner, "_resume", bug)
    # The clock moves only when the test says: the backoff's waits are what the test advances.
    async with daemon_on_sim(tmp_path, RELEASES, speed=0, baseline=None) as running:
        info = await create_rollout(running.db, running.clock, version="1.1.0",
                                    pipeline=canary_pipeline("gone.yaml"), actor="tester")

        async def crashes(count: int) -> None:
            async def reached() -> bool:
                return logged(caplog, "rollout_runner_crashed") >= count
            await poll(reached, timeout=30, alive=running.gone, what=f"{count} crash(es) of the runner")

        await crashes(1)
        await turns(running, 4)
        assert logged(caplog, "rollout_runner_crashed") == 1, "the runner was restarted without a backoff"
        assert await scraped(running.admin_port, "canary_runner_crashes_total", rollout=str(info.id)) == 1
        status, body = await probe(running.admin_port, "/readyz")
        assert status == 503
        assert f"rollout {info.id}'s runner is not running: its runner crashed (1 in a row" in body["reason"]
        assert f"rollout {info.id}: the policies of stage C are not loaded" in body["reason"]
        assert (await probe(running.admin_port, "/healthz"))[0] == 200

        running.clock.advance(RUNNER_BACKOFF_INITIAL)
        await crashes(2)
        running.clock.advance(RUNNER_BACKOFF_INITIAL)  # the second wait is twice the first
        await turns(running, 4)
        assert logged(caplog, "rollout_runner_crashed") == 2
        running.clock.advance(RUNNER_BACKOFF_INITIAL)
        await crashes(3)
        assert await scraped(running.admin_port, "canary_runner_crashes_total", rollout=str(info.id)) == 3


async def test_the_main_loop_outlives_a_locked_database_and_readyz_says_so(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(store_database, "SQLITE_BUSY_TIMEOUT_MS", 300)  # a write waits 0.3 s for the lock
    async with daemon_on_sim(tmp_path, {}, baseline=None) as running:
        # A command the main loop must answer: answering is a write.
        command = await submit_command(running.db, running.clock, rollout_id=None, kind="frobnicate", actor="tester")
        other_writer = sqlite3.connect(tmp_path / "canary.db", isolation_level=None)
        other_writer.execute("BEGIN IMMEDIATE")  # holds the write lock: every write of the daemon fails
        try:
            unanswered = other_writer.execute("SELECT acked_at FROM operator_commands WHERE id = ?", (command.id,))
            assert unanswered.fetchone() == (None,)

            async def store_errors() -> bool:
                return (await scraped(running.admin_port, "canary_store_errors_total") or 0) >= 3
            await poll(store_errors, timeout=30, alive=running.gone, what="3 store errors")
            assert logged(caplog, "store_unreachable") >= 3
            status, body = await probe(running.admin_port, "/readyz")
            assert status == 503
            assert body["reason"].startswith("the store is unreachable: ") and "database is locked" in body["reason"]
            assert (await probe(running.admin_port, "/healthz"))[0] == 200
        finally:
            other_writer.rollback()
            other_writer.close()
        answer = await acked(running, command.id)
        assert (answer.outcome, answer.message) == ("rejected", "unknown command 'frobnicate'")

        async def ready() -> bool:
            return (await probe(running.admin_port, "/readyz"))[0] == 200
        await poll(ready, timeout=30, alive=running.gone, what="/readyz to answer 200 again")


async def test_healthz_fails_with_its_reason_when_the_main_loop_stalls(tmp_path, monkeypatch):
    # A write that waits 12 s for the lock holds the main loop past the 10 s liveness limit.
    monkeypatch.setattr(store_database, "SQLITE_BUSY_TIMEOUT_MS", 12_000)
    async with daemon_on_sim(tmp_path, {}, baseline=None) as running:
        status, body = await probe(running.admin_port, "/healthz")
        assert status == 200 and body["reason"].startswith("main loop last turned ")
        await submit_command(running.db, running.clock, rollout_id=None, kind="frobnicate", actor="tester")
        other_writer = sqlite3.connect(tmp_path / "canary.db", isolation_level=None)
        other_writer.execute("BEGIN IMMEDIATE")
        try:
            async def unhealthy() -> dict | None:
                status, body = await probe(running.admin_port, "/healthz")
                return body if status == 503 else None
            body = await poll(unhealthy, timeout=30, alive=running.gone, what="/healthz to answer 503")
            assert body["ok"] is False and body["reason"].startswith("main loop last turned 1")
            assert body["reason"].endswith("s ago (limit 10 s)")
        finally:
            other_writer.rollback()
            other_writer.close()

        async def healthy() -> bool:
            return (await probe(running.admin_port, "/healthz"))[0] == 200
        await poll(healthy, timeout=30, alive=running.gone, what="/healthz to answer 200 again")


async def test_after_a_restart_a_failed_rollout_is_exported_before_anything_changes(tmp_path):
    db = Database(resolve_url(f"sqlite:///{tmp_path / 'canary.db'}"))
    clock = SimulatedClock(datetime.now(tz=UTC))
    try:
        await upgrade(db)
        await add_release(db, clock, read_release("1.1.0", MANIFEST, RELEASES["1.1.0"]), actor="tester")
        info = await create_rollout(db, clock, version="1.1.0", pipeline=canary_pipeline(), actor="tester")
        # What the previous daemon left: a rollback that failed at a step.
        await save_decision(db, clock, info, State(Status.FAILED, reason="restore_leverage: -1003 too many requests"))
    finally:
        await db.close()
    async with daemon_on_sim(tmp_path, {}, baseline=None) as running:
        await turns(running, 2)
        assert await scraped(running.admin_port, "canary_rollout_state", rollout=str(info.id), state="failed") == 1
        assert await scraped(running.admin_port, "canary_rollout_state", rollout=str(info.id), state="rolled_back") == 0
        assert await scraped(running.admin_port, "canary_rollout_stage_info", rollout=str(info.id), stage="C") == 1


async def test_baseline_is_refused_on_an_account_an_active_rollout_holds(tmp_path):
    async with daemon_on_sim(tmp_path, RELEASES) as running:
        info = await create_rollout(running.db, running.clock, version="1.1.0", pipeline=canary_pipeline(),
                                    actor="tester")
        await running.until(info.id, Status.RUNNING)
        for account in ("canary", "master"):  # where it places the release, and its baseline
            refused = await running.ctl("baseline", "1.0.0", "--account", account, "--json")
            assert refused.code == 1, refused
            answer = json.loads(refused.out)
            assert answer["outcome"] == "rejected"
            assert answer["message"].startswith(f"rollout {info.id} of 1.1.0 (running) holds sim/{account}: ")
        running_now = await running.daemon.site.deployer("sim").status(running.daemon.site.instance("sim", "canary"))
        assert running_now is not None and running_now.release == "1.1.0"


async def test_a_slow_baseline_placement_runs_beside_the_main_loop(tmp_path):
    async with daemon_on_sim(tmp_path, RELEASES, baseline=None) as running:
        faults = running.simulators.started["sim"].faults
        faults.add_latency(10.0)  # every REST answer 10 s late on the clock: 1 s of wall time at speed 10
        command = await submit_command(running.db, running.clock, rollout_id=None, kind="place", actor="tester",
                                       args={"release": "1.0.0", "environment": "sim", "account": "master"})
        submitted = time.monotonic()

        async def turned_while_placing() -> bool:
            assert (await get_command(running.db, command.id)).acked_at is None, \
                "the placement ended before the main loop turned again: it ran inside the loop"
            return running.daemon._last_turn > submitted + 1.0
        await poll(turned_while_placing, timeout=30, alive=running.gone, what="a turn during the placement",
                   every=0.05)
        faults.clear()
        answer = await acked(running, command.id)
        assert answer.outcome == "accepted", answer.message
        assert answer.message.startswith("1.0.0 runs on sim/master (deployment ")
