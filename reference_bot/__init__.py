"""The reference strategy bot: a release like any user's bot. It trades a strategy file on Binance
USD-M futures (or the controller's simulator) through python-binance and exports the checklist's
``strategy_*`` metrics.

A release of it can carry deliberate defects (``bot: defects:`` in its strategy file, see
`reference_bot.defects`), so that the canary, the harness and the tests have something real to
catch. Run it with ``python -m reference_bot --config FILE --exchange FILE``, or in process
with `Bot`.
"""

from reference_bot.access import Endpoints, ExchangeAccess
from reference_bot.bot import Bot
from reference_bot.config import BotSettings, Strategy, load_strategy
from reference_bot.defects import DeliberateDefect
from reference_bot.errors import BotError, ConfigError
from reference_bot.metrics import OUTCOMES, BotMetrics, MetricsServer

__all__ = ["OUTCOMES", "Bot", "BotError", "BotMetrics", "BotSettings", "ConfigError", "DeliberateDefect", "Endpoints",
           "ExchangeAccess", "MetricsServer", "Strategy", "load_strategy"]
