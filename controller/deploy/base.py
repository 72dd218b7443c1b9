"""What every deployer shares: the placement it is given, what it reports running, and the
files and checks both kinds of deployer make the same way.

A deployer places one release on one instance (one instance per environment and account) and
stops it. Never two releases live on one account: `Deployer.start` refuses an instance that
runs something else, and the caller stops it first.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp

from controller.config.manifest import ReleaseManifest
from controller.errors import CanaryError
from controller.logs import REDACTED, get_logger, redact_text

log = get_logger(__name__)

INSTANCE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
"""An instance name: a file name and a systemd instance name alike (no '/', no leading '.' or '-')."""
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
EXCHANGE_KEYS = ("rest_url", "ws_url", "api_key", "api_secret")
OPTIONAL_EXCHANGE_KEYS = ("sapi_url",)
SECRET_EXCHANGE_KEYS = ("api_key", "api_secret")

READY_POLL = 0.05
"""Real seconds between two readiness checks of a starting bot."""
TAIL_LINES = 20
KILL_WAIT = 5.0
"""Real seconds a SIGKILLed bot may take to be gone before stop gives up."""


class DeployError(CanaryError):
    """A release could not be placed or stopped; the message says which instance and why."""


class CallTimeout(DeployError):
    """A call the deployer made (systemctl, journalctl) did not end within its bound; it was killed."""


@dataclass(frozen=True)
class Placement:
    """One release to run on one instance, with everything the bot needs to start."""

    instance: str
    release: str
    manifest: ReleaseManifest
    config_text: str
    """The config snapshot's content (canonical JSON, which the bot reads as YAML)."""
    config_sha256: str
    exchange: Mapping[str, str] = field(repr=False)
    """``rest_url``, ``ws_url``, ``sapi_url`` (optional), ``api_key``, ``api_secret``: secret, never
    logged, never on a command line; the bot gets it as a file only it can read."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for the bot (e.g. ``CANARY_SIM_SPEED``), over the manifest's."""

    def __post_init__(self) -> None:
        check_instance(self.instance)
        if not self.release:
            raise DeployError(f"instance {self.instance}: a placement needs a release version")
        missing = [key for key in EXCHANGE_KEYS if not self.exchange.get(key)]
        unknown = sorted(set(self.exchange) - set(EXCHANGE_KEYS) - set(OPTIONAL_EXCHANGE_KEYS))
        if missing or unknown:  # names keys only: any value may be the secret
            raise DeployError(f"instance {self.instance}: the exchange access "
                              + (f"lacks {', '.join(missing)}" if missing else f"has unknown key {unknown[0]}"))
        bad = [name for name in self.env if not ENV_NAME.match(name)]
        if bad:
            raise DeployError(f"instance {self.instance}: {bad[0]!r} is not an environment variable name")

    def environment(self) -> dict[str, str]:
        """The bot's own variables: the manifest's, then the placement's over them."""
        return {**self.manifest.env, **self.env}

    def exchange_json(self) -> str:
        return json.dumps(dict(self.exchange), sort_keys=True)

    def secrets(self) -> tuple[str, ...]:
        """The values no log line or error message may show."""
        return tuple(self.exchange[key] for key in SECRET_EXCHANGE_KEYS if self.exchange.get(key))


@dataclass(frozen=True)
class Running:
    """A release running on an instance, as the deployer found or started it."""

    instance: str
    release: str
    config_sha256: str
    pid: int | None
    """The bot's main process (systemd's MainPID); None when unknown."""
    metrics_url: str
    log_file: Path | None
    """Where the bot's output goes (ProcessDeployer), for a LogFileObserver."""
    journal_unit: str | None
    """The unit whose journal holds the bot's output (SystemdDeployer), for a JournaldObserver."""
    started_at: float
    """Clock seconds."""
    log_offset: int = 0
    """Where this run's output starts in ``log_file``: earlier runs appended before it."""

    def runs(self, placement: Placement) -> bool:
        """Whether this is ``placement``'s release with its config."""
        return (self.release, self.config_sha256) == (placement.release, placement.config_sha256)


@dataclass(frozen=True)
class Supervision:
    """How a deployer runs each bot: under `canaryctl supervise` (`controller.deploy.supervisor`), the
    dead man's switch that holds the instance's placement lease, instead of directly."""

    environment: Mapping[str, str] = field(repr=False)
    """What the supervisor reads to reach the database (``CANARY_DB``): secret, in its environment only,
    never on a command line, and never given to the bot."""
    lease_seconds: float
    grace: float | None = None
    """Seconds between SIGTERM and SIGKILL when the supervisor kills its bot (None: a third of the lease)."""
    supersede: Callable[[str], Awaitable[tuple[int, str] | None]] | None = None
    """Moves an instance's placement epoch on: how `stop` fences a bot another host started
    (`controller.store.placement_leases.supersede`)."""

    def argv(self, python: str, instance: str, bot: list[str], *, pass_fds: tuple[int, ...] = ()) -> list[str]:
        grace = ["--grace", f"{self.grace:g}"] if self.grace is not None else []
        fds = [arg for fd in pass_fds for arg in ("--pass-fd", str(fd))]
        return [python, "-m", "controller", "supervise", "--placement", instance,
                "--lease-seconds", f"{self.lease_seconds:g}", *grace, *fds, "--", *bot]


class Deployer(Protocol):
    async def start(self, placement: Placement) -> Running:
        """Place the release and wait until its metrics answer.

        Idempotent: an instance already running this release and config is returned as it is.
        Raises DeployError when the instance runs something else (stop it first) or when the
        bot ends during start-up (the message holds the tail of its output, secrets hidden).
        """

    async def stop(self, instance: str, *, grace: float = 10.0) -> Running | None:
        """SIGTERM, up to ``grace`` wall seconds, then SIGKILL; remove the credentials file.

        Idempotent: returns what was stopped, None when nothing ran.
        """

    async def status(self, instance: str) -> Running | None:
        """What runs on the instance now (alive), else None."""

    async def kill_strays(self, instance: str) -> list[int]:
        """Kill every bot of the instance that the deployer's records do not name (a controller
        killed between spawning a bot and recording it leaves one); the pids killed."""


async def supersede(supervision: Supervision | None, instance: str) -> None:
    """After a stop: move the instance's placement epoch on, so that a bot of it that another host
    started is killed by its supervisor too, and wait the lease length that bounds its death when
    such a supervisor held the lease (a rollback makes the account safe only once no bot trades it).
    Not reaching the database stops nothing more: that bot's supervisor cannot renew either, and
    kills it within a lease length."""
    if supervision is None or supervision.supersede is None:
        return
    try:
        superseded = await supervision.supersede(instance)
    except Exception as error:  # noqa: BLE001 - see above: the lease fails closed on its own
        log.warning("deploy_placement_not_superseded", instance=instance, error=f"{type(error).__name__}: {error}")
        superseded = None
    if superseded is None or not superseded[1]:
        return
    log.warning("deploy_superseded_elsewhere", instance=instance, supervisor=superseded[1], epoch=superseded[0],
                wait=supervision.lease_seconds)
    await asyncio.sleep(supervision.lease_seconds)  # real seconds, as the supervisor's lease


def check_instance(instance: str) -> None:
    if not INSTANCE.match(instance):
        raise DeployError(f"{instance!r} is not an instance name: use letters, digits, '_', '.' and '-' "
                          "(64 at most), starting with a letter, digit or '_'")


def write_private(path: Path, text: str) -> None:
    """Write ``path`` readable by its owner only, atomically: never readable by others, not even
    for an instant, and never half written (a temporary name, created 0600, then renamed)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def private_dir(path: Path) -> Path:
    """``path`` (and missing parents) as a directory only its owner can enter."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def free_port() -> int:
    """A port free on 127.0.0.1 a moment ago, for a bot whose manifest leaves the choice to us."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def metrics_port(manifest: ReleaseManifest) -> int:
    return manifest.metrics.port or free_port()


def metrics_url(manifest: ReleaseManifest, port: int) -> str:
    return f"http://127.0.0.1:{port}{manifest.metrics.path}"


def redact(text: str, secrets_: tuple[str, ...]) -> str:
    """``text`` without the given secret values nor anything that looks like a credential."""
    for value in secrets_:
        text = text.replace(value, REDACTED)
    return redact_text(text)


def tail(text: str, secrets_: tuple[str, ...], lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines of a bot's output, fit for an error message."""
    kept = text.rstrip("\n").splitlines()[-lines:]
    return redact("\n".join(kept), secrets_) if kept else "(no output)"


async def wait_ready(url: str, *, timeout: float, gone: Callable[[], Awaitable[str | None]], what: str) -> None:
    """Until ``url`` answers HTTP 200, bounded by ``timeout`` wall seconds.

    ``gone`` waits a moment (at most about `READY_POLL`) and returns why the bot is no longer
    there, or None; a reason ends the wait with a DeployError.
    """
    client_timeout = aiohttp.ClientTimeout(total=max(1.0, READY_POLL * 10))
    try:
        async with asyncio.timeout(timeout), aiohttp.ClientSession(timeout=client_timeout) as session:
            while True:
                try:
                    async with session.get(url) as response:
                        if response.status == 200:
                            return
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    pass  # not listening yet
                reason = await gone()
                if reason is not None:
                    raise DeployError(f"{what} {reason}")
    except TimeoutError:
        raise DeployError(f"{what}: its metrics ({url}) did not answer within {timeout:g} s") from None
