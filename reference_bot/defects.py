"""The deliberate defects a release of the reference bot can carry (``bot: defects:`` in its strategy).

Each one is a small, realistic bug that moves the metrics a canary watches:

- ``wrong_leverage``: the leverage set on the exchange for one symbol is not the configured one,
  while ``strategy_leverage_configured`` still shows the configured one. Moves
  ``strategy_leverage_applied{symbol}`` and ``strategy_leverage_mismatch_total``.
- ``oversized_orders``: orders are that many times the size their bucket gives them; the
  bucket check still counts the intended size. Moves ``strategy_bucket_usage_ratio{bucket}``
  above ``strategy_bucket_allocation_ratio{bucket}``.
- ``slow_signal_seconds``: that much is added between a signal and its orders. Moves
  ``strategy_signal_latency_seconds``.
- ``unhandled_exception_after_seconds``: that long after trading starts, the trading task
  raises an exception nothing handles. The bot stops (open orders are left as a crashed
  process leaves them), logs ``bot_crashed`` with the Python traceback on standard error and
  exits with status 1.
- ``rejected_orders_burst``: on the first trading iteration, that many orders the exchange
  refuses (below its minimum notional, or above its maximum quantity). Moves
  ``strategy_orders_total{outcome="rejected"}`` and the order queue metrics.
- ``oversized_exits``: reduce-only closes are sent for that many times the position (a close
  sized from books that count the position twice). The exchange closes the position and
  expires the rest of the order. Moves the exchange's ``order_outcomes{outcome="expired"}``;
  the bot counts these orders as expired, not as failed.
- ``exits_never_sent``: the close path drops its orders, so a position, once opened, is never
  closed and its symbol never stops holding margin. Stops ``strategy_bucket_unlocks_total``
  once every symbol of a bucket holds a position.
- ``trades_in_shadow``: in shadow mode (``CANARY_SHADOW=1``) the orders are sent to the exchange
  anyway instead of being paper-filled (a release that ignores the mode). With a read-only key the
  exchange refuses each one (-2015): ``strategy_orders_total{outcome="rejected"}``; with a key that
  can trade they land, and the exchange's ``orders_placed`` shows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from decimal import Decimal

from reference_bot.config import Defects, Strategy
from reference_bot.ledger import DEFECT, EXIT
from reference_bot.payloads import TradingRules
from reference_bot.strategy import Command, PlaceOrder

ONE = Decimal(1)
HUGE_QUANTITY_STEPS = Decimal(10) ** 12  # above every symbol's maximum quantity


class DeliberateDefect(RuntimeError):
    """Raised on purpose by a release carrying ``unhandled_exception_after_seconds``."""


def leverage_to_set(defects: Defects, symbol: str, configured: int) -> int:
    wrong = defects.wrong_leverage
    return wrong.leverage if wrong is not None and wrong.symbol == symbol else configured


def size_factor(defects: Defects) -> Decimal:
    return defects.oversized_orders or ONE


def signal_delay(defects: Defects) -> float:
    return float(defects.slow_signal_seconds or 0)


def alter_exits(defects: Defects, commands: Sequence[Command], rules: TradingRules) -> list[Command]:
    """The closes among ``commands`` as a release with ``exits_never_sent`` or
    ``oversized_exits`` sends them: dropped, or that many times their size."""
    def is_exit(command: Command) -> bool:
        return isinstance(command, PlaceOrder) and command.purpose == EXIT

    if defects.exits_never_sent:
        return [c for c in commands if not is_exit(c)]
    factor = defects.oversized_exits
    if factor is None:
        return list(commands)
    return [replace(c, quantity=rules.round_quantity(c.quantity * factor)) if is_exit(c) else c for c in commands]


def crash_if_due(defects: Defects, trading_since: float, now: float) -> None:
    after = defects.unhandled_exception_after_seconds
    if after is not None and now - trading_since >= float(after):
        raise DeliberateDefect(f"deliberate defect: unhandled exception in the trading task after {after} s "
                               "(bot.defects.unhandled_exception_after_seconds)")


def rejected_burst(config: Strategy, filters: Mapping[str, TradingRules],
                   marks: Mapping[str, Decimal]) -> list[PlaceOrder]:
    """``rejected_orders_burst`` limit orders the exchange must refuse.

    One step of a symbol whose step is worth less than its minimum notional (-4164), or, if no
    configured symbol has one, a quantity above the maximum (-4005).
    """
    count = config.defects.rejected_orders_burst or 0
    priced = [s for s in config.symbols if s in marks and s in filters and marks[s] > 0]
    if not count or not priced:
        return []
    tiny = [s for s in priced if filters[s].step_size * filters[s].round_price(marks[s]) < filters[s].min_notional]
    symbol = (tiny or priced)[0]
    rules = filters[symbol]
    price = rules.round_price(marks[symbol])
    quantity = rules.step_size if tiny else (rules.step_size * HUGE_QUANTITY_STEPS).quantize(rules.step_size)
    return [PlaceOrder(symbol=symbol, side="BUY", order_type="LIMIT", quantity=quantity, price=price,
                       reference_price=price, purpose=DEFECT) for _ in range(count)]
