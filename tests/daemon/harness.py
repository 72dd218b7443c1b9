"""Shared helpers for the daemon's process-level tests: real `canaryctl` processes, real signals.

`Processes` starts the simulator (`canaryctl sim serve --json`) and the daemon (`canaryctl run`)
as child processes and, whatever happens to the test, takes them down again together with the
bots the daemon placed (each in its own session: found through the state dir's placement.json).
Waiting is done by polling the database or a log file every 0.1 s under a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from controller.clock import RealClock
from controller.config.daemon import Endpoints
from controller.exchange.client import ExchangeClient
from controller.exchange.weights import WeightBudget
from controller.procfs import read_stat
from controller.release_files import read_release
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release, get_release, get_snapshot
from controller.store.schema import upgrade
from tests.support.checkout import EXAMPLES, POLICIES, REPO

PYTHON = sys.executable
ACTOR = "test-operator"
CLOCK = RealClock()

T = TypeVar("T")

RELEASES = (("1.0.0", "strategy.yaml"), ("1.1.0", "strategy-next.yaml"),
            ("1.2.0", "strategy-defect-leverage.yaml"))


async def prepare_database(db_file: Path, *, releases: bool = True) -> str:
    """A fresh SQLite database at the current schema, with the demo's releases recorded."""
    url = f"sqlite:///{db_file}"
    db = Database(resolve_url(url))
    try:
        await upgrade(db)
        if releases:
            for version, config in RELEASES:
                new = read_release(version, EXAMPLES / "demo" / "manifest.yaml",
                                   EXAMPLES / "reference-bot" / config, "test")
                await add_release(db, CLOCK, new, actor=ACTOR)
    finally:
        await db.close()
    return url


async def poll(probe: Callable[[], Awaitable[T | None]], *, timeout: float, what: str,
               alive: Callable[[], str | None] | None = None, every: float = 0.1) -> T:
    """``await probe()`` every ``every`` s until it returns something truthy; fail after ``timeout``.

    ``alive`` returns a reason to give up at once (a process that died), else None.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if alive is not None and (reason := alive()):
            raise AssertionError(f"while waiting for {what}: {reason}")
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s in vain for {what}")
        await asyncio.sleep(every)


@dataclass
class SimInfo:
    process: subprocess.Popen
    info: dict[str, Any]

    @property
    def base(self) -> str:
        """http://127.0.0.1:PORT (rest_url without /fapi)."""
        return self.info["rest_url"].rstrip("/").removesuffix("/fapi")

    def client(self, account: str) -> ExchangeClient:
        """The controller's exchange client for one of the simulator's accounts (time not yet synced;
        ``async with`` closes it)."""
        keys = self.info["accounts"][account]
        return ExchangeClient(account=account, api_key=keys["api_key"], api_secret=keys["api_secret"],
                              endpoints=Endpoints(self.info["rest_url"], self.info["ws_url"], self.info["sapi_url"]),
                              clock=CLOCK, budget=WeightBudget(CLOCK))


async def config_leverage(db: Database, version: str) -> dict[str, int]:
    """The leverage per symbol that the config snapshot of release ``version`` names."""
    release = await get_release(db, version)
    return {s: c["leverage"] for s, c in (await get_snapshot(db, release.config_sha256)).config["symbols"].items()}


async def assert_account_restored(sim: SimInfo, db: Database, version: str, flatten_prefix: str) -> None:
    """The exchange's own record after a rollback to release ``version`` on the canary account: each
    symbol at the leverage ``version``'s config snapshot names, no order id listed twice, and at most
    one closing order (client ids starting ``flatten_prefix``) per symbol: none sent twice."""
    expected = await config_leverage(db, version)
    async with sim.client("canary") as client:
        await client.sync_time()
        applied = {s.symbol: s.leverage for s in await client.symbol_settings()}
        assert {s: applied.get(s) for s in expected} == expected
        for symbol in expected:
            orders = await client._client.futures_get_all_orders(symbol=symbol)
            ids = [o["orderId"] for o in orders]
            assert len(ids) == len(set(ids)), ids
            flatten = [o for o in orders if o["clientOrderId"].startswith(flatten_prefix)]
            assert len(flatten) <= 1, flatten


class Processes:
    """Child processes of one test; `close` ends all of them (and the bots) even after a failure."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.children: list[subprocess.Popen] = []
        self.state_dirs: list[Path] = []
        self._logs: list[Any] = []

    # ------------------------------------------------------------ starting

    def start_sim(self, *, seed: int = 7, speed: float | None = None, weight_limit: int | None = None,
                  timeout: float = 20.0) -> SimInfo:
        args = [PYTHON, "-m", "controller", "sim", "serve", "--json", "--seed", str(seed), "--log-level", "warning"]
        if speed:
            args += ["--speed", f"{speed:g}"]
        if weight_limit:
            args += ["--weight-limit", str(weight_limit)]
        err = open(self.root / "sim.log", "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(err)
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, cwd=REPO, start_new_session=True)
        self.children.append(process)
        ready, _, _ = select.select([process.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"the simulator printed nothing in {timeout:g} s")
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"the simulator exited ({process.poll()}): {(self.root / 'sim.log').read_text()}")
        return SimInfo(process, json.loads(line))

    def start_daemon(self, *, db_url: str, config: Path, state_dir: Path, log: Path, speed: float | None = None,
                     failpoints: str | None = None, extra_env: dict[str, str] | None = None) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k not in ("CANARY_FAILPOINTS", "NOTIFY_SOCKET",
                                                                "WATCHDOG_USEC", "WATCHDOG_PID")}
        env["PYTHONUNBUFFERED"] = "1"
        if failpoints:
            env["CANARY_FAILPOINTS"] = failpoints
        env.update(extra_env or {})
        args = [PYTHON, "-m", "controller", "--db", db_url, "--config", str(config), "run", "--state-dir",
                str(state_dir)]
        if speed:
            args += ["--speed", f"{speed:g}"]
        out = open(log, "ab")  # noqa: SIM115 - closed in close()
        self._logs.append(out)
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env,
                                   start_new_session=True)
        self.children.append(process)
        if state_dir not in self.state_dirs:
            self.state_dirs.append(state_dir)
        return process

    # ------------------------------------------------------------ stopping

    def bot_pids(self) -> list[int]:
        """The bots the placement records name, and any other process running in an instance's
        folder (a bot whose daemon died before recording it)."""
        pids = []
        for state_dir in self.state_dirs:
            for record in state_dir.glob("instances/*/placement.json"):
                with contextlib.suppress(ValueError, OSError, KeyError):
                    pids.append(int(json.loads(record.read_text())["pid"]))
            for folder in state_dir.glob("instances/*"):
                pids.extend(bots_in(folder))
        return sorted(set(pids))

    def close(self) -> None:
        daemons = [p for p in self.children if p.args[3:4] != ["sim"]]
        others = [p for p in self.children if p not in daemons]
        for process in daemons:  # first the daemons, so that none starts a bot again
            _end(process)
        for pid in self.bot_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # the bot's own session: it and whatever it started
        for process in others:
            _end(process)
        for handle in self._logs:
            handle.close()


def daemon_died(process: subprocess.Popen, log: Path) -> Callable[[], str | None]:
    """For `poll`'s ``alive``: why the daemon process is gone (its exit and its log's end), or None."""
    def reason() -> str | None:
        code = process.poll()
        if code is None:
            return None
        return f"the daemon exited {code}; its log ends:\n" + log.read_text(errors="replace")[-3000:]
    return reason


async def roll_back_until_killed(db: Database, rollout_id: int, daemon: subprocess.Popen, log: Path, *,
                                 step: str, reason: str, timeout: float) -> None:
    """Ask for the rollout's rollback once it runs (unless a policy has asked already) and wait for the
    daemon to die at the ``rollback.STEP.after`` failpoint it was started with (SIGKILL)."""
    from controller.rollout.decide import Status
    from controller.rollout.info import get_rollout
    from controller.store.commands import submit_command

    asked = False

    async def killed():
        nonlocal asked
        if daemon.poll() is not None:
            return True
        if not asked and (await get_rollout(db, rollout_id)).status is Status.RUNNING:
            await submit_command(db, CLOCK, rollout_id=rollout_id, kind="rollback", actor=ACTOR, reason=reason)
            asked = True
        return False

    await poll(killed, timeout=timeout, what=f"the daemon to die at rollback.{step}.after")
    assert daemon.returncode == -9, log.read_text(errors="replace")[-3000:]


async def place_baseline(db: Database, alive: Callable[[], str | None], *, release: str = "1.0.0",
                         account: str = "master", timeout: float = 30):
    """An operator's ``place`` of ``release`` on sim/``account``, answered (the command, acknowledged)."""
    from controller.store.commands import get_command, submit_command

    place = await submit_command(db, CLOCK, rollout_id=None, kind="place", actor=ACTOR,
                                 args={"release": release, "environment": "sim", "account": account})

    async def acked():
        command = await get_command(db, place.id)
        return command if command.acked_at is not None else None

    return await poll(acked, timeout=timeout, what="the baseline placement", alive=alive)


@dataclass
class SpawnCrash:
    """A daemon killed (``CANARY_FAILPOINTS=deploy.process.spawned``) right after it spawned a bot
    for an operator's ``place`` of 1.0.0 on sim/``account``, before ``placement.json`` names it:
    the bot (``stray``) lives on in its own session, known to no record."""

    sim: SimInfo
    db: Database
    db_url: str
    config: Path
    state_dir: Path
    folder: Path
    """The instance's folder, the stray bot's working directory."""
    place: Any
    """The command being carried out, not yet acknowledged."""
    first: subprocess.Popen
    stray: int

    def restart(self, processes: Processes, log: Path) -> subprocess.Popen:
        """A second daemon on the same store, configuration and state folder."""
        return processes.start_daemon(db_url=self.db_url, config=self.config, state_dir=self.state_dir, log=log)


async def crash_after_spawning(tmp_path: Path, processes: Processes, *, seed: int,
                               account: str = "master") -> SpawnCrash:
    """Start a daemon with the failpoint, give it the ``place``, wait for its death and find the stray
    bot. The caller closes ``db``."""
    from controller.store.commands import submit_command

    sim = processes.start_sim(seed=seed)
    db_url = await prepare_database(tmp_path / "canary.db")
    config = exchange_config(tmp_path, sim)
    state_dir = tmp_path / "state"
    first = processes.start_daemon(db_url=db_url, config=config, state_dir=state_dir, log=tmp_path / "daemon-1.log",
                                   failpoints="deploy.process.spawned")
    db = Database(resolve_url(db_url))
    try:
        place = await submit_command(db, CLOCK, rollout_id=None, kind="place", actor=ACTOR,
                                     args={"release": "1.0.0", "environment": "sim", "account": account})

        async def died():
            return first.poll() is not None

        await poll(died, timeout=30, what="the daemon to die at deploy.process.spawned")
        folder = state_dir / "instances" / f"sim-{account}"
        [stray] = bots_in(folder)
    except BaseException:
        await db.close()
        raise
    return SpawnCrash(sim, db, db_url, config, state_dir, folder, place, first, stray)


def bots_in(folder: Path) -> list[int]:
    """The live processes whose working directory is ``folder``: the bots the process deployer
    started for that instance, as Linux tells it, whatever the deployer recorded."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = read_stat(int(entry.name))  # a zombie (killed, not yet reaped) trades no more
            if Path(os.readlink(entry / "cwd")) == folder and stat is not None and stat.alive:
                found.append(int(entry.name))
    return sorted(found)


def _end(process: subprocess.Popen, grace: float = 5.0) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(grace)
    if process.stdout is not None:
        process.stdout.close()


def write_secret(folder: Path, name: str, value: str) -> str:
    path = folder / name
    path.write_text(value)
    path.chmod(0o600)
    return f"file:{path}"


def exchange_config(folder: Path, sim: SimInfo, *, policies_dir: Path = POLICIES) -> Path:
    """A daemon config whose environment ``sim`` is the external simulator, reached as a testnet."""
    secrets = folder / "secrets"
    secrets.mkdir(exist_ok=True)
    secrets.chmod(0o700)
    accounts = {}
    for name, keys in sim.info["accounts"].items():
        accounts[name] = {"api_key": write_secret(secrets, f"{name}.key", keys["api_key"]),
                          "api_secret": write_secret(secrets, f"{name}.secret", keys["api_secret"]),
                          "role": "master" if keys["master"] else "sub"}
        if "read_only" in keys:  # a shadow stage's key
            accounts[name]["shadow_key"] = write_secret(secrets, f"{name}.shadow.key", keys["read_only"]["api_key"])
            accounts[name]["shadow_secret"] = write_secret(secrets, f"{name}.shadow.secret",
                                                           keys["read_only"]["api_secret"])
        if not keys["master"]:
            accounts[name]["capital_cap"] = 0.02
    config = {"environments": {"sim": {"kind": "testnet", "rest_url": sim.base, "ws_url": sim.info["ws_url"],
                                       "sapi_url": sim.info["sapi_url"], "accounts": accounts}},
              "admin": {"port": 0}, "policies_dir": str(policies_dir), "log": {"format": "json"}}
    path = folder / "controller.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def sim_config(folder: Path, *, policies_dir: Path = POLICIES) -> Path:
    """A daemon config with the embedded simulator."""
    path = folder / "controller.yaml"
    path.write_text(yaml.safe_dump({"environments": {"sim": {"kind": "sim"}}, "admin": {"port": 0},
                                    "policies_dir": str(policies_dir), "log": {"format": "json"}}))
    return path


def log_events(log: Path) -> list[dict]:
    """The daemon's JSON log lines (other lines skipped)."""
    events = []
    if not log.exists():
        return events
    for line in log.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict):
                events.append(event)
    return events


def now() -> datetime:
    return datetime.now(tz=UTC)
