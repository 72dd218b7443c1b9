"""``--expires-in`` of the commands that move a release forward: validated before anything is written,
stored with the command for the daemon to judge; rollback and pause take none (they never expire)."""

from __future__ import annotations

import pytest

from controller.clock import RealClock
from controller.release_files import read_release
from controller.store.commands import pending_commands
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.daemon.inprocess import BOT, MANIFEST
from tests.support.canaryctl import assert_refused, canaryctl


@pytest.mark.parametrize("value, expected", [
    ("0s", "'0s' is 0 s; expected more than 0 and at most 24h"),
    ("25h", "'25h' is 90000 s; expected more than 0 and at most 24h"),
    ("soon", "'soon' is not a duration; expected e.g. 90s, 15m, 48h"),
])
def test_a_bad_expiry_is_refused_with_exit_2_before_anything_is_written(sqlite_url, value, expected):
    result = canaryctl("promote", "1", "--expires-in", value, db=sqlite_url)
    assert_refused(result, "--expires-in", expected)


@pytest.mark.parametrize("kind", ["rollback", "pause"])
def test_rollback_and_pause_take_no_expiry(kind):
    result = canaryctl(kind, "1", "--reason", "x", "--expires-in", "1m")
    assert_refused(result, "No such option '--expires-in'")


async def test_the_expiry_is_stored_with_the_command_and_defaults_to_10_minutes(sqlite_url):
    db = Database(resolve_url(sqlite_url))
    try:
        await upgrade(db)
        await add_release(db, RealClock(), read_release("1.0.0", MANIFEST, BOT / "strategy.yaml"), actor="tester")
        for extra in (["--expires-in", "90s"], []):
            queued = canaryctl("baseline", "1.0.0", *extra, "--wait", "0", db=sqlite_url)
            assert queued.code == 3, queued  # no daemon: it stays queued, with its expiry
        assert [c.args["expires_in"] for c in await pending_commands(db)] == [90.0, 600.0]
    finally:
        await db.close()
