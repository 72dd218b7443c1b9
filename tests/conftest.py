from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import pytest

from controller.clock import SimulatedClock
from controller.store.database import Database, resolve_url
from controller.store.schema import upgrade
from tests.postgres import PostgresServer, find_bindir

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
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


@pytest.fixture
async def db(db_url):
    database = Database(resolve_url(db_url))
    await upgrade(database)
    yield database
    await database.close()


@pytest.fixture
def clock() -> SimulatedClock:
    """Stands still until a test advances it."""
    return SimulatedClock()


@pytest.fixture
def sim_clock() -> SimulatedClock:
    # Runs with real time, so the timestamps python-binance signs with stay valid; tests jump
    # it forward with advance().
    return SimulatedClock(speed=1.0)


@pytest.fixture
async def sim(sim_clock):
    """A started simulator on an ephemeral port; prices move only when a test says so."""
    from controller.sim import Simulator

    simulator = Simulator(clock=sim_clock, seed=7, volatility=0)
    await simulator.start("127.0.0.1", 0)
    yield simulator
    await simulator.stop()
