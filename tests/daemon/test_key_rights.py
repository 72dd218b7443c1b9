"""Least privilege on the exchange keys, through real daemons: a key wider than reading and futures
trading keeps `canaryctl run` from starting (exit 2, before READY), and a key widened while the
daemon runs refuses the next placement on its account, with an audit event."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import aiohttp
import pytest
from sqlalchemy import select

from controller.clock import SimulatedClock
from controller.config.daemon import DaemonConfig
from controller.daemon.service import Daemon, DaemonOptions
from controller.errors import InputError
from controller.sim.embed import EmbeddedSimulators
from controller.store.database import Database, resolve_url
from controller.store.models import AuditEvent, Deployment
from tests.daemon.harness import daemon_died, exchange_config, log_events, place_baseline, poll, prepare_database
from tests.support.canaryctl import assert_refused, canaryctl


async def widen(sim, account: str, **rights: bool) -> None:
    """Set rights of ``account``'s key through the simulator's admin API, as an operator's mistake would."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{sim.info['admin_url']}/api-rights", json={"account": account, **rights}) as reply:
            assert reply.status == 200, await reply.text()


@pytest.mark.parametrize(("right", "said"), [
    ("enableWithdrawals", "it can withdraw funds (enableWithdrawals)"),
    ("enableInternalTransfer", "it can transfer funds between the master and its sub-accounts"),
    ("enableSpotAndMarginTrading", "it can trade spot and margin (enableSpotAndMarginTrading)"),
])
async def test_a_key_too_wide_keeps_the_daemon_from_starting(right, said, tmp_path, processes):
    sim = processes.start_sim(seed=23)
    db_url = await prepare_database(tmp_path / "canary.db", releases=False)
    config = exchange_config(tmp_path, sim)
    await widen(sim, "canary", **{right: True})

    result = await asyncio.to_thread(canaryctl, "--db", db_url, "--config", str(config), "run", "--state-dir",
                                     str(tmp_path / "state"), timeout=60)

    assert_refused(result, "environment sim, account canary: its exchange key is refused: " + said)
    assert "daemon_ready" not in result.out + result.err


async def test_a_key_widened_while_the_daemon_runs_refuses_the_placement(tmp_path, processes):
    sim = processes.start_sim(seed=29)
    db_url = await prepare_database(tmp_path / "canary.db")
    config = exchange_config(tmp_path, sim)
    log = tmp_path / "daemon.log"
    daemon = processes.start_daemon(db_url=db_url, config=config, state_dir=tmp_path / "state", log=log)
    db = Database(resolve_url(db_url))
    try:
        async def ready():
            return any(e.get("event") == "daemon_ready" for e in log_events(log))

        await poll(ready, timeout=60, what="the daemon's READY", alive=daemon_died(daemon, log))
        await widen(sim, "canary", permitsUniversalTransfer=True)

        placed = await place_baseline(db, daemon_died(daemon, log), account="canary")

        assert placed.outcome == "rejected"
        assert "KeyTooWide: release 1.0.0 is not placed on sim/canary: its exchange key is refused: it can make " \
               "universal transfers (permitsUniversalTransfer)" in placed.message
        async with db.read() as session:
            refusals = (await session.execute(select(AuditEvent).where(AuditEvent.kind == "deploy.key_refused"))
                        ).scalars().all()
            deployments = (await session.execute(select(Deployment))).scalars().all()
        [refusal] = refusals
        assert refusal.subject == "account:sim/canary"
        assert "permitsUniversalTransfer" in json.loads(refusal.payload)["problems"][0]
        assert deployments == []  # refused before any intent: nothing changed on the account

        placed = await place_baseline(db, daemon_died(daemon, log), account="master")
        assert placed.outcome == "accepted", placed.message  # the other account's key is still fine
    finally:
        await db.close()


class _WideSimulators(EmbeddedSimulators):
    """The embedded simulator, with the canary key given margin trading as soon as it starts."""

    async def open(self, environment, deployer):
        access = await super().open(environment, deployer)
        self.started[environment].set_api_rights("canary", enableMargin=True)
        return access


async def test_the_embedded_simulators_keys_are_checked_too(tmp_path):
    db = Database(resolve_url(await prepare_database(tmp_path / "canary.db", releases=False)))
    try:
        config = DaemonConfig.model_validate({"environments": {"sim": {"kind": "sim"}}, "admin": {"port": 0}})
        clock = SimulatedClock(datetime.now(tz=UTC), speed=10.0)
        daemon = Daemon(config, db, clock, DaemonOptions(state_dir=tmp_path / "state"),
                        simulators=_WideSimulators(clock, speed=10.0))
        with pytest.raises(InputError, match=r"account canary: its exchange key is refused: it can trade on margin"):
            await asyncio.wait_for(daemon.run(), 60)
        assert not daemon.ready.is_set()
    finally:
        await db.close()


def test_canaryctl_run_refuses_an_unconfirmed_live_environment(tmp_path):
    config = tmp_path / "controller.yaml"
    config.write_text("environments:\n  live:\n    kind: live\n    accounts:\n      master:\n"
                      "        api_key: env:LIVE_KEY\n        api_secret: env:LIVE_SECRET\n")

    result = canaryctl("--db", f"sqlite:///{tmp_path / 'canary.db'}", "--config", str(config), "run",
                       "--state-dir", str(tmp_path / "state"), timeout=60)

    assert_refused(result, f"{config}:3: environments.live.kind: a live environment trades real money: "
                           "set confirm_live: true")
