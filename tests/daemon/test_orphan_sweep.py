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
from controller.store.commands import ack_command
from tests.daemon.harness import CLOCK, bots_in, crash_after_spawning, daemon_died, log_events, poll

ACCOUNT = "master"


async def test_a_bot_no_record_owns_is_killed_before_the_daemon_is_ready(tmp_path, processes):
    crash = await crash_after_spawning(tmp_path, processes, seed=17, account=ACCOUNT)
    db, orphan, second_log = crash.db, crash.stray, tmp_path / "daemon-2.log"
    try:
        await ack_command(db, CLOCK, crash.place.id, accepted=False, message="withdrawn by the test")
        second = crash.restart(processes, second_log)

        async def ready():
            return any(e.get("event") == "daemon_ready" for e in log_events(second_log)) or None

        await poll(ready, timeout=40, what="the restarted daemon to be ready", alive=daemon_died(second, second_log))
        assert bots_in(crash.folder) == [], f"bot {orphan} still runs on {ACCOUNT} with no record"
        swept = [e for e in log_events(second_log) if e.get("event") == "orphans_killed"]
        assert swept and swept[0]["pids"] == [orphan] and swept[0]["account"] == ACCOUNT
        events = [e async for e in audit.query(db, AuditFilter(kind="deploy.orphans_killed"))]
        assert [e.payload["pids"] for e in events] == [[orphan]]
    finally:
        await db.close()
