"""Two daemons on one PostgreSQL: the one that owns nothing is a healthy standby (/readyz 200 and /status
say ``standby``, ``canary_leases_owned`` 0); when the owner stops, the standby takes the rollout over
at the next epoch (audited, counted) and says so."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
import yaml

from controller.clock import SimulatedClock
from controller.config.daemon import DaemonConfig
from controller.daemon.service import Daemon, DaemonOptions
from controller.release_files import read_release
from controller.rollout.decide import State, Status
from controller.rollout.info import create_rollout, save_decision
from controller.rollout.pipeline import pipeline_from_document
from controller.sim.embed import EmbeddedSimulators
from controller.store import audit, leases
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, MANIFEST
from tests.support.admin import probe, scraped
from tests.support.checkout import POLICIES

LEASE = 1.5  # seconds: renewed every 0.5 s


def _daemon(db: Database, clock, folder, owner: str) -> tuple[Daemon, asyncio.Task]:
    config = DaemonConfig.model_validate({"environments": {"sim": {"kind": "sim"}}, "admin": {"port": 0},
                                          "policies_dir": str(POLICIES), "lease_seconds": LEASE})
    daemon = Daemon(config, db, clock, DaemonOptions(state_dir=folder / owner, stop_releases_on_exit=True,
                                                     owner=owner),
                    simulators=EmbeddedSimulators(clock, speed=10.0))
    return daemon, asyncio.create_task(daemon.run(), name=f"daemon-{owner}")


@pytest.mark.postgres
async def test_a_daemon_that_owns_nothing_is_a_ready_standby_and_takes_over_when_the_owner_stops(
        tmp_path, postgres_url):
    db = Database(resolve_url(postgres_url))
    clock = SimulatedClock(datetime.now(tz=UTC), speed=10.0)
    tasks: list[tuple[Daemon, asyncio.Task]] = []
    try:
        await upgrade(db)
        await add_release(db, clock, read_release("1.1.0", MANIFEST, BOT / "strategy-next.yaml"), actor="tester")
        info = await create_rollout(db, clock, version="1.1.0", actor="tester",
                                    pipeline=pipeline_from_document(yaml.safe_load(CANARY_PIPELINE)))
        # Its rollback failed: it waits for an operator, so its runner places and watches nothing.
        await save_decision(db, clock, info, State(status=Status.FAILED, reason="a step failed"))

        first, first_task = _daemon(db, clock, tmp_path, "host-a")
        tasks.append((first, first_task))
        await asyncio.wait_for(first.ready.wait(), 60)
        assert set(first.leases) == {info.id}
        second, second_task = _daemon(db, clock, tmp_path, "host-b")
        tasks.append((second, second_task))
        await asyncio.wait_for(second.ready.wait(), 60)

        status, body = await probe(second.admin_port, "/readyz")
        assert (status, body["ok"]) == (200, True) and body["reason"].startswith("standby: host-b owns no rollout")
        assert await scraped(second.admin_port, "canary_leases_owned") == 0
        assert await scraped(first.admin_port, "canary_leases_owned") == 1
        # A standby's lease turn counts too: the alert asks whether any daemon can.
        for port in (first.admin_port, second.admin_port):
            assert time.time() - await scraped(port, "canary_lease_renewed_timestamp_seconds") < 2 * LEASE
            assert await scraped(port, "canary_lease_seconds") == LEASE

        def role(daemon: Daemon, wanted: str):
            async def said():
                return daemon._status if daemon._status.get("role") == wanted else None
            return poll(said, timeout=10, what=f"{daemon.owner}'s /status to say {wanted}")
        said = await role(second, "standby")
        assert (said["owner"], said["leases"], said["runners"]) == ("host-b", {}, [])
        said = await role(first, "active")
        assert (said["owner"], list(said["leases"]), said["runners"]) == ("host-a", [str(info.id)], [info.id])

        first.request_stop()  # a clean stop gives its leases up: the standby takes them at its next claim
        await asyncio.wait_for(first_task, 30)

        async def taken():
            return second.leases.get(info.id)
        lease = await poll(taken, timeout=3 * LEASE, what="host-b to take the rollout over")
        assert lease.epoch == 2
        assert await scraped(second.admin_port, "canary_lease_takeovers_total") == 1
        [event] = [e async for e in audit.query(db, audit.AuditFilter(kind="lease.taken_over"))]
        assert (event.payload["owner"], event.payload["previous_owner"], event.payload["previous_epoch"]) == \
            ("host-b", "host-a", 1)
        assert (await leases.leases(db))[info.id].owner == "host-b"

        async def active():
            status, body = await probe(second.admin_port, "/readyz")
            return body if status == 200 and not body["reason"].startswith("standby") else None
        await poll(active, timeout=10, what="host-b's /readyz to say it runs the rollout")
    finally:
        for daemon, task in tasks:
            daemon.request_stop()
        await asyncio.gather(*(asyncio.wait_for(task, 30) for _, task in tasks), return_exceptions=True)
        await db.close()
