"""How long a dead daemon's rollout goes unowned: SIGKILL of its owner to another daemon holding it.

Three `canaryctl run` daemons (as three hosts) share a throwaway PostgreSQL server (initdb into a
temporary folder), with ``lease_seconds: 2``; one healthy rollout runs on a simulator process. Its
owner is SIGKILLed, the takeover timed (the kill's wall time to the new lease's acquisition, as the
database server wrote it), a new daemon replaces the dead one, and again. The same set-up as the
chaos test (tests/support/fleet.py). Without PostgreSQL server binaries the figure is null.

Figures: ``takeover_ms`` (median over the kills; quick: one kill) and ``takeover_max_ms``.

    .venv/bin/python bench/run.py --only takeover [--quick]
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
from pathlib import Path

LEASE_SECONDS = 2.0
why_not: dict[str, str] = {}
"""Why a figure is null (read by run.py)."""


def measure(quick: bool) -> dict[str, float | int | None]:
    from tests.daemon.harness import Processes
    from tests.support.fleet import measure_takeovers
    from tests.support.postgres import PostgresServer, find_bindir

    bindir = find_bindir()
    if bindir is None:
        why_not.update(dict.fromkeys(("takeover_ms", "takeover_max_ms"),
                                     "no PostgreSQL server binaries (initdb, pg_ctl) on this machine"))
        return {"takeover_ms": None, "takeover_max_ms": None}
    # The server's folder is its own: it is handed to an unprivileged user (initdb refuses root).
    with tempfile.TemporaryDirectory(prefix="bench-takeover-") as folder, \
            tempfile.TemporaryDirectory(prefix="bench-takeover-pg-") as server_folder:
        root = Path(folder)
        server = PostgresServer(bindir, Path(server_folder))
        server.start()
        processes = Processes(root)
        try:
            times = asyncio.run(measure_takeovers(root, processes, server.create_database("takeover"),
                                                  kills=1 if quick else 5, lease_seconds=LEASE_SECONDS))
        finally:
            processes.close()
            server.stop()
    return {"takeover_ms": statistics.median(times), "takeover_max_ms": max(times)}
