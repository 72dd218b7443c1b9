"""The reference strategy bot: trades a strategy config on the simulator (or any Binance USD-M
futures endpoint) through the exchange layer and exports the checklist's ``strategy_*`` metrics.

A release of it can carry deliberate defects (``defects:`` in its strategy config, see
`controller.sim.bot.defects`), so that the canary, the harness and the tests have something real
to catch. Run it with ``python -m controller.sim.bot --config FILE --exchange FILE``, or in
process with `Bot`.
"""

from controller.sim.bot.bot import Bot, BotError
from controller.sim.bot.config import BotSettings, ExchangeAccess
from controller.sim.bot.defects import DeliberateDefect
from controller.sim.bot.metrics import OUTCOMES, BotMetrics, MetricsServer

__all__ = ["OUTCOMES", "Bot", "BotError", "BotMetrics", "BotSettings", "DeliberateDefect", "ExchangeAccess",
           "MetricsServer"]
