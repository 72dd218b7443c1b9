"""The fixtures every test can ask for, registered once by the root conftest.

A folder whose tests need another simulator or clock overrides ``sim`` or ``clock`` in its
conftest with a thin call to `make_sim` or `make_clock`.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from controller.clock import SimulatedClock
from controller.store.database import Database, resolve_url
from controller.store.schema import upgrade
from reference_bot.exchange import FuturesAccount
from tests.support.clients import bot_account
from tests.support.clocks import make_clock
from tests.support.postgres import PostgresServer, find_bindir
from tests.support.simulator import make_sim
from tests.support.wheel import DemoRun, Venv, install_wheel, run_demo

_db_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server():
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but no PostgreSQL server binaries were found (initdb, pg_ctl); "
                        ".ci/run must install the postgresql package")
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl) on this machine; install postgresql to run these")
    with tempfile.TemporaryDirectory(prefix="canary-pg-") as root:
        server = PostgresServer(bindir, Path(root))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def wheel_venv(tmp_path_factory) -> Venv:
    """The wheel built from the checkout, installed with its dependencies into a new venv outside it."""
    return install_wheel(tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("venv"),
                         tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="session")
def demo_run(wheel_venv) -> DemoRun:
    """One ``canaryctl demo`` of the installed wheel, for every test that judges a demo; none of them
    writes into its workdir."""
    return run_demo(wheel_venv, wheel_venv.home / "demo")


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'canary.db'}"


@pytest.fixture
def postgres_url(postgres_server) -> str:
    return postgres_server.create_database(f"canary_{os.getpid()}_{next(_db_names)}")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """A fresh, empty database of each kind the controller supports."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")


@asynccontextmanager
async def _upgraded(url: str) -> AsyncIterator[Database]:
    database = Database(resolve_url(url))
    await upgrade(database)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def db(db_url):
    async with _upgraded(db_url) as database:
        yield database


@pytest.fixture
async def sqlite_db(sqlite_url):
    """The store on SQLite only: for the read commands' tests, which read its file as canaryctl does."""
    async with _upgraded(sqlite_url) as database:
        yield database


@pytest.fixture
def clock() -> SimulatedClock:
    """Stands still (at a minute's start: no weight window rolls mid-test) until a test advances it."""
    return make_clock()


@pytest.fixture
def sim_clock() -> SimulatedClock:
    # Runs with real time, so the timestamps python-binance signs with stay valid; tests jump
    # it forward with advance().
    return make_clock(speed=1.0)


@pytest.fixture
async def sim(sim_clock):
    """A started simulator on an ephemeral port; prices move only when a test says so."""
    async with make_sim(clock=sim_clock) as simulator:
        yield simulator


@pytest.fixture
async def bot_exchange(sim, clock):
    """Opens the reference bot's own connection to a simulator account (as a bot is given it);
    closed at teardown."""
    opened: list[FuturesAccount] = []

    async def open_exchange(account: str = "canary") -> FuturesAccount:
        exchange = bot_account(sim, clock, account)
        opened.append(exchange)
        return exchange

    yield open_exchange
    for exchange in opened:
        await exchange.close()
