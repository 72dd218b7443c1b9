"""Place a release as an instance of the template unit ``canary-strategy@.service``.

Before ``systemctl start canary-strategy@INSTANCE.service`` the deployer writes, in ``env_dir``
(0700; the unit names the same folder), files readable by their owner only:

- ``INSTANCE.env``: the unit's ``EnvironmentFile``: ``CANARY_COMMAND`` (the argv, shlex-quoted,
  which the unit's ``env -S`` splits back), ``CANARY_RELEASE``, ``CANARY_CONFIG_SHA256``, the
  metrics URL, the start time and the bot's own variables. It is how `status` tells what runs;
- ``INSTANCE.config.json``: the config snapshot;
- ``INSTANCE.exchange.json``: the exchange and the account's API key (removed at stop).

systemd owns the process: it keeps it across controller restarts, kills its whole cgroup on
stop, and its output goes to the journal (``Running.journal_unit``). The unit is the record: the
files are written before ``systemctl start``, so no bot ever runs that a restarted controller
cannot find (`kill_strays` has nothing to do). Every call is an argv, no shell, bounded by
``call_timeout`` seconds (a hung systemd must not hold up a rollback); a failing call is a
DeployError quoting systemctl's own message, one past its bound a `CallTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from controller.clock import Clock
from controller.deploy.base import (
    READY_POLL,
    CallTimeout,
    KILL_WAIT,
    TAIL_LINES,
    DeployError,
    Placement,
    Running,
    Supervision,
    check_instance,
    metrics_port,
    metrics_url,
    private_dir,
    supersede,
    tail,
    wait_ready,
    write_private,
)
from controller.logs import get_logger

log = get_logger(__name__)

DEFAULT_ENV_DIR = Path("/var/lib/canary-controller/instances")
"""Where ``systemd/canary-strategy@.service`` looks for its files."""
ALIVE = frozenset({"active", "activating", "reloading"})
"""ActiveStates in which the unit has a process."""
SHOW = ("ActiveState", "SubState", "MainPID")
RESERVED = frozenset({"CANARY_COMMAND", "CANARY_RELEASE", "CANARY_CONFIG_SHA256", "CANARY_CONFIG",
                      "CANARY_EXCHANGE_FILE", "CANARY_METRICS_PORT", "CANARY_METRICS_URL", "CANARY_STARTED_AT"})
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\\]")  # env -S reads backslashes as escapes; control characters break lines
_ESCAPED = re.compile(r'(["\\$`])')


class SystemdDeployer:
    """Starts, finds and stops bots as instances of a systemd template unit."""

    def __init__(self, clock: Clock, *, env_dir: Path = DEFAULT_ENV_DIR, systemctl: str = "systemctl",
                 journalctl: str = "journalctl", unit_template: str = "canary-strategy@", user: bool = False,
                 python: str = sys.executable, ready_timeout: float = 30.0, call_timeout: float = 30.0,
                 supervision: Supervision | None = None) -> None:
        self.clock = clock
        self.supervision = supervision
        """None: the unit's main process is the bot; else its supervisor (`controller.deploy.supervisor`)."""
        self.env_dir = Path(env_dir)
        self.systemctl = systemctl
        self.journalctl = journalctl
        self.unit_template = unit_template
        self.user = user
        self.python = python
        self.ready_timeout = ready_timeout
        self.call_timeout = call_timeout
        """Real seconds any one systemctl or journalctl call may take before it is killed."""
        self._locks: dict[str, asyncio.Lock] = {}

    def unit(self, instance: str) -> str:
        check_instance(instance)
        return f"{self.unit_template}{instance}.service"

    async def start(self, placement: Placement) -> Running:
        async with self._lock(placement.instance):
            current = await self.status(placement.instance)
            if current is not None:
                if current.runs(placement):
                    return current
                raise DeployError(f"{current.journal_unit} runs release {current.release} "
                                  f"(config {current.config_sha256[:12]}): stop it before starting "
                                  f"{placement.release}")
            return await self._start(placement)

    async def stop(self, instance: str, *, grace: float = 10.0) -> Running | None:
        unit = self.unit(instance)
        async with self._lock(instance):
            running = await self.status(instance)
            if running is not None:
                try:
                    if grace <= 0:
                        raise CallTimeout("killed at once")
                    await self._systemctl("stop", unit, timeout=grace)  # SIGTERM to the cgroup, then waits
                except CallTimeout:
                    if grace > 0:
                        log.warning("deploy_kill", unit=unit, grace=grace)
                    await self._systemctl("kill", "--signal=SIGKILL", unit)
                    await self._systemctl("stop", unit, timeout=KILL_WAIT)
                log.info("deploy_stopped", unit=unit, release=running.release, pid=running.pid)
            self._forget(instance)
            await supersede(self.supervision, instance)
            return running

    async def kill_strays(self, instance: str) -> list[int]:
        """Nothing to do: systemd runs at most one process tree per unit, and the unit is the record."""
        check_instance(instance)
        return []

    async def status(self, instance: str) -> Running | None:
        unit = self.unit(instance)
        state = await self._show(unit)
        if state.get("ActiveState") not in ALIVE:
            return None
        try:
            values = parse_env_file(self._file(instance, "env").read_text())
        except FileNotFoundError:
            values = {}  # started by hand? Unknown: start refuses it, stop stops it
        return Running(instance=instance, release=values.get("CANARY_RELEASE", "unknown"),
                       config_sha256=values.get("CANARY_CONFIG_SHA256", ""),
                       pid=int(state.get("MainPID") or 0) or None, metrics_url=values.get("CANARY_METRICS_URL", ""),
                       log_file=None, journal_unit=unit, started_at=float(values.get("CANARY_STARTED_AT", 0)))

    # --- start ------------------------------------------------------------------------------------------

    async def _start(self, placement: Placement) -> Running:
        instance, unit = placement.instance, self.unit(placement.instance)
        taken = sorted(RESERVED & set(placement.environment()))
        if taken:
            raise DeployError(f"{unit}: {taken[0]} is set by the deployer; the release may not set it")
        private_dir(self.env_dir)
        config, exchange = self._file(instance, "config.json"), self._file(instance, "exchange.json")
        port = metrics_port(placement.manifest)
        argv = placement.manifest.argv(python=self.python, config=str(config), metrics_port=port,
                                       exchange_file=str(exchange))
        if self.supervision is not None:  # the unit's main process: what systemd stops stops the bot too
            argv = self.supervision.argv(self.python, instance, argv)
        unsafe = [arg for arg in argv if _UNSAFE.search(arg)]
        if unsafe:
            raise DeployError(f"{unit}: argument {unsafe[0][:60]!r} holds a backslash or a control character, "
                              "which the unit's command line cannot carry")
        running = Running(instance=instance, release=placement.release, config_sha256=placement.config_sha256,
                          pid=None, metrics_url=metrics_url(placement.manifest, port), log_file=None,
                          journal_unit=unit, started_at=self.clock.time())
        supervisor_env = dict(self.supervision.environment) if self.supervision is not None else {}
        values = {**placement.environment(), **supervisor_env, "CANARY_COMMAND": shlex.join(argv),
                  "CANARY_RELEASE": running.release, "CANARY_CONFIG_SHA256": running.config_sha256,
                  "CANARY_CONFIG": str(config), "CANARY_EXCHANGE_FILE": str(exchange),
                  "CANARY_METRICS_PORT": str(port), "CANARY_METRICS_URL": running.metrics_url,
                  "CANARY_STARTED_AT": repr(running.started_at)}
        write_private(config, placement.config_text)
        write_private(exchange, placement.exchange_json())
        write_private(self._file(instance, "env"), render_env_file(values, unit))
        log.info("deploy_starting", unit=unit, release=running.release, metrics_url=running.metrics_url)
        try:
            try:
                await self._systemctl("start", unit)
            except DeployError as exc:
                raise DeployError(f"{exc}; its last output:\n{await self._journal_tail(placement)}") from None
            await wait_ready(running.metrics_url, timeout=self.ready_timeout, gone=lambda: self._gone(placement),
                             what=f"{unit}: release {running.release}")
            state = await self._show(unit)
        except BaseException:
            with contextlib.suppress(DeployError):
                await self._systemctl("stop", unit, timeout=KILL_WAIT)
            self._forget(instance)
            raise
        pid = int(state.get("MainPID") or 0) or None
        log.info("deploy_started", unit=unit, release=running.release, pid=pid)
        return replace(running, pid=pid)

    async def _gone(self, placement: Placement) -> str | None:
        """Wait a moment; why the unit has no process any more, or None."""
        await asyncio.sleep(READY_POLL)
        unit = self.unit(placement.instance)
        state = await self._show(unit)
        if state.get("ActiveState") in ALIVE:
            return None
        return (f"ended during start-up ({state.get('ActiveState')}/{state.get('SubState')}); its last output:\n"
                f"{await self._journal_tail(placement)}")

    async def _journal_tail(self, placement: Placement) -> str:
        try:
            output = await self._run(self.journalctl, "--user-unit" if self.user else "--unit",
                                     self.unit(placement.instance), "-n", str(TAIL_LINES), "-o", "cat",
                                     "--no-pager", "-q")
        except DeployError as exc:
            output = f"(its journal could not be read: {exc})"
        return tail(output, placement.secrets())

    # --- systemctl ---------------------------------------------------------------------------------------

    async def _show(self, unit: str) -> dict[str, str]:
        out = await self._systemctl("show", "-p", ",".join(SHOW), unit)
        return dict(line.partition("=")[::2] for line in out.splitlines() if "=" in line)

    async def _systemctl(self, *args: str, timeout: float | None = None) -> str:
        return await self._run(self.systemctl, *(["--user"] if self.user else []), *args, timeout=timeout)

    async def _run(self, *argv: str, timeout: float | None = None) -> str:
        """Run ``argv`` to its end, within ``timeout`` seconds (`call_timeout` by default); its standard
        output, a DeployError quoting its standard error, or a CallTimeout once it has been killed."""
        bound = self.call_timeout if timeout is None else timeout
        try:
            process = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                           stdout=asyncio.subprocess.PIPE,
                                                           stderr=asyncio.subprocess.PIPE)
        except OSError as exc:
            raise DeployError(f"cannot run {argv[0]}: {exc.strerror}") from None
        try:
            async with asyncio.timeout(bound):
                out, err = await process.communicate()
        except BaseException as exc:  # cancelled or past its bound: do not leave it behind
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            if isinstance(exc, TimeoutError):
                raise CallTimeout(f"{shlex.join(argv)} did not end within {bound:g} s: killed") from None
            raise
        if process.returncode != 0:
            message = err.decode("utf-8", "replace").strip() or "no message"
            raise DeployError(f"{shlex.join(argv)} failed with status {process.returncode}: {message}")
        return out.decode("utf-8", "replace")

    # --- files ------------------------------------------------------------------------------------------

    def _lock(self, instance: str) -> asyncio.Lock:
        check_instance(instance)
        return self._locks.setdefault(instance, asyncio.Lock())

    def _file(self, instance: str, suffix: str) -> Path:
        return self.env_dir / f"{instance}.{suffix}"

    def _forget(self, instance: str) -> None:
        """No bot runs: its credentials go, and so does its EnvironmentFile (a unit started by hand fails)."""
        for suffix in ("exchange.json", "env"):
            self._file(instance, suffix).unlink(missing_ok=True)


def render_env_file(values: dict[str, str], unit: str) -> str:
    """``NAME="value"`` lines, quoted as systemd's EnvironmentFile reads them."""
    lines = [f"# written by canary-controller for {unit}; replaced at each start"]
    for name, value in values.items():
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise DeployError(f"{unit}: the value of {name} holds a control character")
        escaped = _ESCAPED.sub(r"\\\1", value)
        lines.append(f'{name}="{escaped}"')
    return "\n".join(lines) + "\n"


def parse_env_file(text: str) -> dict[str, str]:
    """What `render_env_file` wrote."""
    values = {}
    for line in text.splitlines():
        name, sep, quoted = line.partition("=")
        if sep and not line.startswith("#"):
            values[name] = re.sub(r"\\(.)", r"\1", quoted[1:-1])
    return values
