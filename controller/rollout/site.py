"""Where releases run: each environment's exchange address, its accounts' keys and its deployer.

The engine and the rollback reach the world only through a `Site`: it opens (and keeps) one
exchange client per account and purpose, names the deployer instance of an account, and builds
the `Placement` that puts a release with its config snapshot on an account. Keys stay inside.
Every client of one exchange host (all accounts, both purposes, the user streams' listenKey
calls) shares that host's request gate and weight budget: Binance limits and bans an IP, and
the daemon has one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp

from controller.clock import Clock
from controller.config.daemon import Endpoints
from controller.config.manifest import ReleaseManifest
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model_text
from controller.deploy.base import Deployer, Placement
from controller.errors import ConfigError
from controller.exchange.client import ExchangeClient, RequestGate, RetryPolicy
from controller.exchange.weights import DEFAULT_ACT_RESERVE, DEFAULT_SHARE, WeightBudget
from controller.metrics import ControllerMetrics


SHADOW_ENV = "CANARY_SHADOW"
"""Set to ``1`` in the environment of a release placed by a ``mode: shadow`` stage."""


@dataclass(frozen=True)
class AccountAccess:
    name: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    master: bool = False
    shadow_key: str | None = field(default=None, repr=False)
    shadow_secret: str | None = field(default=None, repr=False)
    """The account's read-only key (None: it names none): what a shadow stage's release holds."""
    email: str | None = None
    """The account's email at the exchange (sub-account transfers name accounts by it)."""
    transfer_key: str | None = field(default=None, repr=False)
    transfer_secret: str | None = field(default=None, repr=False)
    """The master's key for a capital ramp's transfers (None: it names none)."""

    def credentials(self, purpose: str) -> tuple[str, str]:
        """The key and secret for a purpose: ``shadow`` is the read-only key, ``transfer`` the master's
        transfer key, any other the trading key."""
        if purpose == "transfer":
            if self.transfer_key is None or self.transfer_secret is None:
                raise ConfigError(f"account {self.name} names no transfer key: set transfer_key and transfer_secret "
                                  "under the master's entry in the daemon's config")
            return self.transfer_key, self.transfer_secret
        if purpose != "shadow":
            return self.api_key, self.api_secret
        if self.shadow_key is None or self.shadow_secret is None:
            raise ConfigError(f"account {self.name} names no shadow key: set shadow_key and shadow_secret under "
                              "its entry in the daemon's config")
        return self.shadow_key, self.shadow_secret


@dataclass(frozen=True)
class EnvironmentAccess:
    name: str
    endpoints: Endpoints
    accounts: Mapping[str, AccountAccess]
    deployer: Deployer
    bot_env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for every bot placed here (e.g. the simulator's clock speed)."""
    kind: str = "sim"
    """sim, testnet or live: what an account's key is judged against (`controller.rollout.keys`)."""


class Site:
    """``weight_share`` of each host's request weight a minute for the controller, of which
    ``act_reserve`` only acting may spend (see `controller.exchange.weights`); ``metrics``, when
    given, shows each host's gate (``canary_exchange_blocked_seconds``) and counts the requests
    it refused; ``client_type`` makes each client and ``trace_configs`` go on the sessions of the
    bot's /metrics scrapes (the synthetic harness's count their requests)."""

    def __init__(self, clock: Clock, environments: Mapping[str, EnvironmentAccess], *,
                 weight_share: float = DEFAULT_SHARE, act_reserve: float = DEFAULT_ACT_RESERVE,
                 retry: RetryPolicy | None = None, metrics: ControllerMetrics | None = None,
                 client_type: Callable[..., ExchangeClient] = ExchangeClient,
                 trace_configs: Sequence[aiohttp.TraceConfig] = ()) -> None:
        self.clock = clock
        self.client_type = client_type
        self.trace_configs = tuple(trace_configs)
        self.environments = dict(environments)
        self.weight_share = weight_share
        self.act_reserve = act_reserve
        self.retry = retry
        self.metrics = metrics
        self._clients: dict[tuple[str, str, str], ExchangeClient] = {}
        self._gates: dict[str, RequestGate] = {}  # by exchange host
        self._budgets: dict[str, WeightBudget] = {}  # by exchange host
        self._lock = asyncio.Lock()
        for name, env in self.environments.items():  # each host's gauge exists (at 0) before its first ban
            if env.endpoints.rest_url:
                self.gate(self.host(name))

    def environment(self, name: str) -> EnvironmentAccess:
        try:
            return self.environments[name]
        except KeyError:
            raise ConfigError(f"no environment {name!r} in the daemon's config "
                              f"(it has: {', '.join(sorted(self.environments))})") from None

    def account(self, environment: str, account: str) -> AccountAccess:
        env = self.environment(environment)
        try:
            return env.accounts[account]
        except KeyError:
            raise ConfigError(f"environment {environment!r} has no account {account!r} "
                              f"(it has: {', '.join(sorted(env.accounts))})") from None

    def master_of(self, environment: str) -> str | None:
        return next((a.name for a in self.environment(environment).accounts.values() if a.master), None)

    def deployer(self, environment: str) -> Deployer:
        return self.environment(environment).deployer

    @staticmethod
    def instance(environment: str, account: str) -> str:
        return f"{environment}-{account}"

    async def client(self, environment: str, account: str, *, purpose: str = "observe") -> ExchangeClient:
        """The account's client for a purpose, opened (and its clock offset synced) once; ``shadow``
        holds the account's read-only key and spends as ``observe`` does; ``transfer`` the master's
        transfer key, spending as ``act`` does.

        Every client of the environment's exchange host shares one request gate (a 429/418 holds
        back all of them, a client opened during the ban included: its time sync is not sent)
        and one weight budget, in which ``observe`` calls can never spend what is kept for
        ``act`` (rollback, placement).
        """
        async with self._lock:
            key = (environment, account, purpose)
            if key not in self._clients:
                env, access = self.environment(environment), self.account(environment, account)
                host = self.host(environment)
                options = {"retry": self.retry} if self.retry else {}
                api_key, api_secret = access.credentials(purpose)
                client = self.client_type(account=account, api_key=api_key, api_secret=api_secret,
                                          endpoints=env.endpoints, clock=self.clock,
                                          budget=self._budget(host).for_purpose(
                                              {"shadow": "observe", "transfer": "act"}.get(purpose, purpose)),
                                          gate=self.gate(host), **options)
                try:
                    await client.sync_time()
                except BaseException:
                    await client.close()
                    raise
                self._clients[key] = client
            return self._clients[key]

    def host(self, environment: str) -> str:
        """The environment's exchange host (with its port): what Binance limits and bans by."""
        return urlsplit(self.environment(environment).endpoints.rest_url).netloc

    def gate(self, host: str) -> RequestGate:
        """The host's one request gate, made on first use (and then shown in the metrics)."""
        if host not in self._gates:
            metrics = self.metrics
            gate = RequestGate(self.clock, on_refused=metrics.exchange_request_refused if metrics else None)
            if metrics is not None:
                metrics.watch_exchange_gate(host, gate.seconds_left)
            self._gates[host] = gate
        return self._gates[host]

    def _budget(self, host: str) -> WeightBudget:
        if host not in self._budgets:
            self._budgets[host] = WeightBudget(self.clock, share=self.weight_share, act_reserve=self.act_reserve)
        return self._budgets[host]

    def placement(self, environment: str, account: str, *, release: str, manifest: Mapping,
                  config_text: str, config_sha256: str, shadow: bool = False) -> Placement:
        """``shadow``: the release gets the account's read-only key and ``CANARY_SHADOW=1``."""
        env, access = self.environment(environment), self.account(environment, account)
        api_key, api_secret = access.credentials("shadow" if shadow else "act")
        exchange = {"rest_url": env.endpoints.rest_url, "ws_url": env.endpoints.ws_url,
                    "api_key": api_key, "api_secret": api_secret}
        if env.endpoints.sapi_url:
            exchange["sapi_url"] = env.endpoints.sapi_url
        return Placement(instance=self.instance(environment, account), release=release,
                         manifest=ReleaseManifest.model_validate(dict(manifest)), config_text=config_text,
                         config_sha256=config_sha256, exchange=exchange,
                         env={**env.bot_env, **({SHADOW_ENV: "1"} if shadow else {})})

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def strategy_of(config_text: str, source: str = "<snapshot>") -> StrategyConfig:
    """A config snapshot's strategy (canonical JSON is YAML too)."""
    return load_model_text(StrategyConfig, config_text, source)
