"""A deployer (`controller.deploy.base.Deployer`) whose releases run in this process, on the harness's clock.

The process deployer starts a bot as a process with a clock of its own (the real one, or one
running at a fixed speed): it cannot follow a clock that jumps from one thing that happens to
the next. This one starts the release's bot through its in-process entry point
(`controller.harness.release`), on the stepped clock, its requests counted in flight; to the
rollout runner and the rollback it is a deployer like the others: start, stop, status.

A bot that crashed is no longer running (`status` says None, as for a dead process); its
remains are tidied when the instance is next started or stopped, and the harness is told of
every bot that ends (``on_stopped``), with what crashed it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import aiohttp

from controller.clock import Clock
from controller.deploy.base import DeployError, Placement, Running
from controller.harness.release import EmbeddedRelease, EntryPoint
from controller.harness.stepping import Stepper

PLACING_STEP = 0.25  # seconds: a release starts in simulated seconds, as a process does


class EmbeddedDeployer:
    """Places releases as bots in this process: one bot per instance."""

    def __init__(self, entry_point: EntryPoint, *, clock: Clock, account: str, settings: Mapping[str, Any],
                 trace_configs: Sequence[aiohttp.TraceConfig], stepper: Stepper | None = None,
                 on_started: Callable[[Running], None] = lambda running: None,
                 on_stopped: Callable[[Running, BaseException | None], None] = lambda running, crash: None) -> None:
        """``settings``: the bot's cadence (`EntryPoint`); ``on_started``: told of every start,
        a bot found already running included; ``on_stopped``: of every bot that ends, with its crash."""
        self.entry_point = entry_point
        self.clock = clock
        self.account = account
        self.settings = dict(settings)
        self.trace_configs = list(trace_configs)
        self.stepper = stepper
        self.on_started = on_started
        self.on_stopped = on_stopped
        self._bots: dict[str, tuple[Running, EmbeddedRelease]] = {}

    async def start(self, placement: Placement) -> Running:
        found = self._bots.get(placement.instance)
        if found is not None and found[1].crash is not None:
            await self._end(placement.instance)  # a crashed bot's remains
            found = None
        if found is not None:
            running = found[0]
            if not running.runs(placement):
                raise DeployError(f"instance {placement.instance} runs {running.release}: stop it first")
            self.on_started(running)
            return running
        bot = self.entry_point(config=json.loads(placement.config_text), exchange=dict(placement.exchange),
                               clock=self.clock, settings=self.settings, label=placement.release,
                               account=self.account, trace_configs=self.trace_configs)
        # Its websocket handshake is not a request: small steps, so that it starts in seconds, not
        # minutes (and stops so: its shutdown is not all requests either).
        with self.stepper.fine(PLACING_STEP) if self.stepper else contextlib.nullcontext():
            try:
                await bot.start()
            except Exception as exc:  # noqa: BLE001 - whatever stopped it, the placement failed
                await bot.stop()
                raise DeployError(f"instance {placement.instance}: the bot of {placement.release} did not "
                                  f"start: {type(exc).__name__}: {exc}") from None
        if bot.crash is not None:
            await bot.stop()
            raise DeployError(f"instance {placement.instance}: the bot of {placement.release} stopped before "
                              f"it traded: {bot.crash!r}")
        running = Running(instance=placement.instance, release=placement.release,
                          config_sha256=placement.config_sha256, pid=None, metrics_url=bot.metrics_url,
                          log_file=None, journal_unit=None, started_at=self.clock.time())
        self._bots[placement.instance] = (running, bot)
        self.on_started(running)
        return running

    async def stop(self, instance: str, *, grace: float = 10.0) -> Running | None:
        """As SIGTERM: the bot cancels its open orders and ends, bounded by its own shutdown timeout
        (``grace`` is a process's; a bot in this process has nothing to kill)."""
        found = self._bots.get(instance)
        alive = found is not None and found[1].crash is None
        await self._end(instance)
        return found[0] if alive else None

    async def status(self, instance: str) -> Running | None:
        found = self._bots.get(instance)
        return found[0] if found is not None and found[1].crash is None else None

    async def kill_strays(self, instance: str) -> list[int]:
        """None can exist: a bot is recorded here as it starts, in the process that runs it."""
        return []

    async def close(self) -> None:
        """Stop every bot (the run ended)."""
        for instance in list(self._bots):
            await self._end(instance)

    async def _end(self, instance: str) -> None:
        found = self._bots.pop(instance, None)
        if found is None:
            return
        running, bot = found
        with self.stepper.fine(PLACING_STEP) if self.stepper else contextlib.nullcontext():
            await bot.stop()
        self.on_stopped(running, bot.crash)
