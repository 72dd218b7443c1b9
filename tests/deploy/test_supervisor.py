"""The bot's dead man's switch with real processes and real databases: `canaryctl supervise` kills its
bot within one lease length when the placement's epoch moves on or the database is out of reach, and a
normal stop (through the process deployer) stops it and lets the lease go."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from controller.deploy import ProcessDeployer
from controller.deploy.base import Supervision, free_port
from controller.deploy.process import wait_exit
from controller.deploy.supervisor import EXIT_CANNOT_RUN, EXIT_NOT_CLAIMED, EXIT_SUPERSEDED, EXIT_UNCONFIRMED
from controller.procfs import read_stat
from controller.store import placement_leases
from controller.store.database import Database, resolve_url
from controller.store.schema import upgrade
from tests.support.checkout import REPO
from tests.support.placements import STUB, placement, stub_manifest
from tests.support.postgres import PostgresServer, find_bindir

LEASE = 3.0
"""Seconds: short, so that each test waits a few of them at most, yet a renewal (due within a second)
still succeeds on a loaded machine."""
INSTANCE = "sim-canary"


async def _store(url: str) -> Database:
    db = Database(resolve_url(url))
    await upgrade(db)
    return db


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


class Supervised:
    """`canaryctl supervise` run as a real process over the stub bot; the database in its environment."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.port = free_port()
        self.output = tmp_path / "supervisor.log"
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "CANARY_DB": url}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "controller", "supervise", "--placement", INSTANCE, "--lease-seconds", str(LEASE),
             "--", sys.executable, "-c", STUB, str(self.port), "tells-sigterm"],
            env=env, stdout=self.output.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        self.bot = 0

    async def bot_started(self) -> int:
        """The bot's pid, once it serves its metrics (so the lease was claimed)."""
        async with asyncio.timeout(30):
            while b"stub serving" not in self.output.read_bytes():
                assert self.process.poll() is None, self.output.read_text()
                await asyncio.sleep(0.05)
        [self.bot] = _children(self.process.pid)
        return self.bot

    async def bot_dead_within(self, seconds: float) -> bool:
        stat = read_stat(self.bot)
        return stat is None or await wait_exit(self.bot, stat.start_ticks, seconds)

    def status(self, timeout: float = 10) -> int:
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.output.read_text()

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def supervised(tmp_path):
    started = []

    def start(url: str) -> Supervised:
        run = Supervised(url, tmp_path)
        started.append(run)
        return run

    yield start
    for run in started:
        run.end()


@pytest.fixture
def sqlite_store(tmp_path) -> Path:
    (tmp_path / "store").mkdir()
    return tmp_path / "store" / "canary.db"


async def test_a_superseded_epoch_kills_the_bot_within_one_lease_length(sqlite_store, supervised):
    db = await _store(f"sqlite:///{sqlite_store}")
    try:
        run = supervised(f"sqlite:///{sqlite_store}")
        await run.bot_started()
        held = await placement_leases.holder(db, INSTANCE)
        assert (held.epoch, held.owner) == (1, f"{os.uname().nodename}:{run.process.pid}")

        assert await placement_leases.supersede(db, INSTANCE) == (2, held.owner)  # a stop from another host
        assert await run.bot_dead_within(LEASE)
        assert run.status() == EXIT_SUPERSEDED
        assert "got SIGTERM" in run.log() and "epoch moved on" in run.log()
    finally:
        await db.close()


async def test_a_placement_elsewhere_supersedes_the_one_before(sqlite_store, supervised):
    db = await _store(f"sqlite:///{sqlite_store}")
    try:
        first = supervised(f"sqlite:///{sqlite_store}")
        await first.bot_started()
        second = supervised(f"sqlite:///{sqlite_store}")
        await second.bot_started()
        assert await first.bot_dead_within(LEASE)
        assert first.status() == EXIT_SUPERSEDED
        assert second.process.poll() is None and read_stat(second.bot).alive
        assert (await placement_leases.holder(db, INSTANCE)).epoch == 2
    finally:
        await db.close()


async def test_a_database_out_of_reach_kills_the_bot_within_one_lease_length(sqlite_store, supervised):
    db = await _store(f"sqlite:///{sqlite_store}")
    await db.close()
    run = supervised(f"sqlite:///{sqlite_store}")
    await run.bot_started()
    sqlite_store.parent.rename(sqlite_store.parent.with_name("moved"))  # the file is gone from its path
    assert await run.bot_dead_within(LEASE)
    assert run.status() == EXIT_UNCONFIRMED
    assert "failing closed" in run.log()


async def test_no_bot_starts_without_its_lease(tmp_path, supervised):
    run = supervised(f"sqlite:///{tmp_path / 'no-schema.db'}")  # reachable, but no placement_leases table
    assert run.status(timeout=30) == EXIT_NOT_CLAIMED
    assert "stub serving" not in run.log() and "could not be claimed" in run.log()


async def test_a_bot_that_cannot_be_run_is_said_so_and_its_lease_let_go(sqlite_store, tmp_path):
    url = f"sqlite:///{sqlite_store}"
    db = await _store(url)
    try:
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "CANARY_DB": url}
        done = subprocess.run([sys.executable, "-m", "controller", "supervise", "--placement", INSTANCE,
                               "--", str(tmp_path / "no-such-bot")], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == EXIT_CANNOT_RUN
        assert "cannot run" in done.stderr + done.stdout and "Traceback" not in done.stderr
        held = await placement_leases.holder(db, INSTANCE)
        assert (held.epoch, held.owner) == (1, "")
    finally:
        await db.close()


def test_the_database_url_never_appears_in_the_arguments(tmp_path):
    supervision = Supervision({"CANARY_DB": "postgresql://canary:s3cret@db/canary"}, lease_seconds=9)
    argv = supervision.argv(sys.executable, INSTANCE, ["bot", "--flag"], pass_fds=(5,))
    assert not any("s3cret" in arg or "postgresql" in arg for arg in argv)
    assert argv[argv.index("--") + 1:] == ["bot", "--flag"]


async def test_a_stop_through_the_deployer_stops_supervisor_and_bot_and_lets_the_lease_go(sqlite_store, clock):
    url = f"sqlite:///{sqlite_store}"
    db = await _store(url)
    deployer = ProcessDeployer(sqlite_store.parent / "state", clock, supervision=Supervision(
        {"CANARY_DB": url}, lease_seconds=LEASE,
        supersede=lambda instance: placement_leases.supersede(db, instance)))
    try:
        running = await deployer.start(placement({"rest_url": "http://127.0.0.1:9", "ws_url": "ws://127.0.0.1:9",
                                                  "api_key": "k", "api_secret": "secret-0123456789"},
                                                 manifest=stub_manifest("tells-sigterm")))
        [bot] = _children(running.pid)
        bot_stat = read_stat(bot)
        environ = Path(f"/proc/{bot}/environ").read_bytes()
        assert b"CANARY_DB" not in environ and b"CANARY_DB" in Path(f"/proc/{running.pid}/environ").read_bytes()
        assert (await placement_leases.holder(db, INSTANCE)).owner.endswith(f":{running.pid}")

        stopped = await deployer.stop(INSTANCE, grace=LEASE)
        assert stopped.pid == running.pid
        assert await wait_exit(bot, bot_stat.start_ticks, 0)  # already gone
        assert await deployer.status(INSTANCE) is None
        held = await placement_leases.holder(db, INSTANCE)
        assert (held.owner, held.epoch) == ("", 2)  # released, then moved on: a copy elsewhere dies too
    finally:
        await deployer.stop(INSTANCE, grace=0)
        await db.close()


@pytest.mark.postgres
async def test_a_postgresql_server_that_stops_kills_the_bot_within_one_lease_length(supervised):
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl)")
    root = Path(tempfile.mkdtemp(prefix="canary-pg-"))  # where the server's unprivileged user can reach
    server = PostgresServer(bindir, root)  # its own server: this test stops it
    server.start()
    try:
        url = server.create_database("supervised")
        db = await _store(url)
        await db.close()
        run = supervised(url)
        await run.bot_started()
        server.stop()
        assert await run.bot_dead_within(LEASE)
        assert run.status() == EXIT_UNCONFIRMED
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


async def test_a_stop_on_another_host_fences_the_bot_it_did_not_start_and_returns_once_it_is_dead(
        sqlite_store, supervised, clock):
    url = f"sqlite:///{sqlite_store}"
    db = await _store(url)
    elsewhere = ProcessDeployer(sqlite_store.parent / "other-host", clock, supervision=Supervision(
        {"CANARY_DB": url}, lease_seconds=LEASE, supersede=lambda instance: placement_leases.supersede(db, instance)))
    try:
        run = supervised(url)  # started by "this host": the other host's deployer has no record of it
        await run.bot_started()
        assert await elsewhere.status(INSTANCE) is None
        assert await elsewhere.stop(INSTANCE, grace=1.0) is None  # nothing of its own stopped ...
        assert read_stat(run.bot) is None or not read_stat(run.bot).alive  # ... yet the bot is dead on return
        assert run.status() == EXIT_SUPERSEDED
    finally:
        await db.close()
