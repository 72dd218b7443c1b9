"""`canaryctl run`: the daemon. One asyncio task tree; the database is its memory.

- Every ``command_poll`` wall seconds it looks for rollouts that are not finished and starts a
  `RolloutRunner` for each (one at a time: the store refuses a second active rollout), and
  handles the commands that belong to no rollout (placing a baseline release).
- SIGTERM / SIGINT: runners finish the action in hand (a rollback step, a placement), take no
  new one, and the daemon exits 0 within ``stop_timeout`` seconds. A rollback interrupted
  between two steps resumes at the next start.
- SIGHUP: the policy files are loaded again, validated first; an invalid file keeps the old set.
- With ``NOTIFY_SOCKET`` set: READY, STATUS, WATCHDOG (only while the loop turns) and STOPPING.
- The admin server (127.0.0.1 by default): /metrics, /healthz, /readyz, /status.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from controller.clock import Clock
from controller.config.daemon import DaemonConfig
from controller.daemon.admin import AdminServer
from controller.daemon.notify import Notifier, watchdog_loop
from controller.deploy.base import Deployer
from controller.errors import CanaryError, ConfigError
from controller.logs import get_logger
from controller.metrics import ControllerMetrics
from controller.rollout import placing, preflight
from controller.rollout.decide import TERMINAL
from controller.rollout.engine import PolicySet, RolloutReport, RolloutRunner, RunnerCadence
from controller.rollout.info import get_rollout, list_rollouts
from controller.rollout.site import AccountAccess, EnvironmentAccess, Site
from controller.store.commands import ack_command, pending_commands
from controller.store.database import Database

log = get_logger(__name__)


class Simulators(Protocol):
    """Opens the exchange of each `kind: sim` environment: the simulator, which production code does
    not carry; `canaryctl run` and the demo inject it (`controller.sim.embed.EmbeddedSimulators`)."""

    async def open(self, environment: str, deployer: Deployer) -> EnvironmentAccess: ...

    async def close(self) -> None: ...


@dataclass
class DaemonOptions:
    state_dir: Path
    cadence: RunnerCadence = field(default_factory=RunnerCadence)
    admin: bool = True
    stop_timeout: float = 10.0
    stop_releases_on_exit: bool = False
    """Stop every placed release when the daemon exits (the demo and tests); a service leaves
    them running, so that a restarted daemon adopts them."""


class Daemon:
    def __init__(self, config: DaemonConfig, db: Database, clock: Clock, options: DaemonOptions, *,
                 on_event: Callable[[int, str], None] | None = None, simulators: Simulators | None = None) -> None:
        simulated = sorted(name for name, env in config.environments.items() if env.kind == "sim")
        if simulated and simulators is None:
            raise ConfigError("nothing here runs the simulator (`canaryctl run` and `canaryctl demo` embed it): "
                              "expected testnet or live", field=f"environments.{simulated[0]}.kind")
        self.config = config
        self.db = db
        self.clock = clock
        self.options = options
        self.metrics = ControllerMetrics()
        self.policies = PolicySet(config.policies_dir)
        self.notifier = Notifier.from_env()
        self.on_event = on_event
        self.site: Site | None = None
        self.simulators = simulators
        self._deployers: dict[str, Any] = {}
        self.runners: dict[int, tuple[RolloutRunner, asyncio.Task]] = {}
        self.reports: dict[int, RolloutReport] = {}
        self.admin_port: int | None = None
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._last_turn = time.monotonic()
        self._status: dict[str, Any] = {"rollouts": []}

    # ------------------------------------------------------------ life cycle

    def request_stop(self) -> None:
        self._stop.set()

    def reload(self) -> bool:
        self.notifier.reloading()
        try:
            self.policies.reload()
        except CanaryError as exc:
            log.error("policy_reload_refused", error=str(exc), in_force="the previous policies")
            self.notifier.ready("policy reload refused; previous policies in force")
            return False
        log.info("policies_reloaded", folder=str(self.policies.folder))
        self.notifier.ready("policies reloaded")
        return True

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        handlers = {signal.SIGTERM: self.request_stop, signal.SIGINT: self.request_stop, signal.SIGHUP: self.reload}
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler)
        admin = None
        watchdog = None
        try:
            await preflight.check_daemon(self.db, self.policies.folder)  # refused: never READY, exit 2
            self.site = await self._open_site()
            if self.options.admin:
                admin = AdminServer(metrics=self.metrics, status=lambda: self._status, ready=self._readiness,
                                    healthy=self._liveness)
                self.admin_port = await admin.start(self.config.admin.host, self.config.admin.port)
            self.metrics.started(time.time())
            watchdog = asyncio.create_task(watchdog_loop(self.notifier, lambda: self._liveness()[0]),
                                           name="watchdog")
            self.notifier.ready(f"watching; admin on {self.config.admin.host}:{self.admin_port}")
            self.ready.set()
            log.info("daemon_ready", admin_port=self.admin_port)
            await self._loop()
        finally:
            self.notifier.stopping("stopping: finishing the current step")
            await self._stop_runners()
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            if admin is not None:
                await admin.stop()
            if self.site is not None:
                if self.options.stop_releases_on_exit:
                    await self._stop_releases()
                await self.site.close()
            if self.simulators is not None:
                await self.simulators.close()
            for signum in handlers:
                loop.remove_signal_handler(signum)
        return 0

    async def _loop(self) -> None:
        while not self._stop.is_set():
            self._last_turn = time.monotonic()
            await self._handle_global_commands()
            await self._supervise()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.cadence.command_poll):
                    await self._stop.wait()

    async def _supervise(self) -> None:
        for rollout_id, (_, task) in list(self.runners.items()):
            if task.done():
                del self.runners[rollout_id]
                if not task.cancelled() and task.exception() is not None:
                    log.error("rollout_runner_crashed", rollout=rollout_id, error=repr(task.exception()))
        active = await list_rollouts(self.db, active_only=True)
        for info in active:
            if info.id not in self.runners:
                report = self.reports.setdefault(info.id, RolloutReport(info.id, info.release))
                runner = RolloutRunner(rollout_id=info.id, db=self.db, site=self.site, policies=self.policies,
                                       metrics=self.metrics, cadence=self.options.cadence, report=report,
                                       on_event=self._event_for(info.id))
                self.runners[info.id] = (runner, asyncio.create_task(runner.run(), name=f"rollout-{info.id}"))
        self._status = {"rollouts": [i.to_json() for i in active],
                        "runners": sorted(self.runners), "admin_port": self.admin_port}
        self.notifier.status(", ".join(f"rollout {i.id} {i.release}: {i.status.value} {i.stage.name}"
                                       for i in active) or "idle: no rollout under way")

    def _event_for(self, rollout_id: int) -> Callable[[str], None]:
        def emit(text: str) -> None:
            if self.on_event is not None:
                self.on_event(rollout_id, text)
        return emit

    async def _stop_runners(self) -> None:
        for runner, _ in self.runners.values():
            runner.stop()
        tasks = [task for _, task in self.runners.values()]
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=self.options.stop_timeout)
        for task in pending:
            log.warning("rollout_runner_cut_short", task=task.get_name())
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    # ------------------------------------------------------------ commands without a rollout

    async def _handle_global_commands(self) -> None:
        for command in await pending_commands(self.db):
            if command.rollout_id is not None:
                if command.rollout_id not in self.runners:
                    info = await get_rollout(self.db, command.rollout_id)
                    if info.status in TERMINAL:  # no runner will ever read it: answer for the rollout
                        await ack_command(self.db, self.clock, command.id, accepted=False,
                                                  message=f"the rollout is {info.status.value}: nothing to "
                                                          f"{command.kind}", audit_kind=f"command.{command.kind}")
                continue
            if command.kind != "place":
                await ack_command(self.db, self.clock, command.id, accepted=False,
                                          message=f"unknown command {command.kind!r}", audit_kind="command.refused")
                continue
            args = command.args
            try:
                deployment, _ = await placing.place(self.db, self.site, environment=args["environment"],
                                                    account=args["account"], release=args["release"],
                                                    rollout_id=None, actor=command.actor)
            except Exception as exc:  # noqa: BLE001 - the operator sees why in the ack
                await ack_command(self.db, self.clock, command.id, accepted=False,
                                          message=f"{type(exc).__name__}: {exc}", audit_kind="command.place")
                continue
            await ack_command(self.db, self.clock, command.id, accepted=True, audit_kind="command.place",
                                      message=f"{args['release']} runs on {args['environment']}/{args['account']} "
                                              f"(deployment {deployment.id})")

    async def _stop_releases(self) -> None:
        for name, env in self.site.environments.items():
            for account in env.accounts:
                with contextlib.suppress(Exception):
                    await env.deployer.stop(self.site.instance(name, account))

    # ------------------------------------------------------------ probes

    def _liveness(self) -> tuple[bool, str]:
        lag = time.monotonic() - self._last_turn
        limit = max(10.0, 20 * self.options.cadence.command_poll)
        return (lag < limit, f"main loop last turned {lag:.1f} s ago")

    def _readiness(self) -> tuple[bool, str]:
        if not self.ready.is_set():
            return False, "starting"
        return True, f"{len(self.runners)} rollout(s) under way"

    # ------------------------------------------------------------ the world

    async def _open_site(self) -> Site:
        environments = {}
        for name, env in self.config.environments.items():
            deployer = self._deployer(env.deployer)
            if env.kind == "sim":
                environments[name] = await self.simulators.open(name, deployer)
                continue
            endpoints = env.endpoints().for_binance()
            accounts = {n: AccountAccess(n, a.api_key.resolve(), a.api_secret.resolve(), a.role == "master")
                        for n, a in env.accounts.items()}
            environments[name] = EnvironmentAccess(name, endpoints, accounts, deployer)
        return Site(self.clock, environments)

    def _deployer(self, config):
        """One deployer per kind and settings: environments that share one share its locks."""
        key = config.model_dump_json()
        if key not in self._deployers:
            if config.kind == "systemd":
                from controller.deploy.systemd import SystemdDeployer

                where = {"env_dir": config.env_dir} if config.env_dir else {}
                self._deployers[key] = SystemdDeployer(self.clock, unit_template=config.unit_template,
                                                       user=config.user, **where)
            else:
                from controller.deploy.process import ProcessDeployer

                self._deployers[key] = ProcessDeployer(self.options.state_dir, self.clock)
        return self._deployers[key]

