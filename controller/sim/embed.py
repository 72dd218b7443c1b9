"""The simulator as the exchange of a daemon's `kind: sim` environments, started in the daemon's process.

The daemon does not carry the simulator: `canaryctl run` and the demo hand it an
`EmbeddedSimulators`, which starts one simulator for each sim environment the daemon opens and
gives back what the daemon reaches it by (addresses, the accounts' keys and emails, each one's
read-only key as its shadow key, the master's transfer key, the bots' clock speed).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from controller.clock import Clock
from controller.config.daemon import Endpoints
from controller.deploy.base import Deployer
from controller.logs import get_logger
from controller.rollout.site import AccountAccess, EnvironmentAccess
from controller.sim.accounts import AccountSpec
from controller.sim.server import Simulator

log = get_logger(__name__)

SIM_ACCOUNTS = (AccountSpec("master", Decimal("98500"), master=True), AccountSpec("canary", Decimal("1500")))
"""The embedded simulator's accounts: a canary holding 1.5 % of capital, inside the 2 % cap with
room for the PnL of a good day (at exactly 2 % a profitable canary would breach its cap)."""
SEED = 7
"""The embedded simulator's seed: its prices and its accounts' API keys follow from it."""


class EmbeddedSimulators:
    """Starts a simulator per sim environment on ``clock``; ``speed`` is told to the bots placed there."""

    def __init__(self, clock: Clock, *, seed: int = SEED, speed: float | None = None,
                 options: Mapping[str, Any] | None = None) -> None:
        self.clock = clock
        self.seed = seed
        self.speed = speed
        self.options = dict(options or {})
        """More `Simulator` settings (tick, latency...); ``accounts`` replaces `SIM_ACCOUNTS`."""
        self.started: dict[str, Simulator] = {}

    async def open(self, environment: str, deployer: Deployer) -> EnvironmentAccess:
        """A new simulator for ``environment``, started, as the environment the daemon places releases in."""
        sim = Simulator(clock=self.clock, seed=self.seed, **{"accounts": SIM_ACCOUNTS, **self.options})
        await sim.start("127.0.0.1", 0)
        self.started[environment] = sim
        log.info("simulator_started", environment=environment, rest_url=sim.rest_url)
        accounts = {a.name: AccountAccess(a.name, a.api_key, a.api_secret, a.master, shadow_key=a.key("read-only").key,
                                          shadow_secret=a.key("read-only").secret, email=a.email,
                                          **({"transfer_key": a.key("transfer").key,
                                              "transfer_secret": a.key("transfer").secret} if a.master else {}))
                    for a in sim.accounts}
        bot_env = {"CANARY_SIM_SPEED": f"{self.speed:g}"} if self.speed else {}
        return EnvironmentAccess(environment, Endpoints(sim.rest_url, sim.ws_url, sim.sapi_url), accounts, deployer,
                                 bot_env)

    async def close(self) -> None:
        for sim in self.started.values():
            await sim.stop()
        self.started.clear()
