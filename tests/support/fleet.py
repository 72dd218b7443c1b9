"""Several `canaryctl run` daemons on one PostgreSQL, as on several hosts, with real simulators and bots.

What the chaos test (tests/daemon/test_chaos.py) and the takeover bench (bench/takeover.py) share:
one simulator process per exchange environment (``ex1``, ``ex2``, ...: one account each trades on
it, so that one IP's weight limit is not shared by every bot), the daemons with state folders of
their own and a short lease, releases of the reference bot (healthy: ``strategy.yaml``; defective:
``strategy-defect-leverage.yaml``, which sets SOLUSDT's leverage to 10 against a config of 3), a
one-stage pipeline per account judged by the shipped stage C leverage policies only, and the
measure of a takeover: from a daemon's SIGKILL to the moment another daemon holds its rollout.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml

from controller.config.yamlfile import load_model_text
from controller.release_files import read_release
from controller.rollout.decide import TERMINAL, Status
from controller.rollout.info import RolloutInfo, create_rollout, get_rollout
from controller.rollout.pipeline import Pipeline
from controller.store import leases
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade
from tests.daemon.harness import ACTOR, CLOCK, Processes, SimInfo, log_events, poll, write_secret
from tests.support.checkout import EXAMPLES, POLICIES

MANIFEST = EXAMPLES / "demo" / "manifest.yaml"  # the reference bot, trading every second
HEALTHY = EXAMPLES / "reference-bot" / "strategy.yaml"
DEFECTIVE = EXAMPLES / "reference-bot" / "strategy-defect-leverage.yaml"
ACCOUNT = "canary"
"""The account each environment's rollouts place their release on."""
STAGE_POLICIES = ("c-exchange-leverage-matches-config", "c-leverage-mismatch-zero")
"""The shipped stage C policies the fleet's stage is judged by: the two that see a wrong leverage
(the exchange's view, the bot's own count), so that a healthy release passes in seconds."""
PIPELINE = """\
name: chaos-{environment}
stages:
  - {{name: C, environment: {environment}, account: {account}, duration: {duration}, policies: chaos.yaml,
     capital_cap: 0.02, positions: flatten}}
"""
HOST = socket.gethostname()
WEIGHT_LIMIT = 1_000_000
"""Request weight a minute each simulator allows one IP: every daemon and bot of the fleet is
127.0.0.1, where the hosts they stand for would each have an address (and a limit) of their own."""


@dataclass
class DaemonProcess:
    """One `canaryctl run`, as one host: its own state folder and log."""

    name: str
    process: object
    state_dir: Path
    log: Path

    @property
    def owner(self) -> str:
        """The name it holds leases under (the daemon's default: HOST:PID)."""
        return f"{HOST}:{self.process.pid}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class Fleet:
    """The simulators, daemons and database of one chaos run; `Processes.close` takes them down."""

    def __init__(self, root: Path, processes: Processes, db_url: str, *, environments: int, lease_seconds: float,
                 seed: int = 31) -> None:
        self.root = root
        self.processes = processes
        self.db_url = db_url
        self.environment_names = [f"ex{n}" for n in range(1, environments + 1)]
        self.lease_seconds = lease_seconds
        self.seed = seed
        self.sims: dict[str, SimInfo] = {}
        self.daemons: list[DaemonProcess] = []
        self.config = root / "controller.yaml"
        self.db = Database(resolve_url(db_url))
        self.placement_hold = root / "placement.hold"
        """The lock every daemon's ``placement.started.after`` failpoint waits on while `holding_placements`."""
        self.failpoints: str | None = None

    async def start(self, daemons: int, *, hold_placements: bool = False) -> None:
        """The schema, the simulators, the configuration, then ``daemons`` daemons, each ready. With
        ``hold_placements``, each daemon stops dead (its whole process) once it started a bot, before
        it records the placement as running, for as long as the test is `holding_placements`."""
        if hold_placements:
            self.placement_hold.touch()
            self.failpoints = f"placement.started.after=hold:{self.placement_hold}"
        await upgrade(self.db)
        for n, name in enumerate(self.environment_names):
            self.sims[name] = self.processes.start_sim(seed=self.seed + n, weight_limit=WEIGHT_LIMIT)
        self._write_config()
        for _ in range(daemons):
            self.start_daemon()
        for daemon in self.daemons:
            await self.ready(daemon)

    async def close(self) -> None:
        await self.db.close()

    def _write_config(self) -> None:
        policies = self.root / "policies"
        policies.mkdir(exist_ok=True)
        shipped = yaml.safe_load((POLICIES / "stage-c.yaml").read_text())
        chosen = [p for p in shipped["policies"] if p["name"] in STAGE_POLICIES]
        if len(chosen) != len(STAGE_POLICIES):
            raise AssertionError(f"stage-c.yaml no longer has every one of {STAGE_POLICIES}")
        (policies / "chaos.yaml").write_text(yaml.safe_dump({"stage": "C", "title": "Chaos canary",
                                                            "policies": chosen}))
        secrets = self.root / "secrets"
        secrets.mkdir(exist_ok=True)
        secrets.chmod(0o700)
        environments = {}
        for name, sim in self.sims.items():
            accounts = {}
            for account, keys in sim.info["accounts"].items():
                accounts[account] = {
                    "api_key": write_secret(secrets, f"{name}-{account}.key", keys["api_key"]),
                    "api_secret": write_secret(secrets, f"{name}-{account}.secret", keys["api_secret"]),
                    "role": "master" if keys["master"] else "sub"}
                if not keys["master"]:
                    accounts[account]["capital_cap"] = 0.02
            environments[name] = {"kind": "testnet", "rest_url": sim.base, "ws_url": sim.info["ws_url"],
                                  "sapi_url": sim.info["sapi_url"], "accounts": accounts}
        self.config.write_text(yaml.safe_dump({
            "environments": environments, "admin": {"port": 0}, "policies_dir": str(policies),
            "log": {"format": "json"}, "lease_seconds": self.lease_seconds,
            # One daemon runs rollout after rollout, seconds apart (a real stage lasts hours), and
            # each new observer's first connect reads the gap (about 115 weight, see
            # controller.exchange.weights): at 240 a minute for observing, the third start in a
            # minute waited about 40 s for the next minute, half the chaos test's time; the
            # default 600 still allows only four or five. The simulators allow WEIGHT_LIMIT.
            "request_weight": {"share": 1, "act_reserve": 0.35}}))

    # ------------------------------------------------------------ daemons

    def start_daemon(self) -> DaemonProcess:
        """One more daemon, as a new host: a state folder and a log of its own."""
        name = f"host-{len(self.daemons) + 1}"
        state_dir, log = self.root / name, self.root / f"{name}.log"
        process = self.processes.start_daemon(db_url=self.db_url, config=self.config, state_dir=state_dir, log=log,
                                              failpoints=self.failpoints)
        daemon = DaemonProcess(name, process, state_dir, log)
        self.daemons.append(daemon)
        return daemon

    async def ready(self, daemon: DaemonProcess, timeout: float = 60.0) -> None:
        async def said():
            return any(e.get("event") == "daemon_ready" for e in log_events(daemon.log))

        await poll(said, timeout=timeout, what=f"{daemon.name} to be ready", alive=self.died(daemon))

    def died(self, daemon: DaemonProcess):
        def reason() -> str | None:
            if daemon.alive:
                return None
            return (f"{daemon.name} exited {daemon.process.returncode}; its log ends:\n"
                    + daemon.log.read_text(errors="replace")[-3000:])
        return reason

    def by_owner(self, owner: str) -> DaemonProcess:
        [daemon] = [d for d in self.daemons if d.owner == owner]
        return daemon

    # ------------------------------------------------------------ releases and rollouts

    async def record_release(self, version: str, *, defective: bool) -> None:
        release = read_release(version, MANIFEST, DEFECTIVE if defective else HEALTHY, "test")
        await add_release(self.db, CLOCK, release, actor=ACTOR)

    async def start_rollout(self, environment: str, version: str, *, duration: str) -> RolloutInfo:
        pipeline = load_model_text(Pipeline, PIPELINE.format(environment=environment, account=ACCOUNT,
                                                             duration=duration), "pipeline.yaml")
        return await create_rollout(self.db, CLOCK, version=version, pipeline=pipeline, actor=ACTOR)

    async def until(self, rollout_id: int, states: frozenset[Status], *, timeout: float) -> RolloutInfo:
        async def reached():
            info = await get_rollout(self.db, rollout_id)
            return info if info.status in states else None
        return await poll(reached, timeout=timeout, what=f"rollout {rollout_id} to be {' or '.join(sorted(states))}")

    async def ended(self, rollout_id: int, *, timeout: float) -> RolloutInfo:
        return await self.until(rollout_id, TERMINAL | {Status.FAILED}, timeout=timeout)

    async def owner_of(self, rollout_id: int, *, timeout: float = 30.0) -> leases.Lease:
        """The rollout's lease once a daemon holds it."""
        async def held():
            lease = (await leases.leases(self.db)).get(rollout_id)
            return lease if lease is not None and lease.owner else None
        return await poll(held, timeout=timeout, what=f"a daemon to own rollout {rollout_id}")

    # ------------------------------------------------------------ chaos

    @contextlib.contextmanager
    def holding_placements(self):
        """While the block runs, a daemon that started a bot stops dead at ``placement.started.after``
        (see `start`); it goes on once the block ends (and, if stopped, gets SIGCONT)."""
        with self.placement_hold.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def kill(self, daemon: DaemonProcess) -> float:
        """SIGKILL, as a host that lost power; returns the wall time (epoch seconds) of the kill."""
        killed_at = time.time()
        os.kill(daemon.process.pid, signal.SIGKILL)
        daemon.process.wait(10)
        return killed_at

    async def taken_over(self, rollout_id: int, previous_owner: str, since: float, *,
                         timeout: float) -> tuple[leases.Lease, float]:
        """The rollout's lease once a daemon other than ``previous_owner`` holds it, and the takeover's
        time in ms: from ``since`` (wall epoch seconds) to the lease's acquisition, as the database
        server's clock (the same host's) wrote it."""
        async def moved():
            lease = (await leases.leases(self.db)).get(rollout_id)
            return lease if lease is not None and lease.owner not in ("", previous_owner) else None
        lease = await poll(moved, timeout=timeout, every=0.05,
                           what=f"another daemon to take rollout {rollout_id} over from {previous_owner}")
        return lease, (lease.acquired_at.timestamp() - since) * 1000

    # ------------------------------------------------------------ the exchange's record

    async def requests(self, environment: str) -> list[dict]:
        """Every REST request the environment's simulator answered, from the first (its /sim/requests log)."""
        found: list[dict] = []
        since = 0
        async with aiohttp.ClientSession() as session:
            while True:
                async with session.get(f"{self.sims[environment].base}/sim/requests", params={"since": since}) as got:
                    got.raise_for_status()
                    page = await got.json()
                if page["lost"]:
                    raise AssertionError(f"{environment}'s simulator no longer holds {page['lost']} of its requests")
                found.extend(page["requests"])
                if page["next"] == since or not page["requests"]:
                    return found
                since = page["next"]


async def measure_takeovers(root: Path, processes: Processes, db_url: str, *, kills: int,
                            lease_seconds: float = 2.0) -> list[float]:
    """Takeover times (ms) of ``kills`` SIGKILLs: three daemons, one healthy rollout held running (a
    long stage); each time its owner is killed, another takes it over, and a new daemon replaces the
    dead one."""
    fleet = Fleet(root, processes, db_url, environments=1, lease_seconds=lease_seconds)
    try:
        await fleet.start(daemons=3)
        await fleet.record_release("1.1.0", defective=False)
        rollout = await fleet.start_rollout(fleet.environment_names[0], "1.1.0", duration="1h")
        await fleet.until(rollout.id, frozenset({Status.RUNNING}), timeout=60)
        times = []
        for _ in range(kills):
            owner = (await fleet.owner_of(rollout.id)).owner
            killed_at = fleet.kill(fleet.by_owner(owner))
            _, took = await fleet.taken_over(rollout.id, owner, killed_at, timeout=10 * lease_seconds)
            times.append(took)
            await fleet.ready(fleet.start_daemon())
        return times
    finally:
        await fleet.close()
