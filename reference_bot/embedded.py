"""The bot placed in another program's process (a harness, beside its simulator): the release's
in-process entry point, ``reference_bot.embedded:EmbeddedBot``.

    placement = EmbeddedBot(config=strategy_data, exchange=exchange_data, clock=clock,
                            settings={"interval": 45.0}, label="1.2.0", trace_configs=[counting])
    await placement.start()    # returns once it has traded once, or crashed trying
    ... placement.metrics_url ... placement.crash ...
    await placement.stop()     # as SIGTERM would: open orders canceled, /metrics closed

It takes what the process form takes from its files, already read: the strategy as a mapping
(validated by the bot's own schema), the exchange's keys and URLs, and its cadence. ``clock``
is the embedding program's (anything with ``time()`` and ``sleep()``, and ``speed``);
``trace_configs`` go on every HTTP session the bot opens, so that the program can count its
requests. A crash takes /metrics down with it, as a dead process's port closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from reference_bot.access import ExchangeAccess
from reference_bot.bot import Bot
from reference_bot.clock import Clock
from reference_bot.config import BotSettings, strategy_from
from reference_bot.exchange import FuturesAccount
from reference_bot.metrics import MetricsServer

log = logging.getLogger("reference_bot")

START_TIMEOUT = 60.0
"""Wall seconds a placed bot has to reach its first trading iteration."""


class EmbeddedBot:
    """One release of the bot running in this process: `start` it, `stop` it."""

    def __init__(self, *, config: Mapping[str, Any], exchange: Mapping[str, Any], clock: Clock,
                 settings: Mapping[str, Any] | None = None, label: str = "bot", account: str = "bot",
                 trace_configs: Sequence[aiohttp.TraceConfig] = ()) -> None:
        self.label = label
        self.exchange = FuturesAccount(ExchangeAccess.from_mapping(dict(exchange), source=f"{label}: exchange"),
                                       clock=clock, account=account, trace_configs=trace_configs)
        self.bot = Bot(config=strategy_from(config, source=f"{label}: strategy"), exchange=self.exchange,
                       clock=clock, settings=BotSettings(**(settings or {})), on_crash=self._crashed)
        self.server = MetricsServer(self.bot.metrics)
        self.task: asyncio.Task | None = None
        self.crash: BaseException | None = None
        self._metrics_down: asyncio.Task | None = None

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}/metrics"

    async def start(self) -> None:
        """Serve /metrics, start the bot, and return once it has traded once (its leverage set
        and read back, so that its first scrape already shows what it applies), or has crashed
        trying (`crash`)."""
        await self.server.start("127.0.0.1", 0)
        self.task = asyncio.create_task(self.bot.run(), name=f"bot-{self.label}")
        self.task.add_done_callback(self._ended)
        waiting = asyncio.create_task(self.bot.wait_for(lambda: self.bot.iterations >= 1, timeout=START_TIMEOUT),
                                      name=f"bot-start-{self.label}")
        done, _ = await asyncio.wait({waiting, self.task}, return_when=asyncio.FIRST_COMPLETED)
        if waiting in done:
            waiting.result()  # TimeoutError: the bot never traded
            return
        waiting.cancel()
        if self.crash is None:
            raise RuntimeError(f"the bot of {self.label} stopped before it traded")

    def _ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._crashed(task.exception())

    def _crashed(self, error: BaseException) -> None:
        """/metrics go down at the crash, as a dead process's port closes: not once the bot's other
        tasks have been cancelled and have closed their sockets, which takes the clock's time."""
        if self.crash is not None:
            return
        self.crash = error
        log.warning("bot_crashed release=%s error=%r", self.label, self.crash)
        self._metrics_down = asyncio.get_running_loop().create_task(self.server.stop(),
                                                                    name=f"bot-metrics-down-{self.label}")

    async def stop(self) -> None:
        """Stop the bot (it cancels its open orders), then its /metrics and connections; bounded."""
        if self.task is not None and not self.task.done():
            self.bot.stop()
            await asyncio.wait({self.task}, timeout=self.bot.settings.shutdown_timeout * 4)
            if not self.task.done():
                self.task.cancel()
                await asyncio.wait({self.task})
        if self._metrics_down is not None:
            await self._metrics_down
        await self.server.stop()
        await self.exchange.close()
