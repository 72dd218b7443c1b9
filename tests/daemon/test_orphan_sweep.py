"""A daemon that starts finds the bots its records do not own and kills them before it says READY.

The first daemon dies (``CANARY_FAILPOINTS=deploy.process.spawned``) right after spawning a bot
for an operator's ``place`` and before ``placement.json`` names it. The command is then
withdrawn (acknowledged as refused), so nothing the restarted daemon does would start or stop
that instance again: only its start-up sweep can find the bot, which trades an account that no
record says is in use.
"""

from __future__ import annotations

from controller.store import audit
from controller.store.audit import AuditFilter
from controller.store.commands import ack_command, submit_command
from controller.store.database import Database, resolve_url
from tests.daemon.harness import ACTOR, CLOCK, bots_in, daemon_died, exchange_config, log_events, poll, prepare_database

ACCOUNT = "master"


async def test_a_bot_no_record_owns_is_killed_before_the_daemon_is_ready(tmp_path, processes):
    sim = processes.start_sim(seed=17)
    db_url = await prepare_database(tmp_path / "canary.db")
    config = exchange_config(tmp_path, sim)
    state_dir = tmp_path / "state"
    folder = state_dir / "instances" / f"sim-{ACCOUNT}"
    first_log, second_log = tmp_path / "daemon-1.log", tmp_path / "daemon-2.log"
    daemon = processes.start_daemon(db_url=db_url, config=config, state_dir=state_dir, log=first_log,
                                    failpoints="deploy.process.spawned")
    db = Database(resolve_url(db_url))
    try:
        place = await submit_command(db, CLOCK, rollout_id=None, kind="place", actor=ACTOR,
                                     args={"release": "1.0.0", "environment": "sim", "account": ACCOUNT})

        async def died():
            return daemon.poll() is not None

        await poll(died, timeout=30, what="the daemon to die at deploy.process.spawned")
        [orphan] = bots_in(folder)
        await ack_command(db, CLOCK, place.id, accepted=False, message="withdrawn by the test")

        second = processes.start_daemon(db_url=db_url, config=config, state_dir=state_dir, log=second_log)

        async def ready():
            return any(e.get("event") == "daemon_ready" for e in log_events(second_log)) or None

        await poll(ready, timeout=40, what="the restarted daemon to be ready", alive=daemon_died(second, second_log))
        assert bots_in(folder) == [], f"bot {orphan} still runs on {ACCOUNT} with no record"
        swept = [e for e in log_events(second_log) if e.get("event") == "orphans_killed"]
        assert swept and swept[0]["pids"] == [orphan] and swept[0]["account"] == ACCOUNT
        events = [e async for e in audit.query(db, AuditFilter(kind="deploy.orphans_killed"))]
        assert [e.payload["pids"] for e in events] == [[orphan]]
    finally:
        await db.close()
