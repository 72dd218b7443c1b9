"""The daemon's own configuration: database, exchange environments and accounts, admin API, logs.

Secrets appear only as `SecretRef`s; relative paths count from the config file's directory,
so the daemon behaves the same whatever directory systemd starts it in.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import BeforeValidator, Field, StringConstraints, field_validator, model_validator

from controller import shipped
from controller.config.secrets import SecretRef
from controller.config.model import ConfigModel, Fraction, Int, error_at
from controller.config.yamlfile import load_model
from controller.timespec import parse_duration

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]

_DATABASE_URL = re.compile(r"^(sqlite(\+\w+)?:///|postgresql(\+\w+)?://)")
_SQLITE_FILE = re.compile(r"^(sqlite(?:\+\w+)?:///)(?!:memory:)([^/?].*)$")  # a relative file path


@dataclass(frozen=True)
class Endpoints:
    """An environment's Binance USD-M futures base URLs: REST, websocket streams and the SAPI base
    (sub-account endpoints). None: not known (the simulator's address is only known at run time;
    the testnet has no SAPI). `controller.exchange.client` takes them in python-binance's form."""

    rest_url: str | None
    ws_url: str | None
    sapi_url: str | None = None

    def for_binance(self) -> Endpoints:
        """The URLs in the form python-binance's attributes take them: REST on the host's ``/fapi``
        (AsyncClient.FUTURES_URL; a URL already ending in /fapi is kept), websocket with a trailing
        slash (FSTREAM_URL), SAPI without one (MARGIN_API_URL)."""
        if self.rest_url is None or self.ws_url is None:
            raise ValueError(f"{self}: a REST and a websocket URL are needed to reach the exchange")
        rest = self.rest_url.rstrip("/")
        return Endpoints(rest if rest.endswith("/fapi") else rest + "/fapi", self.ws_url.rstrip("/") + "/",
                         self.sapi_url.rstrip("/") if self.sapi_url else None)


# Binance's published USD-M futures endpoints; the simulator's address is only known at run time.
_BINANCE = {
    "live": Endpoints("https://fapi.binance.com", "wss://fstream.binance.com", "https://api.binance.com/sapi"),
    "testnet": Endpoints("https://testnet.binancefuture.com", "wss://fstream.binancefuture.com"),
    "sim": Endpoints(None, None),
}


class DatabaseConfig(ConfigModel):
    """Where the controller's records live; unset means the daemon's default location."""

    url: str | None = None
    password: SecretRef | None = None

    @field_validator("url")
    @classmethod
    def _supported_and_passwordless(cls, url: str | None) -> str | None:
        # Messages never quote the URL: it may carry the very password being refused.
        if url is None:
            return url
        if not _DATABASE_URL.match(url):
            raise ValueError("expected sqlite:///PATH or postgresql[+driver]://HOST/NAME")
        parts = urlsplit(url)
        if parts.password is not None or "password" in parse_qs(parts.query):
            raise ValueError("the URL embeds a password: "
                             "put the password in database.password as file:/ or env: reference")
        return url

    def anchored(self, base_dir: Path) -> DatabaseConfig:
        """A SQLite file path made absolute against ``base_dir``."""
        match = _SQLITE_FILE.match(self.url or "")
        if not match:
            return self
        return self.model_copy(update={"url": match.group(1) + str(_anchor(base_dir, Path(match.group(2))))})


class AccountConfig(ConfigModel):
    """An exchange account the controller trades or watches with."""

    api_key: SecretRef
    api_secret: SecretRef
    role: Literal["master", "sub"] = "master"
    capital_cap: Fraction | None = None
    """For a sub account: the most of the master's capital it may hold (the canary's 2 %)."""
    shadow_key: SecretRef | None = None
    shadow_secret: SecretRef | None = None
    """A second, read-only key of the same account (no futures trading): what a ``mode: shadow``
    stage gives the release, so that the exchange refuses every order it sends."""
    # -- the capital ramp (`controller.rollout.capital`)
    email: str | None = Field(default=None, pattern=r"^[^@\s]+@[^@\s]+$")
    """The account's email at the exchange: what the sub-account transfers of a capital ramp name it by."""
    transfer_key: SecretRef | None = None
    transfer_secret: SecretRef | None = None
    """The master's key for moving capital to and from sub-accounts (a stage's ``ramp``): it may make
    internal transfers and must not withdraw; no other key of the controller may move funds."""

    @model_validator(mode="after")
    def _transfer_key_on_master(self) -> AccountConfig:
        if (self.transfer_key is None) != (self.transfer_secret is None):
            given, missing = ("transfer_key", "transfer_secret") if self.transfer_secret is None \
                else ("transfer_secret", "transfer_key")
            raise error_at((given,), f"a transfer key needs both transfer_key and transfer_secret: {missing} is missing")
        if self.transfer_key is not None and self.role != "master":
            raise error_at(("transfer_key",), "the transfer key belongs to the master account (role: master): "
                                              "only the master moves capital between its sub-accounts")
        return self

    @model_validator(mode="after")
    def _cap_only_for_sub(self) -> AccountConfig:
        if self.capital_cap is not None and self.role != "sub":
            raise error_at(("capital_cap",), "capital_cap applies to sub accounts only (role: sub)")
        return self

    @model_validator(mode="after")
    def _shadow_key_whole(self) -> AccountConfig:
        if (self.shadow_key is None) != (self.shadow_secret is None):
            given, missing = ("shadow_key", "shadow_secret") if self.shadow_secret is None \
                else ("shadow_secret", "shadow_key")
            raise error_at((given,), f"a shadow key needs both shadow_key and shadow_secret (secret references to "
                                     f"the read-only key of this account): {missing} is missing")
        return self


class DeployerConfig(ConfigModel):
    """How the environment's releases run: as child processes of the daemon, or as systemd units."""

    kind: Literal["process", "systemd"] = "process"
    unit_template: str = Field(default="canary-strategy@", pattern=r"^[A-Za-z0-9_.:-]+@$")
    """systemd: the template unit (systemd/canary-strategy@.service), without ``.service``."""
    env_dir: Path | None = None
    """systemd: where each instance's environment and config snapshot files are written; an
    absolute path, the one the template unit's EnvironmentFile= names (default: the unit's)."""
    user: bool = False
    """systemd: talk to the user's service manager (``systemctl --user``) instead of the system's."""
    supervise: bool | None = None
    """Run each bot under `canaryctl supervise`, the dead man's switch holding its placement lease, so that
    a daemon on another host can fence it. None: when the database is PostgreSQL (several daemons)."""


    @field_validator("env_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("expected an absolute path (the template unit's EnvironmentFile= names it)")
        return value


WEBHOOK_EVENTS = ("stage_started", "breach", "rollback_planned", "rollback_done", "rollback_failed", "promoted",
                  "waiting_for_signoff")
"""The rollout events a webhook may ask for (`controller.daemon.webhooks`)."""


class WebhookConfig(ConfigModel):
    """A POST of each rollout event asked for, its body signed (``X-Canary-Signature: sha256=HEX``, the
    HMAC-SHA256 of the body) with the secret the reference names."""

    url: str = Field(pattern=r"^https?://\S+$")
    events: list[Literal[WEBHOOK_EVENTS]] = Field(default_factory=lambda: list(WEBHOOK_EVENTS), min_length=1)
    secret: SecretRef


class NotificationsConfig(ConfigModel):
    """Where the environment's rollout events go, besides Alertmanager's route for metric alerts."""

    webhooks: list[WebhookConfig] = Field(default_factory=list, max_length=16)


class EnvironmentConfig(ConfigModel):
    """An exchange the daemon can run releases against: the simulator, Binance testnet or live."""

    kind: Literal["sim", "testnet", "live"]
    rest_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    ws_url: str | None = Field(default=None, pattern=r"^wss?://\S+$")
    sapi_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    """The SAPI base (sub-account balances, e.g. https://api.binance.com/sapi); needed for a
    stage with a capital_cap watched through the master account."""
    accounts: dict[Name, AccountConfig] = Field(default_factory=dict)
    deployer: DeployerConfig = Field(default_factory=DeployerConfig)
    notifications: NotificationsConfig = Field(default_factory=NotificationsConfig)
    confirm_live: bool = False
    """``kind: live`` only: the operator's explicit yes to trading real money (a config copied
    from testnet with its kind changed does not start)."""

    @model_validator(mode="after")
    def _exchange_needs_account(self) -> EnvironmentConfig:
        if self.kind != "sim" and not self.accounts:
            raise error_at(("kind",), f"a {self.kind} environment needs at least one account under accounts")
        return self

    @model_validator(mode="after")
    def _live_is_confirmed_and_capped(self) -> EnvironmentConfig:
        if self.kind != "live":
            if self.confirm_live:
                raise error_at(("confirm_live",), f"confirm_live applies to kind: live only (this is {self.kind})")
            return self
        if not self.confirm_live:
            raise error_at(("kind",), "a live environment trades real money: set confirm_live: true beside "
                                      "kind: live to say so")
        for name, account in self.accounts.items():
            if account.role == "sub" and account.capital_cap is None:
                raise error_at(("accounts", name, "role"), "on live every sub account needs a capital_cap "
                                                           "(the most of the master's capital it may hold, "
                                                           "e.g. 0.02)")
        return self

    def endpoints(self) -> Endpoints:
        """The configured URLs, else Binance's for the kind (none for the embedded simulator; the
        testnet has no SAPI, so a capital cap there is watched from the sub-account alone)."""
        default = _BINANCE[self.kind]
        return Endpoints(self.rest_url or default.rest_url, self.ws_url or default.ws_url,
                         self.sapi_url or default.sapi_url)


class AdminConfig(ConfigModel):
    """The local admin API the CLI talks to."""

    host: str = "127.0.0.1"
    port: Int = Field(default=9310, ge=0, le=65535)
    allow_remote: bool = False
    token: SecretRef | None = None
    """A bearer token every request must carry (``Authorization: Bearer ...``); required with
    ``allow_remote``, since beyond this host anyone could read the status and the metrics."""

    @model_validator(mode="after")
    def _local_unless_allowed(self) -> AdminConfig:
        if not self.allow_remote and not _is_loopback(self.host):
            raise error_at(("host",), f"{self.host} exposes the admin API beyond this host: "
                                      "use 127.0.0.1, or set admin.allow_remote: true")
        if self.allow_remote and self.token is None:
            raise error_at(("token",), "admin.allow_remote needs a bearer token: set admin.token to a secret "
                                       "reference (file:/run/credentials/... or env:NAME)")
        return self


class LogConfig(ConfigModel):
    """How the daemon logs: one structured line per event."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "console"] = "console"


def _seconds(value: object) -> object:
    """A duration as seconds: a number, or text such as ``90s``, ``10m``."""
    if isinstance(value, str):
        return parse_duration(value)
    return value


Seconds = Annotated[float, BeforeValidator(_seconds), Field(gt=0)]


class RollbackConfig(ConfigModel):
    """How long a rollback may take, and how often a failing step is tried."""

    deadline: Seconds = 600.0
    """Clock seconds from the rollback's start (or resume) after which a step still failing or
    waiting on a rate limit is ``failed``: rate limits are waited out, never counted as failures."""
    step_timeout: Seconds = 120.0
    """Seconds one attempt of a step may take: longer than a bot's start-up (30 s by default)."""
    attempts: Int = Field(default=3, ge=1, le=20)
    """Tries of a step that fails (a rate-limit wait does not spend one)."""
    backoff: float = Field(default=0.5, ge=0, le=60)
    """Seconds before the second try, doubling for each further one."""


class RequestWeightConfig(ConfigModel):
    """The controller's share of each exchange host's request weight a minute (2400 on USD-M
    futures), and the part of it that only acting (rollback, placement) may spend: observing
    may spend ``share - act_reserve``. The defaults let a rollback of 10 accounts of 10 symbols
    (about 1060) fit in one minute, and observing connect a stage's accounts without waiting;
    `controller.exchange.weights` shows the arithmetic."""

    share: Fraction = Decimal("0.75")
    act_reserve: Fraction = Decimal("0.50")

    @model_validator(mode="after")
    def _observing_keeps_some(self) -> RequestWeightConfig:
        if self.act_reserve >= self.share:
            raise error_at(("act_reserve",), f"expected less than share ({self.share}): observing may spend "
                                             f"share - act_reserve, which must leave it some weight")
        return self


class DaemonConfig(ConfigModel):
    """The daemon's configuration file (``controller.yaml``)."""

    database: DatabaseConfig = Field(default_factory=DatabaseConfig)
    environments: dict[Name, EnvironmentConfig] = Field(min_length=1)
    admin: AdminConfig = Field(default_factory=AdminConfig)
    artifact_roots: list[Path] = Field(default_factory=list, max_length=32)
    """Folders (absolute) where a release's artifact may lie besides its manifest's folder, e.g. a
    build output shared by several manifests (`canaryctl release add --config` reads them)."""
    policies_dir: Path = Field(default_factory=shipped.policies_dir)
    """The policy files the pipelines name; default: the ones shipped with the package."""
    pipeline: Path | None = None
    log: LogConfig = Field(default_factory=LogConfig)
    rollback: RollbackConfig = Field(default_factory=RollbackConfig)
    request_weight: RequestWeightConfig = Field(default_factory=RequestWeightConfig)
    finished_series_grace: Seconds = 3600.0
    """How long a finished rollout's labelled series (``canary_rollout_state``...) stay on /metrics."""
    lease_seconds: Seconds = 9.0
    """How long a daemon's ownership of a rollout lasts unrenewed (renewed every third of it): with several
    daemons on PostgreSQL, another takes a dead daemon's rollouts within this plus one renewal."""

    @field_validator("artifact_roots")
    @classmethod
    def _absolute_roots(cls, value: list[Path]) -> list[Path]:
        for root in value:
            if not root.is_absolute():
                raise ValueError(f"expected absolute paths, got {str(root)!r} (an allowed root must not depend on "
                                 "where canaryctl runs)")
        return value

    def anchored(self, base_dir: Path) -> DaemonConfig:
        """This config with relative paths made absolute against ``base_dir``."""
        return self.model_copy(update={
            "database": self.database.anchored(base_dir),
            "policies_dir": _anchor(base_dir, self.policies_dir),
            "pipeline": _anchor(base_dir, self.pipeline) if self.pipeline is not None else None,
        })


def load_daemon_config(path: Path) -> DaemonConfig:
    """Read the daemon's config file; relative paths in it count from its directory."""
    path = Path(path)
    return load_model(DaemonConfig, path).anchored(path.parent.resolve())


def _anchor(base_dir: Path, path: Path) -> Path:
    """``path`` against ``base_dir``, with ``..`` folded so logs show the real place."""
    return Path(os.path.normpath(base_dir / path))


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # another host name: it may resolve to any interface
