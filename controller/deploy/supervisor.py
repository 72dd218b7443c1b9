"""The bot's dead man's switch: `canaryctl supervise --placement INSTANCE -- CMD...`.

A daemon on another host cannot kill a bot it did not start, so the deployer starts each bot under
this supervisor instead of directly. The supervisor claims the instance's placement lease
(`controller.store.placement_leases`, raising its epoch), starts the bot as its child, and renews
the lease every third of its length. It kills the bot (SIGTERM, then SIGKILL after ``grace``) when
the epoch moved on (another placement of the instance, or a stop from any host) or when it could
not renew for ``lease_seconds - grace`` (the database out of reach counts: fail closed), so that
the bot is dead within one lease length of the last renewal. A stop (SIGTERM to the supervisor)
stops the bot and lets the lease go. The database URL comes from the environment or the daemon's
config, as for every `canaryctl` command, never from the arguments, and never reaches the bot.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence

from controller.logs import get_logger
from controller.store import placement_leases
from controller.store.database import Database

log = get_logger(__name__)

EXIT_SUPERSEDED = 10
"""The bot was killed: its placement's epoch moved on (placed again, or stopped, from any host)."""
EXIT_UNCONFIRMED = 11
"""The bot was killed: the lease could not be renewed within a lease length (database out of reach)."""
EXIT_NOT_CLAIMED = 12
"""The bot was never started: the lease could not be claimed."""
EXIT_CANNOT_RUN = 127
"""The bot was never started: its command could not be run (as a shell says of a missing command)."""
SUPERVISOR_ONLY_ENV = ("CANARY_DB", "CANARY_CONFIG")
"""What the supervisor reads to reach the database; the bot's environment never has it."""
RELEASE_TIMEOUT = 2.0
"""Wall seconds the supervisor tries to let its lease go when it ends (it expires on its own)."""
_PR_SET_PDEATHSIG = 1


def bot_environment(env: Mapping[str, str]) -> dict[str, str]:
    return {name: value for name, value in env.items() if name not in SUPERVISOR_ONLY_ENV}


def _die_with_parent() -> None:
    """In the bot, before it runs: the kernel SIGKILLs it when its supervisor dies, however it dies
    (a SIGKILLed supervisor would otherwise leave a bot nobody fences)."""
    parent = os.getppid()
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the supervisor died before the request took effect
        os._exit(EXIT_UNCONFIRMED)


class Supervisor:
    """One bot under one placement lease, from the claim to the bot's end."""

    def __init__(self, db: Database, instance: str, argv: Sequence[str], *, env: Mapping[str, str],
                 lease_seconds: float, grace: float | None = None, pass_fds: Sequence[int] = ()) -> None:
        if not argv:
            raise ValueError("the supervisor needs the bot's command")
        self.db = db
        self.instance = instance
        self.argv = list(argv)
        self.env = bot_environment(env)
        self.lease_seconds = lease_seconds
        self.grace = lease_seconds / 3 if grace is None else min(grace, lease_seconds / 3)
        self.pass_fds = tuple(pass_fds)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self.epoch = 0
        self.confirmed = 0.0
        """When (monotonic) the last renewal that succeeded was sent."""
        self._superseded = asyncio.Event()

    async def run(self) -> int:
        """Claim, start the bot, watch; the supervisor's exit status."""
        sent = time.monotonic()
        try:
            async with asyncio.timeout(self.lease_seconds):
                self.epoch, before = await placement_leases.claim(self.db, self.instance, self.owner,
                                                                  seconds=self.lease_seconds)
        except Exception as error:  # noqa: BLE001 - any failure to claim: no bot without a lease
            log.error("supervisor_not_started", instance=self.instance, why="the placement lease could not "
                      f"be claimed: {type(error).__name__}: {error}")
            return EXIT_NOT_CLAIMED
        self.confirmed = sent
        log.info("supervisor_claimed", instance=self.instance, epoch=self.epoch, owner=self.owner,
                 previous_owner=before.owner if before and before.owner else None)
        try:
            bot = await asyncio.create_subprocess_exec(*self.argv, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                                                       pass_fds=self.pass_fds, preexec_fn=_die_with_parent)
        except OSError as error:
            log.error("supervisor_not_started", instance=self.instance, why=f"cannot run {self.argv[0]}: "
                      f"{error.strerror}")
            await self._release()
            return EXIT_CANNOT_RUN
        exited = asyncio.create_task(bot.wait(), name="bot-exit")
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stopping.set)
        stop_requested = asyncio.create_task(stopping.wait(), name="stop-requested")
        superseded = asyncio.create_task(self._superseded.wait(), name="superseded")
        renewals = asyncio.create_task(self._renew(), name="renewals")
        try:
            while True:
                deadline = self.confirmed + self.lease_seconds - self.grace
                left = deadline - time.monotonic()
                if left <= 0:
                    log.error("supervisor_killing_bot", instance=self.instance, epoch=self.epoch, pid=bot.pid,
                              why=f"the placement lease was not renewed for {self.lease_seconds - self.grace:g} s: "
                                  "the database is out of reach; failing closed")
                    await self._kill(bot, exited)  # nothing to let go: the lease expires on its own
                    return EXIT_UNCONFIRMED
                done, _ = await asyncio.wait({exited, stop_requested, superseded}, timeout=left,
                                             return_when=asyncio.FIRST_COMPLETED)
                if stop_requested in done:
                    log.info("supervisor_stopping_bot", instance=self.instance, epoch=self.epoch, pid=bot.pid,
                             why="asked to stop")
                    await self._kill(bot, exited)
                    await self._release()
                    return 0
                if superseded in done:
                    log.error("supervisor_killing_bot", instance=self.instance, epoch=self.epoch, pid=bot.pid,
                              why="the placement's epoch moved on: placed again or stopped, maybe from another host")
                    await self._kill(bot, exited)
                    return EXIT_SUPERSEDED
                if exited in done:
                    status = bot.returncode if bot.returncode >= 0 else 128 - bot.returncode
                    log.warning("supervisor_bot_ended", instance=self.instance, epoch=self.epoch, status=status)
                    await self._release()
                    return status
        finally:
            for task in (renewals, stop_requested, superseded, exited):
                task.cancel()

    async def _renew(self) -> None:
        """Every third of the lease: renew it; a renewal that changes nothing means superseded."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            sent = time.monotonic()
            try:
                async with asyncio.timeout(self.lease_seconds / 3):
                    held = await placement_leases.renew(self.db, self.instance, self.epoch,
                                                        seconds=self.lease_seconds)
            except Exception as error:  # noqa: BLE001 - not renewed: the deadline decides
                log.warning("supervisor_lease_not_renewed", instance=self.instance, epoch=self.epoch,
                            error=f"{type(error).__name__}: {error}",
                            unconfirmed_for=round(time.monotonic() - self.confirmed, 3))
                continue
            finally:
                # Each renewal reaches the database afresh: a pooled connection would go on reading a
                # SQLite file that was moved away, or hide a server that no longer takes connections.
                with contextlib.suppress(Exception):
                    await self.db.engine.dispose()
            if not held:
                self._superseded.set()
                return
            self.confirmed = sent

    async def _kill(self, bot: asyncio.subprocess.Process, exited: asyncio.Task) -> None:
        """SIGTERM, SIGKILL after the grace; returns once the bot is gone."""
        for signum, wait in ((signal.SIGTERM, self.grace), (signal.SIGKILL, None)):
            if exited.done():
                return
            with contextlib.suppress(ProcessLookupError):
                bot.send_signal(signum)
            done, _ = await asyncio.wait({exited}, timeout=wait)
            if done:
                return

    async def _release(self) -> None:
        try:
            async with asyncio.timeout(RELEASE_TIMEOUT):
                await placement_leases.release(self.db, self.instance, self.epoch)
        except Exception as error:  # noqa: BLE001 - it expires on its own within a lease length
            log.warning("supervisor_lease_not_released", instance=self.instance, error=f"{type(error).__name__}: "
                        f"{error}")
