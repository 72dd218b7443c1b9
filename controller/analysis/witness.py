"""The bot's word against the exchange's: what a release reports, checked against the exchange's record.

The exchange is the judge and the bot a witness: a release whose ``/metrics`` say what the
exchange did not do cannot be judged by its own metrics, whatever they say. `Witness` reads both
sources' observations as the verification receives them and, on each scrape of the bot (the
moment its reports and the exchange's record describe the same time), gives observations of the
exchange source that an ordinary policy judges:

- ``witness_fill_divergence``: the orders the bot reports filled (``strategy_orders_total
  {outcome="filled"}``) against the orders of its own the exchange ended FILLED
  (``own_orders_filled``: created while the account is watched; not a predecessor's resting
  orders, nor liquidations, nor the controller's own), both counted from the bot's first scrape
  while the exchange's stream is connected (a disconnection starts both afresh: the stream's
  count misses what happened while it was down), as ``|bot - exchange| / max(2, 5 % of the
  larger)``: above 1 is beyond `FILL_TOLERANCE`. The orders the exchange saw filled but not
  created (``prior_orders_filled``: created before the watch, the release's own or a
  predecessor's, which the exchange cannot tell apart) may be in the bot's count or not: a bot
  counting at least the exchange's own and at most those as well is not diverging (a verification
  started while the release runs, its resting orders filling later, is no breach). A bot in a shadow stage paper-fills its orders
  and counts them under ``mode="shadow"``: the exchange never saw them, so they are not compared.
- ``witness_leverage_divergence{symbol}``: 1 when the bot's ``strategy_leverage_applied`` differs
  from the leverage the exchange applies to a configured symbol.
- ``witness_bucket_usage_understated{bucket}``: how far the margin the exchange holds for the
  bucket's positions (notional / configured leverage / capital, as the bot defines its usage)
  exceeds the bot's ``strategy_bucket_usage_ratio``; the bot's figure also counts its open and
  pending orders, so an honest bot reports at least the exchange's. The exchange's exposure is
  over the account's starting capital, while a bot may measure against its wallet now: after a
  profit (``pnl_ratio`` > 0) the exchange's figure is divided by 1 + the profit, so a profitable
  honest bot is not taken for one that understates (a loss is not credited: fail closed).

Pure: no clock, no I/O; counters are followed through resets as Prometheus' ``increase`` does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controller.analysis.observation import Labels, Observation, labels_of
from controller.config.strategy import StrategyConfig

SOURCE = "exchange"
"""The source of what the witness gives: the exchange's record is what it is judged by, and the
exchange's heartbeats say whether that record is fresh."""
BOT = "bot"
BOT_ORDERS = "strategy_orders_total"
BOT_LEVERAGE = "strategy_leverage_applied"
BOT_BUCKET_USAGE = "strategy_bucket_usage_ratio"


@dataclass(frozen=True)
class FillTolerance:
    """How far two fill counts may differ: events in flight between the two streams."""

    absolute: float = 2.0
    relative: float = 0.05

    def of(self, bot: float, exchange: float) -> float:
        return max(self.absolute, self.relative * max(bot, exchange))


FILL_TOLERANCE = FillTolerance()


class Witness:
    """Compares one release's bot metrics with its account's exchange observations."""

    def __init__(self, config: StrategyConfig, *, tolerance: FillTolerance = FILL_TOLERANCE) -> None:
        self.config = config
        self.tolerance = tolerance
        self._bot_filled: float | None = None      # the bot's running total at its last scrape
        self._bot_increase = 0.0                   # its increase since the first scrape
        self._exchange_filled: float | None = None  # the exchange's running total now
        self._exchange_start: float | None = None   # ... when the bot was first scraped
        self._prior_filled = 0.0                    # the exchange's fills of orders created before it watched
        self._prior_start = 0.0                     # ... when the bot was first scraped
        self._connected = False  # the exchange's stream is connected: its count of fills is complete
        self._applied: dict[str, float] = {}
        self._exposure: dict[str, float] = {}
        self._growth = 0.0  # the account's profit over its starting capital, when positive
        self._symbol_labels = {s: labels_of(symbol=s) for s in config.symbols}
        self._bucket_labels = {b: labels_of(bucket=b) for b in config.buckets}

    def observe(self, obs: Observation) -> list[Observation]:
        """Take one observation of either source; what the comparison gives, if it is a bot scrape."""
        if obs.source == SOURCE:
            self._on_exchange(obs)
            return []
        if obs.source != BOT or not math.isfinite(obs.value):
            return []  # the evaluator refuses and counts a bot's NaN; it must not poison a running count
        if obs.metric == BOT_ORDERS and obs.label("outcome") == "filled" and obs.label("mode") != "shadow":
            return self._fills(obs)
        if obs.metric == BOT_LEVERAGE:
            return self._leverage(obs)
        if obs.metric == BOT_BUCKET_USAGE:
            return self._bucket_usage(obs)
        return []

    def _on_exchange(self, obs: Observation) -> None:
        if obs.metric == "own_orders_filled":
            self._exchange_filled = obs.value
        elif obs.metric == "prior_orders_filled":
            self._prior_filled = obs.value
        elif obs.metric == "stream_connected":
            self._connected = obs.value == 1
            if not self._connected:  # fills while it is down are never counted: start both counts afresh
                self._bot_filled = None
                self._bot_increase = 0.0
        elif obs.metric == "leverage_applied":
            self._applied[obs.label("symbol") or ""] = obs.value
        elif obs.metric == "exposure_ratio":
            self._exposure[obs.label("symbol") or ""] = obs.value
        elif obs.metric == "pnl_ratio" and math.isfinite(obs.value):
            self._growth = max(0.0, obs.value)

    def _fills(self, obs: Observation) -> list[Observation]:
        if self._exchange_filled is None or not self._connected:
            return []  # the exchange's count is not known, or not complete: nothing to compare with
        if self._bot_filled is None:  # the first scrape: both counts start here
            self._bot_filled, self._exchange_start = obs.value, self._exchange_filled
            self._prior_start = self._prior_filled
            return [self._out("witness_fill_divergence", (), 0.0, obs.ts)]
        # A running total that fell is a restarted bot: its new total is all increase.
        self._bot_increase += obs.value - self._bot_filled if obs.value >= self._bot_filled else obs.value
        self._bot_filled = obs.value
        exchange = self._exchange_filled - (self._exchange_start or 0.0)
        prior = max(0.0, self._prior_filled - self._prior_start)
        bot = self._bot_increase
        gap = exchange - bot if bot < exchange else max(0.0, bot - exchange - prior)
        divergence = gap / self.tolerance.of(bot, exchange)
        return [self._out("witness_fill_divergence", (), divergence, obs.ts)]

    def _leverage(self, obs: Observation) -> list[Observation]:
        symbol = obs.label("symbol")
        applied = self._applied.get(symbol or "")
        if symbol not in self._symbol_labels or applied is None:
            return []  # a symbol outside the config is the foreign-activity policy's; unknown: no evidence
        return [self._out("witness_leverage_divergence", self._symbol_labels[symbol], float(obs.value != applied),
                          obs.ts)]

    def _bucket_usage(self, obs: Observation) -> list[Observation]:
        bucket = self.config.buckets.get(obs.label("bucket") or "")
        if bucket is None:
            return []
        if any(s not in self._exposure for s in bucket.symbols):
            return []  # the exchange has not valued every position of the bucket yet
        held = sum(self._exposure[s] / self.config.symbols[s].leverage for s in bucket.symbols) / (1 + self._growth)
        name = obs.label("bucket") or ""
        return [self._out("witness_bucket_usage_understated", self._bucket_labels[name], max(0.0, held - obs.value),
                          obs.ts)]

    @staticmethod
    def _out(metric: str, labels: Labels, value: float, ts: float) -> Observation:
        return Observation(SOURCE, metric, labels, value, ts)
