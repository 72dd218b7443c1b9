"""The release under test, as the harness places it: a strategy, and the reference bot trading it
in this process on the simulator, with its own exchange client and /metrics.

Placing a release with a defect, and rolling back to the healthy one, both stop the running
bot and start a new one, as a new release's process would start: counters begin at zero, the
leverage is set again, and open orders left by the old one are canceled on start.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from controller.clock import Clock
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model
from controller.errors import InputError
from controller.exchange.client import ExchangeClient
from reference_bot import Bot, BotSettings, MetricsServer
from reference_bot.config import strategy_from

log = logging.getLogger(__name__)

REFERENCE_STRATEGY = Path(__file__).resolve().parents[2] / "examples" / "reference-bot" / "strategy.yaml"

START_TIMEOUT = 60.0
"""Wall seconds a placed bot has to reach its first trading iteration."""


def load_strategy(path: Path | None = None) -> StrategyConfig:
    """A strategy file (default: the reference bot's); refusals name the file, line and field."""
    return load_model(StrategyConfig, path or REFERENCE_STRATEGY)


def limit_symbols(strategy: StrategyConfig, count: int | None) -> StrategyConfig:
    """The strategy trading only its first ``count`` symbols (in file order); buckets keep their
    allocation and lose the symbols left out, and a bucket left empty goes."""
    total = len(strategy.symbols)
    if count is None or count == total:
        return strategy
    if not 1 <= count <= total:
        raise InputError(f"--symbols {count}: the strategy trades {total} symbol{'s' * (total != 1)} "
                         f"({', '.join(strategy.symbols)}); give 1 to {total}")
    kept = list(strategy.symbols)[:count]
    data = strategy.model_dump(mode="json")
    data["symbols"] = {s: data["symbols"][s] for s in kept}
    data["buckets"] = {name: {**bucket, "symbols": [s for s in bucket["symbols"] if s in kept]}
                       for name, bucket in data["buckets"].items() if any(s in kept for s in bucket["symbols"])}
    return StrategyConfig.model_validate(data)


def with_defects(strategy: StrategyConfig, defects: dict[str, Any]) -> StrategyConfig:
    """The strategy of a release carrying ``defects`` (in the release's own ``bot:`` section)."""
    data = strategy.model_dump(mode="json")
    return StrategyConfig.model_validate({**data, "bot": {**data["bot"], "defects": defects}})


class Placement:
    """One release's bot running in this process: `start` it, `stop` it (as SIGTERM would).

    A bot that crashes takes its /metrics down with it, as a dead process's port closes.
    """

    def __init__(self, *, config: StrategyConfig, client: ExchangeClient, clock: Clock, settings: BotSettings,
                 label: str) -> None:
        self.config = config
        self.client = client
        self.label = label
        self.bot = Bot(config=strategy_from(config.model_dump(mode="json")), client=client, clock=clock, settings=settings)
        self.server = MetricsServer(self.bot.metrics)
        self.port: int | None = None
        self.task: asyncio.Task | None = None
        self.crash: BaseException | None = None
        self._metrics_down: asyncio.Task | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    async def start(self) -> None:
        """Serve /metrics, start the bot, and return once it has traded once (its leverage set
        and read back, so that its first scrape already shows what it applies), or has crashed
        trying (`crash`)."""
        self.port = await self.server.start("127.0.0.1", 0)
        self.task = asyncio.create_task(self.bot.run(), name=f"harness-bot-{self.label}")
        self.task.add_done_callback(self._ended)
        waiting = asyncio.create_task(self.bot.wait_for(lambda: self.bot.iterations >= 1, timeout=START_TIMEOUT),
                                      name=f"harness-bot-start-{self.label}")
        done, _ = await asyncio.wait({waiting, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if waiting in done:
            waiting.result()  # TimeoutError: the bot never traded
            return
        waiting.cancel()
        if self.crash is None:
            raise RuntimeError(f"the bot of {self.label} stopped before it traded")

    def _ended(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.crash = task.exception()
        log.warning("harness_bot_crashed release=%s error=%r", self.label, self.crash)
        self._metrics_down = asyncio.get_running_loop().create_task(self.server.stop(),
                                                                    name=f"harness-metrics-down-{self.label}")

    async def stop(self) -> None:
        """Stop the bot (it cancels its open orders), then its /metrics; bounded."""
        if self.task is not None and not self.task.done():
            self.bot.stop()
            await asyncio.wait({self.task}, timeout=self.bot.settings.shutdown_timeout * 4)
            if not self.task.done():
                self.task.cancel()
                await asyncio.wait({self.task})
        if self._metrics_down is not None:
            await self._metrics_down
        await self.server.stop()
