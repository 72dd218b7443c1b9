"""Who did what: a command records the operating-system user that ran `canaryctl` beside the name
it claims, and control characters never reach the store from a name or a reason."""

from __future__ import annotations

import os
import pwd

from controller.rollout.decide import Command, Plan, State, Status, decide
from controller.rollout.pipeline import Pipeline
from controller.store.commands import pending_commands
from tests.support.ops_rollout import canary
from tests.support.canaryctl import canaryctl

LOGIN = pwd.getpwuid(os.geteuid()).pw_name


async def test_a_command_records_the_os_user_beside_the_claimed_name_and_drops_control_characters(sqlite_db,
                                                                                                  sqlite_url):
    info, _ = await canary(sqlite_db)
    result = canaryctl("signoff", str(info.id), "C", "--by", "ali\x1b[2Kce", "--wait", "0", db=sqlite_url,
                       env={"CANARY_ACTOR": "mallory"})
    assert result.code == 3, result  # queued: no daemon answers here
    result = canaryctl("rollback", str(info.id), "--reason", "fills\x07 look\nwrong", "--wait", "0", db=sqlite_url,
                       env={"CANARY_ACTOR": "mallory"})
    assert result.code == 3, result
    signoff, rollback = [c for c in await pending_commands(sqlite_db, [info.id]) if c.kind in ("signoff", "rollback")]
    assert (signoff.actor, signoff.args["os_user"]) == ("ali[2Kce", LOGIN)
    assert (rollback.actor, rollback.reason, rollback.args["os_user"]) == ("mallory", "fills look wrong", LOGIN)


def test_the_audit_of_a_command_carries_the_os_user():
    pipeline = Pipeline.model_validate({"name": "p", "stages": [
        {"name": "C", "environment": "sim", "account": "canary", "duration": "1h", "policies": "stage-c.yaml"}]})
    state = State(Status.RUNNING, 0, 0.0)
    decision = decide(state, [], [Command(1, "pause", "alice", "look", os_user="mallory")], 10.0,
                      plan=Plan(pipeline, {"C": frozenset()}))
    [audit] = [a for a in decision.actions if getattr(a, "kind", "") == "command.pause"]
    assert (audit.actor, audit.payload["os_user"]) == ("alice", "mallory")


async def test_audit_query_shows_the_os_user_where_it_differs_from_the_claimed_name(sqlite_db, sqlite_url):
    from controller.clock import RealClock
    from controller.store import audit

    async with sqlite_db.write() as session:
        await audit.append(session, RealClock(), actor="alice", kind="command.signoff", subject="rollout:1",
                           payload={"command": 1, "os_user": "mallory"})
        await audit.append(session, RealClock(), actor="bob", kind="command.pause", subject="rollout:1",
                           payload={"command": 2, "os_user": "bob"})
    out = canaryctl("audit", "query", "--kind", "command.signoff", db=sqlite_url).out
    assert "alice (os user mallory)" in out
    out = canaryctl("audit", "query", "--kind", "command.pause", db=sqlite_url).out
    assert "bob" in out and "os user" not in out


def test_every_event_canaryctl_writes_carries_the_os_user(sqlite_url):
    """Not only commands: a release added (and its config snapshot) names who ran `canaryctl`."""
    import json

    from tests.support.checkout import EXAMPLES

    assert canaryctl("db", "upgrade", db=sqlite_url).code == 0
    added = canaryctl("release", "add", "1.0.0", "--manifest", str(EXAMPLES / "reference-bot" / "manifest.yaml"),
                      "--config", str(EXAMPLES / "reference-bot" / "strategy.yaml"), db=sqlite_url,
                      env={"CANARY_ACTOR": "mallory"})
    assert added.code == 0, added
    events = [json.loads(line) for line in canaryctl("audit", "query", "--json", db=sqlite_url).out.splitlines()]
    written = {e["kind"]: (e["actor"], e["payload"].get("os_user")) for e in events}
    assert written["release.added"] == ("mallory", LOGIN)
    assert written["config.snapshot"] == ("mallory", LOGIN)


async def test_on_postgresql_commands_and_events_record_the_database_role(postgres_url):
    from controller.clock import RealClock
    from controller.store import audit
    from controller.store.commands import submit_command
    from controller.store.database import Database, resolve_url
    from controller.store.schema import upgrade

    db = Database(resolve_url(postgres_url))
    try:
        await upgrade(db)
        command = await submit_command(db, RealClock(), rollout_id=None, kind="place", actor="alice",
                                       args={"release": "1.0.0"})
        async with db.write() as session:
            record = await audit.append(session, RealClock(), actor="alice", kind="test.event", subject="x")
        role = resolve_url(postgres_url).username
        assert role
        assert command.args["db_role"] == role
        assert record.payload["db_role"] == role
    finally:
        await db.close()


async def test_status_shows_the_os_user_beside_the_name_a_sign_off_claimed(sqlite_db, sqlite_url):
    from dataclasses import replace

    from controller.clock import RealClock
    from controller.rollout.info import save_decision
    from controller.store.commands import ack_command, submit_command

    info, _ = await canary(sqlite_db)
    signoff = await submit_command(sqlite_db, RealClock(), rollout_id=info.id, kind="signoff", actor="alice",
                                   args={"stage": "C", "items": [], "os_user": "mallory"})
    await ack_command(sqlite_db, RealClock(), signoff.id, accepted=True, message="signed owner-review of stage C")
    await save_decision(sqlite_db, RealClock(), info, replace(info.state, signoffs={"C/owner-review": "alice"}))
    shown = canaryctl("status", str(info.id), db=sqlite_url)
    assert shown.code == 0, shown
    assert "owner-review by alice (os user mallory)" in shown.out
