"""Where releases run: each environment's exchange address, its accounts' keys and its deployer.

The engine and the rollback reach the world only through a `Site`: it opens (and keeps) one
exchange client per account, names the deployer instance of an account, and builds the
`Placement` that puts a release with its config snapshot on an account. Keys stay inside.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from controller.clock import Clock
from controller.config.daemon import Endpoints
from controller.config.manifest import ReleaseManifest
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model_text
from controller.deploy.base import Deployer, Placement
from controller.errors import ConfigError
from controller.exchange.client import ExchangeClient, RetryPolicy
from controller.exchange.weights import WeightBudget


@dataclass(frozen=True)
class AccountAccess:
    name: str
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)
    master: bool = False


@dataclass(frozen=True)
class EnvironmentAccess:
    name: str
    endpoints: Endpoints
    accounts: Mapping[str, AccountAccess]
    deployer: Deployer
    bot_env: Mapping[str, str] = field(default_factory=dict)
    """Extra environment for every bot placed here (e.g. the simulator's clock speed)."""


class Site:
    def __init__(self, clock: Clock, environments: Mapping[str, EnvironmentAccess], *,
                 weight_share: float = 0.1, retry: RetryPolicy | None = None) -> None:
        self.clock = clock
        self.environments = dict(environments)
        self.weight_share = weight_share
        self.retry = retry
        self._clients: dict[tuple[str, str, str], ExchangeClient] = {}
        self._budgets: dict[tuple[str, str], WeightBudget] = {}
        self._lock = asyncio.Lock()

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
        """The account's client for a purpose, opened (and its clock offset synced) once.

        ``observe`` and ``act`` draw on separate request-weight budgets, so that watching many
        symbols can never starve a rollback of the weight it needs to cancel and restore.
        """
        async with self._lock:
            key = (environment, account, purpose)
            if key not in self._clients:
                env, access = self.environment(environment), self.account(environment, account)
                budget = self._budgets.setdefault((environment, purpose),
                                                  WeightBudget(self.clock, share=self.weight_share))
                options = {"retry": self.retry} if self.retry else {}
                client = ExchangeClient(account=account, api_key=access.api_key, api_secret=access.api_secret,
                                        endpoints=env.endpoints, clock=self.clock, budget=budget, **options)
                await client.sync_time()
                self._clients[key] = client
            return self._clients[key]

    def placement(self, environment: str, account: str, *, release: str, manifest: Mapping,
                  config_text: str, config_sha256: str) -> Placement:
        env, access = self.environment(environment), self.account(environment, account)
        exchange = {"rest_url": env.endpoints.rest_url, "ws_url": env.endpoints.ws_url,
                    "api_key": access.api_key, "api_secret": access.api_secret}
        if env.endpoints.sapi_url:
            exchange["sapi_url"] = env.endpoints.sapi_url
        return Placement(instance=self.instance(environment, account), release=release,
                         manifest=ReleaseManifest.model_validate(dict(manifest)), config_text=config_text,
                         config_sha256=config_sha256, exchange=exchange, env=dict(env.bot_env))

    async def close(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()


def strategy_of(config_text: str, source: str = "<snapshot>") -> StrategyConfig:
    """A config snapshot's strategy (canonical JSON is YAML too)."""
    return load_model_text(StrategyConfig, config_text, source)
