"""`canaryctl run`: the daemon. One asyncio task tree; the database is its memory.

- Every ``command_poll`` wall seconds it looks for rollouts that are not finished and starts a
  `RolloutRunner` for each (one at a time: the store refuses a second active rollout), exports
  their state metrics, and handles the commands that belong to no rollout (placing a baseline
  release, in a task of its own, refused on an account an active rollout holds).
- A runner that crashes is restarted after an exponential backoff (Clock seconds) and counted.
  A turn that fails on the database is logged, counted and retried after a backoff: the loop
  never dies of it, and runners in flight go on.
- Each active rollout has one owner (`controller.store.leases`): the daemon claims the leases of
  rollouts nobody holds (or whose lease expired: a takeover, at a higher epoch), renews them every
  third of ``lease_seconds``, and runs only the rollouts it owns, each runner writing through its
  lease's fence. A runner whose lease was taken over, or whose write was refused, stops at once; a
  daemon that owns nothing is a healthy standby (/readyz 200, ``standby``). On a clean stop it lets
  its leases expire, so that another daemon takes them at once.
- First, on SQLite, it takes the database's daemon lock (`controller.store.daemon_lock`): a second
  daemon on the same file is refused, exit 2, naming the file and the first daemon's pid.
- Before READY, every account's exchange key is read for its rights, and one that can do more
  than read and trade futures is refused, exit 2 (`controller.rollout.keys`). Then every bot that
  no record owns (a daemon died between spawning and recording it) is killed, and audited
  (`controller.daemon.orphans`).
- SIGTERM / SIGINT: runners finish the action in hand (a rollback step, a placement), take no
  new one, and the daemon exits 0 within ``stop_timeout`` seconds. A rollback interrupted
  between two steps resumes at the next start.
- SIGHUP: the policy files are loaded again in a thread, off the event loop, validated first; any
  error keeps the old set; systemd hears RELOADING=1, then READY=1 again.
- With ``NOTIFY_SOCKET`` set: READY, STATUS, WATCHDOG (only while the loop turns) and STOPPING.
- The admin server (127.0.0.1 by default): /metrics, /healthz (false when the loop has not turned
  for ``liveness_limit`` wall seconds), /readyz (false while the store is unreachable, an active
  rollout's policies do not load, its runner is not running, or, in a judged state, its
  verification is not running), /status.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from controller import failpoints
from controller.clock import Backoff, Clock
from controller.config.daemon import DaemonConfig
from controller.daemon.admin import AdminServer
from controller.daemon.notify import Notifier, watchdog_loop
from controller.daemon.orphans import sweep_orphans
from controller.daemon.webhooks import TRANSITION_EVENTS, Webhooks
from controller.deploy.base import Deployer, Supervision
from controller.errors import CanaryError, ConfigError, StoreError
from controller.logs import get_logger
from controller.metrics import ControllerMetrics
from controller.rollout import keys, placing, preflight
from controller.rollout.decide import JUDGED, TERMINAL, expiry, time_left
from controller.rollout.engine import PolicySet, RolloutReport, RolloutRunner, RunnerCadence
from controller.rollout.info import RolloutInfo, get_rollout, list_rollouts
from controller.rollout.site import AccountAccess, EnvironmentAccess, Site
from controller.store.commands import ack_command, claim_command, pending_commands
from controller.store import leases, placement_leases
from controller.store.daemon_lock import single_daemon
from controller.store.database import Database
from controller.store.leases import Fence, FencingRefused, Lease

log = get_logger(__name__)

RUNNER_BACKOFF_INITIAL = 1.0
RUNNER_BACKOFF_MAX = 300.0
"""Clock seconds before a crashed runner starts again: 1 s, doubling up to 5 minutes. A runner
that ran at least the maximum before it crashed starts again from 1 s."""
STORE_BACKOFF_MAX = 5.0
"""Wall seconds at most between two turns that fail on the database; under the liveness limit,
so that a loop waiting for its database is still alive."""


class Simulators(Protocol):
    """Opens the exchange of each `kind: sim` environment: the simulator, which production code does
    not carry; `canaryctl run` and `canaryctl demo` inject it (`controller.sim.embed.EmbeddedSimulators`)."""

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
    liveness_limit: float = 10.0
    """Wall seconds without a turn of the main loop after which /healthz (and the watchdog) fail."""
    placement_timeout: float = 300.0
    """Wall seconds a baseline placement may take before it is cancelled and refused."""
    owner: str | None = None
    """The name this daemon holds leases under; default ``HOST:PID``, unique among live daemons."""


@dataclass
class _Restarts:
    """A rollout's runner crashes in a row and when (Clock time) its runner may start again."""

    backoff: Backoff
    started: float = 0.0
    not_before: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class _Placement:
    """A baseline placement under way in its own task."""

    environment: str
    account: str
    task: asyncio.Task


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
        self.metrics = ControllerMetrics(clock, finished_grace=config.finished_series_grace)
        self.policies = PolicySet(config.policies_dir)
        self.notifier = Notifier.from_env()
        self.on_event = on_event
        self.site: Site | None = None
        self.simulators = simulators
        self.webhooks: Webhooks | None = None
        self._deployers: dict[str, Any] = {}
        self.runners: dict[int, tuple[RolloutRunner, asyncio.Task]] = {}
        self._restarts: dict[int, _Restarts] = {}
        self._placements: dict[int, _Placement] = {}  # by command id
        self._active: list[RolloutInfo] = []
        self._waiting: dict[int, str] = {}  # rollout id -> why its runner does not start yet
        self._store_error: str | None = None
        self._policy_errors: list[str] = []
        self._reloading: asyncio.Task | None = None
        self._reload_again = False
        self.reports: dict[int, RolloutReport] = {}
        self.admin_port: int | None = None
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._last_turn = time.monotonic()
        self._status: dict[str, Any] = {"rollouts": []}
        self.owner = options.owner or f"{socket.gethostname()}:{os.getpid()}"
        self.leases: dict[int, Lease] = {}
        """The rollouts this daemon owns, with the lease it holds on each."""
        self._renewed = time.monotonic()  # when every lease held was last renewed (or claimed)
        self._lease_error: str | None = None

    # ------------------------------------------------------------ life cycle

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        """SIGHUP: reload the policies in a task of its own; a SIGHUP during a reload runs one more
        after it, so that the last edit before the signal is always read."""
        if self._reloading is not None and not self._reloading.done():
            self._reload_again = True
            return
        self._reloading = asyncio.create_task(self._reload_until_current(), name="policy-reload")

    async def _reload_until_current(self) -> None:
        self._reload_again = True
        while self._reload_again:
            self._reload_again = False
            await self.reload()

    async def reload(self) -> bool:
        """Read and validate every policy file in a thread (a large or hostile file never stalls the
        loop: probes, watchdog and runners go on), then put the new set in force; any error keeps the
        old set. systemd hears RELOADING=1, then READY=1 either way."""
        self.notifier.reloading()
        in_use = self.policies.in_use()

        def read():
            failpoints.hit("policy.reload.read")
            return self.policies.read(in_use)

        try:
            fresh = await asyncio.to_thread(read)
        except Exception as exc:  # noqa: BLE001 - whatever a file does to the parser, the old set stays
            error = str(exc) if isinstance(exc, CanaryError) else f"{type(exc).__name__}: {exc}"
            log.error("policy_reload_refused", error=error, in_force="the previous policies")
            self.notifier.ready("policy reload refused; previous policies in force")
            return False
        self.policies.use(fresh)
        log.info("policies_reloaded", folder=str(self.policies.folder))
        self.notifier.ready("policies reloaded")
        return True

    async def run(self) -> int:
        # First of all: a second daemon on one SQLite file is refused before it reads or starts anything.
        with single_daemon(self.db):
            return await self._run()

    async def _run(self) -> int:
        loop = asyncio.get_running_loop()
        handlers = {signal.SIGTERM: self.request_stop, signal.SIGINT: self.request_stop, signal.SIGHUP: self.request_reload}
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler)
        admin = None
        watchdog = None
        holding = None
        try:
            await preflight.check_daemon(self.db, self.policies.folder)  # refused: never READY, exit 2
            self.site = await self._open_site()
            await keys.check_at_start(self.site)  # a key too wide: never READY, exit 2
            await sweep_orphans(self.db, self.site)
            # Secrets read now: a webhook whose secret cannot be read stops the start, not the first event.
            self.webhooks = Webhooks({name: env.notifications.webhooks for name, env in self.config.environments.items()},
                                     db=self.db)
            await self.webhooks.start()
            if self.options.admin:
                token = self.config.admin.token.resolve() if self.config.admin.token else None
                admin = AdminServer(metrics=self.metrics, status=lambda: self._status, ready=self._readiness,
                                    healthy=self._liveness, token=token)
                self.admin_port = await admin.start(self.config.admin.host, self.config.admin.port)
            self.metrics.started(time.time())
            watchdog = asyncio.create_task(watchdog_loop(self.notifier, lambda: self._liveness()[0]),
                                           name="watchdog")
            self.notifier.ready(f"watching; admin on {self.config.admin.host}:{self.admin_port}")
            await self._hold_leases()  # the rollouts it owns, before the first turn starts their runners
            holding = asyncio.create_task(self._lease_loop(), name="leases")
            self.ready.set()
            log.info("daemon_ready", admin_port=self.admin_port, owner=self.owner, owns=sorted(self.leases))
            await self._loop()
        finally:
            self.notifier.stopping("stopping: finishing the current step")
            if holding is not None:
                holding.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await holding
            await self._stop_runners()
            await leases.refusals_recorded()
            await self._give_up_leases()
            await self._stop_placements()
            if self.webhooks is not None:
                await self.webhooks.stop()
            if self._reloading is not None:
                self._reloading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._reloading
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
        # The database comes back in real time: its backoff is counted in wall seconds, like the
        # loop's own cadence (the Backoff's clock is not slept on).
        store_backoff = Backoff(self.clock, initial=self.options.cadence.command_poll, maximum=STORE_BACKOFF_MAX)
        while not self._stop.is_set():
            self._last_turn = time.monotonic()
            pause = self.options.cadence.command_poll
            try:
                await self._handle_global_commands()
                await self._supervise()
            except StoreError as error:
                pause = store_backoff.next()
                self._store_error = str(error)
                self.metrics.store_error()
                log.error("store_unreachable", error=str(error), failures=store_backoff.failures,
                          retry_in=round(pause, 3))
            except Exception as error:  # noqa: BLE001 - the loop never dies: runners in flight go on
                pause = store_backoff.next()
                log.exception("main_loop_turn_failed", error=repr(error), retry_in=round(pause, 3))
            else:
                if self._store_error is not None:
                    log.info("store_reachable_again", failures=store_backoff.failures)
                self._store_error = None
                store_backoff.reset()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._stop.wait()

    async def _supervise(self) -> None:
        now = self.clock.time()
        for rollout_id, (_, task) in list(self.runners.items()):
            if task.done():
                del self.runners[rollout_id]
                if not task.cancelled() and task.exception() is None and task.result().status in TERMINAL:
                    self.leases.pop(rollout_id, None)  # finished: nothing left to own
                    self.metrics.set_leases_owned(len(self.leases))
                elif not task.cancelled() and isinstance(task.exception(), FencingRefused):
                    self._lost(rollout_id, "a write was refused: its lease was taken over")
                elif not task.cancelled() and task.exception() is not None:
                    self._runner_crashed(rollout_id, task.exception(), now)
        active = await list_rollouts(self.db, active_only=True)
        self._active = active
        self._export(active)
        self._policy_errors = self._unloadable_policies(active)
        for gone in set(self._restarts) - {info.id for info in active}:
            del self._restarts[gone]
        self._waiting = {}
        for info in active:
            if info.id in self.runners or info.id not in self.leases:
                continue  # running, or another daemon's
            restarts = self._restarts.get(info.id)
            if restarts is not None and now < restarts.not_before:
                self._waiting[info.id] = (f"its runner crashed ({restarts.backoff.failures} in a row, last: "
                                          f"{restarts.error}) and restarts in {restarts.not_before - now:.1f} s")
                continue
            if placing_on := self._placing_on(info):
                self._waiting[info.id] = f"a baseline placement runs on {placing_on}"
                continue
            self._start_runner(info, now)
        self._status = {"rollouts": [i.to_json() for i in active],
                        "runners": sorted(self.runners), "admin_port": self.admin_port,
                        "owner": self.owner, "role": "active" if self.leases else "standby",
                        "leases": {str(i): {"epoch": lease.epoch, "since": _iso(lease.acquired_at)}
                                   for i, lease in sorted(self.leases.items())},
                        "baseline_placements": sorted(self._placements),
                        "webhooks": self.webhooks.deliveries() if self.webhooks else []}
        self.notifier.status(", ".join(f"rollout {i.id} {i.release}: {i.status.value} {i.stage.name}"
                                       for i in active) or "idle: no rollout under way")

    def _notify_transition(self, info: RolloutInfo, transition: dict, rollback) -> None:
        """A rollout's transition as webhook events of its stage's environment (queued: never waits)."""
        event = TRANSITION_EVENTS.get(transition.get("to", ""))
        if self.webhooks is None or event is None:
            return
        stage = transition.get("stage")
        environment = info.pipeline.stage(stage).environment
        body = {"rollout": info.id, "release": info.release, "pipeline": info.pipeline.name, "stage": stage,
                "from": transition.get("from"), "to": transition.get("to"), "reason": transition.get("reason"),
                "policy": rollback.policy if rollback is not None else None,
                "evidence": {"status": f"canaryctl status {info.id}", "report": f"canaryctl report render {info.id}"}}
        if event == "rollback_planned" and rollback is not None and rollback.trigger == "policy":
            self.webhooks.emit(environment, "breach", body)
        self.webhooks.emit(environment, event, body)

    def _start_runner(self, info: RolloutInfo, now: float) -> None:
        report = self.reports.setdefault(info.id, RolloutReport(info.id, info.release))
        # Every write the runner makes about the rollout is fenced with the epoch of this daemon's lease.
        fenced = self.db.guarded(Fence(info.id, self.leases[info.id].epoch, self.owner, self.clock))
        runner = RolloutRunner(rollout_id=info.id, db=fenced, site=self.site, policies=self.policies,
                               metrics=self.metrics, cadence=self.options.cadence, report=report,
                               on_event=self._event_for(info.id), rollback=self.config.rollback,
                               on_transition=self._notify_transition)
        self.runners[info.id] = (runner, asyncio.create_task(runner.run(), name=f"rollout-{info.id}"))
        restarts = self._restarts.setdefault(info.id, _Restarts(Backoff(
            self.clock, initial=RUNNER_BACKOFF_INITIAL, maximum=RUNNER_BACKOFF_MAX)))
        restarts.started = now
        self.metrics.runner_started(info.id)

    # ------------------------------------------------------------ leases

    async def _hold_leases(self) -> None:
        """Renew the leases held, stop the runners of those lost, and claim those free. Renewal that
        fails for a whole lease length gives every lease up here too: another daemon may hold them."""
        seconds = self.config.lease_seconds
        try:
            lost = await leases.renew(self.db, self.owner, {i: lease.epoch for i, lease in self.leases.items()},
                                      seconds=seconds)
            for rollout_id in sorted(lost):
                self._lost(rollout_id, "its lease was taken over")
            self._renewed = time.monotonic()
            taken = await leases.claim(self.db, self.clock, self.owner, held=set(self.leases), seconds=seconds,
                                       exclusive=self.db.dialect == "sqlite")  # SQLite: one daemon (its file lock)
        except StoreError as error:
            self._lease_error = str(error)
            log.error("leases_not_renewed", error=str(error), owned=sorted(self.leases))
            if time.monotonic() - self._renewed >= seconds:
                for rollout_id in sorted(self.leases):
                    self._lost(rollout_id, f"its lease could not be renewed for {seconds:g} s")
            return
        self._lease_error = None
        for lease, previous_owner in taken:
            self.leases[lease.rollout_id] = lease
            self._restarts.pop(lease.rollout_id, None)
            if previous_owner:
                self.metrics.lease_taken_over()
        self.metrics.set_leases_owned(len(self.leases))
        self.metrics.leases_renewed(time.time(), float(seconds))

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)  # wall seconds, like the lease
            try:
                await self._hold_leases()
            except Exception as error:  # noqa: BLE001 - never dies: a lease not renewed expires, fencing the runner
                self._lease_error = f"{type(error).__name__}: {error}"
                log.exception("lease_turn_failed", error=repr(error))

    def _lost(self, rollout_id: int, why: str) -> None:
        """The rollout is no longer this daemon's: its runner stops acting at once (cancelled)."""
        lease = self.leases.pop(rollout_id, None)
        self.metrics.set_leases_owned(len(self.leases))
        if rollout_id in self.runners:
            runner, task = self.runners.pop(rollout_id)
            runner.stop()
            task.cancel()
        log.warning("rollout_lost", rollout=rollout_id, owner=self.owner, epoch=lease.epoch if lease else None,
                    why=why)

    async def _give_up_leases(self) -> None:
        try:
            await leases.give_up(self.db, self.owner, {i: lease.epoch for i, lease in self.leases.items()})
        except StoreError as error:  # they expire on their own, a lease length from the last renewal
            log.error("leases_not_given_up", error=str(error))
        self.leases = {}

    def _runner_crashed(self, rollout_id: int, error: BaseException, now: float) -> None:
        """Count the crash and hold the runner back for the next wait of its backoff."""
        restarts = self._restarts[rollout_id]
        if now - restarts.started >= RUNNER_BACKOFF_MAX:  # it ran well for a while: this is a new series
            restarts.backoff.reset()
        delay = restarts.backoff.next()
        restarts.not_before = now + delay
        restarts.error = f"{type(error).__name__}: {error}"
        self.metrics.runner_crashed(rollout_id)
        log.error("rollout_runner_crashed", rollout=rollout_id, error=repr(error),
                  crashes_in_a_row=restarts.backoff.failures, restart_in=round(delay, 3))

    def _export(self, active: list[RolloutInfo]) -> None:
        """Every active rollout's state, stage and time left (of its stage, or of its wait), as the store
        has them: after a restart the series exist before any state changes, and the time left moves on
        every turn."""
        now = self.clock.time()
        for info in active:
            self.metrics.set_rollout_state(info.id, info.release, info.status.value)
            self.metrics.set_rollout_stage(info.id, info.release, info.stage.name)
            left = time_left(info.state, info.pipeline, now)
            if left is not None:
                self.metrics.set_stage_remaining(info.id, left)

    def _unloadable_policies(self, active: list[RolloutInfo]) -> list[str]:
        """Why the policy files an active rollout needs cannot be used (none: every one loads)."""
        errors = []
        for info in active:
            for stage in info.pipeline.stages:
                try:
                    self.policies.stage(stage.policies)
                except Exception as error:  # noqa: BLE001 - any failure to load is a policy not loaded
                    errors.append(f"rollout {info.id}: the policies of stage {stage.name} are not loaded "
                                  f"({type(error).__name__}: {error})")
        return errors

    def _event_for(self, rollout_id: int) -> Callable[[str], None]:
        def emit(text: str) -> None:
            if self.on_event is not None:
                self.on_event(rollout_id, text)
        return emit

    async def _stop_runners(self) -> None:
        for runner, _ in self.runners.values():
            runner.stop()
        await self._drain([task for _, task in self.runners.values()], "rollout_runner_cut_short")

    async def _drain(self, tasks: list[asyncio.Task], cut_short: str) -> None:
        """Wait for ``tasks`` up to the stop timeout, then cancel what is left (logged as ``cut_short``)."""
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.options.stop_timeout)
        for task in pending:
            log.warning(cut_short, task=task.get_name())
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
            if command.id in self._placements:
                continue  # under way in its own task
            if command.kind != "place":
                await ack_command(self.db, self.clock, command.id, accepted=False,
                                          message=f"unknown command {command.kind!r}", audit_kind="command.refused")
                continue
            too_old = expiry(command.kind, command.given_on(self.clock), command.args.get("expires_in"),
                             self.clock.time())
            if too_old is not None:  # a baseline given long ago may no longer be what the account needs
                await ack_command(self.db, self.clock, command.id, accepted=False, message=too_old[0],
                                  audit_kind="command.place")
                continue
            environment, account = command.args["environment"], command.args["account"]
            if any((p.environment, p.account) == (environment, account) for p in self._placements.values()):
                continue  # one placement at a time on an account: this one waits for the one under way
            holder = next((info for info in await list_rollouts(self.db, active_only=True)
                           if (environment, account) in _accounts_of(info)), None)
            if holder is not None:
                await ack_command(self.db, self.clock, command.id, accepted=False, audit_kind="command.place",
                                  message=f"rollout {holder.id} of {holder.release} ({holder.status.value}) holds "
                                          f"{environment}/{account}: wait until it is finished, or roll it back "
                                          f"(`canaryctl rollback {holder.id} --reason TEXT`)")
                continue
            # Several daemons read the same command: one claims it and places, the others leave it.
            if not await claim_command(self.db, command.id, self.owner,
                                       seconds=self.options.placement_timeout + float(self.config.lease_seconds),
                                       exclusive=self.db.dialect == "sqlite"):  # SQLite: one daemon (its file lock)
                continue
            # A bot that starts slowly must not hold back the loop (and with it the watchdog).
            task = asyncio.create_task(self._place_baseline(command), name=f"baseline-{command.id}")
            self._placements[command.id] = _Placement(environment, account, task)
            task.add_done_callback(lambda _, command_id=command.id: self._placements.pop(command_id, None))

    async def _place_baseline(self, command) -> None:
        """Place a baseline release and acknowledge the command, within ``placement_timeout``."""
        args = command.args
        where = f"{args['environment']}/{args['account']}"
        try:
            async with asyncio.timeout(self.options.placement_timeout):
                deployment, _ = await placing.place(self.db, self.site, environment=args["environment"],
                                                    account=args["account"], release=args["release"],
                                                    rollout_id=None, actor=command.actor)
        except TimeoutError:
            accepted = False
            message = (f"placing {args['release']} on {where} did not finish within "
                       f"{self.options.placement_timeout:g} s and was cancelled: the account may run no release; "
                       f"see `canaryctl status` and place it again")
            log.error("baseline_placement_timed_out", command=command.id, account=where)
        except Exception as exc:  # noqa: BLE001 - the operator sees why in the ack
            accepted, message = False, f"{type(exc).__name__}: {exc}"
        else:
            accepted, message = True, f"{args['release']} runs on {where} (deployment {deployment.id})"
        try:
            await ack_command(self.db, self.clock, command.id, accepted=accepted, message=message,
                              audit_kind="command.place")
        except StoreError as error:  # unanswered, the command is read again and placed again (idempotent)
            log.error("baseline_ack_failed", command=command.id, error=str(error))

    def _placing_on(self, info: RolloutInfo) -> str | None:
        """An account of the rollout that a baseline placement is placing on, or None."""
        held = _accounts_of(info)
        return next((f"{p.environment}/{p.account}" for p in self._placements.values()
                     if (p.environment, p.account) in held), None)

    async def _stop_placements(self) -> None:
        await self._drain([p.task for p in self._placements.values()], "baseline_placement_cut_short")

    async def _stop_releases(self) -> None:
        for name, env in self.site.environments.items():
            for account in env.accounts:
                with contextlib.suppress(Exception):
                    await env.deployer.stop(self.site.instance(name, account))

    # ------------------------------------------------------------ probes

    def _liveness(self) -> tuple[bool, str]:
        lag = time.monotonic() - self._last_turn
        limit = max(self.options.liveness_limit, 2 * self.options.cadence.command_poll)
        return (lag < limit, f"main loop last turned {lag:.1f} s ago (limit {limit:g} s)")

    def _readiness(self) -> tuple[bool, str]:
        if not self.ready.is_set():
            return False, "starting"
        problems = []
        if self._store_error is not None:
            problems.append(f"the store is unreachable: {self._store_error}")
        problems.extend(self._policy_errors)
        if self._lease_error is not None:
            problems.append(f"the leases cannot be renewed: {self._lease_error}")
        for info in self._active:
            if info.id not in self.leases:
                continue  # another daemon's: its probe speaks for it
            if info.id not in self.runners:
                why = self._waiting.get(info.id, "it has not started yet")
                problems.append(f"rollout {info.id}'s runner is not running: {why}")
            elif info.status in JUDGED and (down := self.runners[info.id][0].verification_down()) is not None:
                problems.append(f"rollout {info.id}'s verification is not running: {down}")
        if problems:
            return False, "; ".join(problems)
        if not self.leases:
            return True, f"standby: {self.owner} owns no rollout; store and policies in order"
        return True, f"{len(self.runners)} rollout(s) under way, each with its runner; store and policies in order"

    # ------------------------------------------------------------ the world

    async def _open_site(self) -> Site:
        environments = {}
        for name, env in self.config.environments.items():
            deployer = self._deployer(env.deployer)
            if env.kind == "sim":
                environments[name] = await self.simulators.open(name, deployer)
                continue
            endpoints = env.endpoints().for_binance()
            accounts = {n: AccountAccess(n, a.api_key.resolve(), a.api_secret.resolve(), a.role == "master",
                                         shadow_key=a.shadow_key.resolve() if a.shadow_key else None,
                                         shadow_secret=a.shadow_secret.resolve() if a.shadow_secret else None,
                                         email=a.email,
                                         transfer_key=a.transfer_key.resolve() if a.transfer_key else None,
                                         transfer_secret=a.transfer_secret.resolve() if a.transfer_secret else None)
                        for n, a in env.accounts.items()}
            environments[name] = EnvironmentAccess(name, endpoints, accounts, deployer, kind=env.kind)
        weight = self.config.request_weight
        return Site(self.clock, environments, weight_share=float(weight.share), act_reserve=float(weight.act_reserve),
                    metrics=self.metrics)

    def _deployer(self, config):
        """One deployer per kind and settings: environments that share one share its locks."""
        key = config.model_dump_json()
        if key not in self._deployers:
            supervision = self._supervision(config)
            if config.kind == "systemd":
                from controller.deploy.systemd import SystemdDeployer

                where = {"env_dir": config.env_dir} if config.env_dir else {}
                self._deployers[key] = SystemdDeployer(self.clock, unit_template=config.unit_template,
                                                       user=config.user, supervision=supervision, **where)
            else:
                from controller.deploy.process import ProcessDeployer

                self._deployers[key] = ProcessDeployer(self.options.state_dir, self.clock, supervision=supervision)
        return self._deployers[key]

    def _supervision(self, config) -> Supervision | None:
        """Each bot under its supervisor (`controller.deploy.supervisor`): by default with PostgreSQL, where
        a daemon on another host may have to fence a bot this one started. The supervisor reaches the
        database as this daemon does, the URL (with its password) in its environment only."""
        if not (config.supervise if config.supervise is not None else self.db.dialect == "postgresql"):
            return None
        return Supervision({"CANARY_DB": self.db.url.render_as_string(hide_password=False)},
                           lease_seconds=float(self.config.lease_seconds),
                           supersede=lambda instance: placement_leases.supersede(self.db, instance))



def _iso(when) -> str | None:
    return when.isoformat() if when is not None else None


def _accounts_of(info: RolloutInfo) -> set[tuple[str, str]]:
    """(environment, account) of every account the rollout places its release on or compares it with."""
    stages = info.pipeline.stages
    return ({(s.environment, s.account) for s in stages}
            | {(s.environment, s.baseline) for s in stages if s.baseline})
