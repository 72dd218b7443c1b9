"""The reference strategy bot: trades a strategy config on one account and exports ``strategy_*``.

    bot = Bot(config=strategy, exchange=exchange, clock=clock, settings=BotSettings(interval=1.0))
    task = asyncio.create_task(bot.run())
    ...
    bot.stop()
    await task

Life, top to bottom: `_start` (time sync, trading rules, a clean slate of orders, margin type
and leverage per symbol, then a first reconciliation that reads the leverage back and the
capital); four named tasks (user-data stream, reconciliation, order sender, trading loop), a
fifth in streaming mode (`bot: stream_prices: true`: the mark price stream, waited for like the
user-data stream) until `stop()`; then shutdown: stop trading, finish the order in flight and drop the queued
ones, cancel every open order while the stream still reports the cancellations. Each
shutdown step is bounded by ``settings.shutdown_timeout``.

A crash (an exception no task handles, such as the deliberate defect) ends `run()` with that
exception, and open orders stay as a crashed process would leave them: cleaning up after a
bad release is the controller's rollback. The bot owns neither its exchange connection nor
the metrics server; whoever made them closes them.

Shadow mode (``settings.shadow``, ``CANARY_SHADOW=1``: the release holds a read-only key): the
bot reads everything as usual and changes nothing on the account: no cancel, margin type or
leverage at the start or at shutdown, and its orders fill on paper at the mark price
(`OrderSender`), counted under ``mode="shadow"``; its positions are its paper book's, not the
exchange's (which holds none).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from decimal import Decimal

from reference_bot import defects
from reference_bot.clock import Clock, Stopwatch
from reference_bot.config import BotSettings, Strategy
from reference_bot.errors import BotError, ExchangeError, NotApplied, Rejected, Unauthorized
from reference_bot.exchange import FuturesAccount
from reference_bot.payloads import (
    Event,
    LeverageEvent,
    OpenOrder,
    OrderEvent,
    Position,
    PositionEvent,
    StreamEvent,
    TradingRules,
)
from reference_bot.ledger import TERMINAL, Ledger, TrackedOrder
from reference_bot.metrics import BotMetrics
from reference_bot.orders import OrderSender
from reference_bot.prices import MarkPriceFeed
from reference_bot.strategy import Command, Direction, Signal, SymbolView, decide, size_entry
from reference_bot.stream import UserStream

log = logging.getLogger("reference_bot")

ZERO = Decimal(0)


class Bot:
    """Trades ``config`` through ``exchange`` on ``clock``'s time, reporting to ``metrics``."""

    def __init__(self, *, config: Strategy, exchange: FuturesAccount, clock: Clock,
                 metrics: BotMetrics | None = None, settings: BotSettings | None = None,
                 on_crash: Callable[[BaseException], None] = lambda error: None) -> None:
        """``on_crash``: told at once when one of the bot's tasks fails, before the others have
        been cancelled and `run()` raises (a process would be gone at that moment)."""
        self.config = config
        self.on_crash = on_crash
        self.exchange = exchange
        self.clock = clock
        self.stopwatch = Stopwatch(clock)
        self.settings = settings or BotSettings()
        self.metrics = metrics or BotMetrics(symbols=config.symbols, buckets=config.buckets,
                                             shadow=self.settings.shadow)
        self.paper = self.settings.shadow and not config.defects.trades_in_shadow
        """Orders fill on paper, and positions are the bot's own book (shadow mode)."""
        self.ledger = Ledger(config)
        self.signal = Signal(self.settings.seed, config.symbols)
        self.filters: dict[str, TradingRules] = {}
        self.applied: dict[str, int] = {}
        self.iterations = 0
        self.orders = OrderSender(exchange=exchange, stopwatch=self.stopwatch, ledger=self.ledger,
                                  metrics=self.metrics, on_change=self._publish, paper=self.paper)
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._stream_up = asyncio.Event()
        self._burst_sent = False
        self.prices = (MarkPriceFeed(exchange, config.symbols, max_age=self.settings.price_max_age)
                       if config.bot.stream_prices else None)

    # --- lifecycle --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Start, trade until `stop()`, shut down. Raises what crashed it, unwrapped."""
        await self._start()
        stream = UserStream(self.exchange, self._on_event)
        try:
            async with asyncio.TaskGroup() as group:
                def task(coro, name: str) -> asyncio.Task:
                    started = group.create_task(coro, name=name)
                    started.add_done_callback(self._task_ended)
                    return started

                listening = task(stream.run(), "bot-user-stream")
                pricing = task(self.prices.run(), "bot-mark-prices") if self.prices else None
                await self._wait_for_stream()
                if self.prices is not None:
                    await self._wait_for_prices(self.prices)
                reconciling = task(self._reconcile_forever(), "bot-reconcile")
                sender = task(self.orders.run(), "bot-order-sender")
                trading = task(self._trade_forever(), "bot-trading")
                await self._stop.wait()
                log.info("bot_stopping iterations=%d open_orders=%d", self.iterations, len(self.ledger.orders))
                self.orders.stop_taking()
                trading.cancel()
                await asyncio.wait({trading})
                await self.orders.drain(self.settings.shutdown_timeout)
                sender.cancel()
                await self._cancel_open_orders()
                listening.cancel()
                reconciling.cancel()
                if pricing is not None:
                    pricing.cancel()
        except BaseExceptionGroup as group:
            # One real traceback, the crashing task's, rather than a group of one.
            raise group.exceptions[0] from None
        log.info("bot_stopped iterations=%d orders_filled=%d", self.iterations,
                 int(self.metrics.value("strategy_orders_total", outcome="filled") or 0))

    def _task_ended(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.on_crash(task.exception())

    def stop(self) -> None:
        """Ask the bot to stop (safe from a signal handler); `run()` returns once it has."""
        self._stop.set()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds; it is re-checked whenever the bot's state changes."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def _start(self) -> None:
        config, exchange = self.config, self.exchange
        step = "synchronising time with the exchange"
        try:
            await exchange.sync_time()
            step = "reading the exchange's trading rules"
            rules = await exchange.trading_rules()
            unknown = [s for s in config.symbols if s not in rules]
            if unknown:
                raise BotError(f"the exchange does not trade {', '.join(unknown)}; "
                               "remove it from the strategy's symbols")
            self.filters = {s: rules[s] for s in config.symbols}
            for symbol, settings in config.symbols.items():
                self.metrics.leverage_configured.labels(symbol).set(settings.leverage)
                if self.settings.shadow:
                    continue  # a read-only key: the placement set margin type and leverage, read back below
                step = f"canceling {symbol} orders left by an earlier run"
                await exchange.cancel_all_orders(symbol)
                step = f"setting {symbol} margin type to {settings.margin_type}"
                await self._set_margin_type(symbol, settings.margin_type)
                leverage = defects.leverage_to_set(config.defects, symbol, settings.leverage)
                step = f"setting {symbol} leverage to {leverage}"
                await self._set_leverage(symbol, leverage)
            for name, bucket in config.buckets.items():
                self.metrics.bucket_allocation.labels(name).set(float(bucket.allocation))
            step = "reading leverage, positions and capital back"
            await self._reconcile()
        except ExchangeError as exc:
            raise BotError(f"cannot start on account {exchange.account}: {step}: {exc}") from None
        if self.ledger.capital <= 0:
            raise BotError(f"account {exchange.account} has no capital (wallet balance {self.ledger.capital}); "
                           "fund it or point the exchange file at another account")
        log.info("bot_started account=%s symbols=%d capital=%s leverage=%s mode=%s", exchange.account,
                 len(config.symbols), self.ledger.capital,
                 ",".join(f"{s}:{v}" for s, v in sorted(self.applied.items())),
                 "shadow" if self.settings.shadow else "trade")

    async def _set_margin_type(self, symbol: str, margin_type: str) -> None:
        try:
            await self.exchange.set_margin_type(symbol, margin_type)
        except Rejected as exc:
            if isinstance(exc, Unauthorized):
                raise
            # A position or open order blocks the change (-4047/-4048): trade on as it is.
            log.warning("margin_type_unchanged symbol=%s wanted=%s error=%s", symbol, margin_type, exc)

    async def _set_leverage(self, symbol: str, leverage: int) -> None:
        try:
            await self.exchange.set_leverage(symbol, leverage)
        except NotApplied as exc:  # the read-back in _reconcile measures what really applies
            log.warning("leverage_not_applied symbol=%s leverage=%d error=%s", symbol, leverage, exc)
        else:
            log.info("leverage_set symbol=%s leverage=%d", symbol, leverage)

    async def _wait_for_stream(self) -> None:
        waits = [asyncio.create_task(self._stream_up.wait(), name="bot-wait-stream"),
                 asyncio.create_task(self._stop.wait(), name="bot-wait-stop")]
        done, pending = await asyncio.wait(waits, timeout=self.settings.stream_timeout,
                                           return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if not done:
            log.warning("user_stream_not_connected after_seconds=%s: trading on REST reconciliation alone",
                        self.settings.stream_timeout)

    async def _wait_for_prices(self, prices: MarkPriceFeed) -> None:
        try:
            async with asyncio.timeout(self.settings.stream_timeout):
                await prices.wait_fresh()
        except TimeoutError:
            log.warning("mark_price_stream_silent after_seconds=%s: reading prices over REST until it speaks",
                        self.settings.stream_timeout)

    async def _cancel_open_orders(self) -> None:
        """Cancel every open order of every symbol, concurrently, then count what was canceled."""
        if self.paper:
            return  # paper orders never rest, and a read-only key may not cancel
        symbols = list(self.config.symbols)
        try:
            async with asyncio.timeout(self.settings.shutdown_timeout):
                results = await asyncio.gather(*(self.exchange.cancel_all_orders(s) for s in symbols),
                                               return_exceptions=True)
        except TimeoutError:
            log.error("cancel_open_orders_timed_out after_seconds=%s", self.settings.shutdown_timeout)
            return
        for symbol, result in zip(symbols, results):
            if isinstance(result, BaseException):
                log.error("cancel_open_orders_failed symbol=%s error=%s", symbol, result)
            else:
                self.ledger.request_cancel(symbol)

        def reported() -> bool:
            return not any(o.cancel_requested for o in self.ledger.orders.values())

        try:
            await self.wait_for(reported, timeout=min(1.0, self.settings.shutdown_timeout))
        except TimeoutError:
            pass
        for order in [o for o in self.ledger.orders.values() if o.cancel_requested]:
            self.orders.finish(order.client_order_id, "canceled", "at shutdown; not yet reported by the stream")
        log.info("open_orders_canceled symbols=%d", len(symbols))

    # --- trading ----------------------------------------------------------------------------------

    async def _trade_forever(self) -> None:
        since = self.clock.time()
        next_at = since
        while True:
            defects.crash_if_due(self.config.defects, since, self.clock.time())
            await self._iteration()
            next_at += self.settings.interval
            now = self.clock.time()
            next_at = max(next_at, now)  # an overrun skips iterations rather than bursting to catch up
            await self.clock.sleep(next_at - now)

    async def _iteration(self) -> None:
        marks = self.prices.fresh() if self.prices is not None else None
        if marks is None:
            try:
                marks = await self.exchange.mark_prices()
            except ExchangeError as exc:
                log.warning("mark_prices_unavailable error=%s", exc)
                return
        signal_at = self.clock.time()
        signaled = self.stopwatch.start()
        for symbol in self.config.symbols:
            if symbol in marks:
                self.ledger.marks[symbol] = marks[symbol]
        commands: list[Command] = []
        if not self._burst_sent:
            self._burst_sent = True
            commands += [self.orders.register(c, signal_at, None)
                         for c in defects.rejected_burst(self.config, self.filters, self.ledger.marks)]
        for symbol in self.config.symbols:
            direction = self.signal.next(symbol)  # every symbol, every iteration: the sequence stays seeded
            if symbol in marks:
                # Registered at once: the next symbol of the same bucket sees this entry's margin.
                commands += [self.orders.register(c, signal_at, signaled)
                             for c in self._decide(symbol, direction, signal_at)]
        delay = defects.signal_delay(self.config.defects)
        try:
            if delay and commands:
                await self.stopwatch.delay(delay)  # as much of the measured latency as it says
        finally:  # even when stopped meanwhile: the drain then drops them, and the books stay exact
            for command in commands:
                self.orders.enqueue(command)
        self.iterations += 1
        self._publish()

    def _decide(self, symbol: str, direction: Direction, now: float) -> list[Command]:
        config, ledger = self.config, self.ledger
        bucket = config.bucket_of(symbol)
        room = config.buckets[bucket].allocation * ledger.capital - ledger.bucket_margin(bucket)
        mark = ledger.marks[symbol]
        entry = size_entry(config, symbol, ledger.capital, mark, self.filters[symbol],
                           factor=defects.size_factor(config.defects))
        view = SymbolView(symbol, ledger.position(symbol), mark, ledger.orders_of(symbol),
                          cancel_queued=self.orders.cancel_queued(symbol))
        commands = decide(direction, view, entry, room=room, now=now, ttl=self.settings.entry_ttl,
                          max_open=config.sizing.max_open_orders_per_symbol)
        return defects.alter_exits(config.defects, commands, self.filters[symbol])

    # --- what the exchange says -------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """The user-data stream's sink: order outcomes, positions, leverage changes."""
        if isinstance(event, OrderEvent):
            ended = self.ledger.on_order_update(event)
            if ended is not None:
                self.orders.count(*ended)
        elif isinstance(event, PositionEvent):
            if not self.paper:
                self.ledger.set_position(event.symbol, event.amount)
        elif isinstance(event, LeverageEvent):
            if event.symbol in self.config.symbols:
                self._observe_leverage(event.symbol, event.leverage)
        elif isinstance(event, StreamEvent):
            if event.connected:
                self._stream_up.set()
        self._publish()

    async def _reconcile_forever(self) -> None:
        while True:
            await self.clock.sleep(self.settings.reconcile_every)
            try:
                await self._reconcile()
            except ExchangeError as exc:  # the margin fractions go stale: their timestamps show it
                log.warning("reconcile_failed error=%s", exc)

    async def _reconcile(self) -> None:
        """Read the exchange's view: applied leverage, capital, positions, open orders."""
        exchange, symbols = self.exchange, list(self.config.symbols)
        started = self.clock.time()
        versions = {s: self.ledger.position_version(s) for s in symbols}
        leverages = {s: v for s, v in (await exchange.leverages()).items() if s in self.config.symbols}
        positions = {s: p for s, p in (await exchange.positions()).items() if s in self.config.symbols}
        open_orders = await exchange.open_orders_of(symbols)
        capital = await exchange.wallet_balance()
        for symbol, leverage in leverages.items():
            self._observe_leverage(symbol, leverage)
        if capital > 0:
            self.ledger.capital = capital
        for symbol in symbols:
            position = positions.get(symbol)
            if position is not None and position.mark_price > 0:
                self.ledger.marks[symbol] = position.mark_price
            if not self.paper:  # on paper the bot's book is the position: the exchange holds none
                self.ledger.set_position(symbol, position.amount if position else ZERO,
                                         unless_changed_since=versions[symbol])
        self._publish_margin_fractions(positions, open_orders)
        listed = {o.client_order_id for orders in open_orders.values() for o in orders}
        for order in list(self.ledger.orders.values()):
            if order.order_id is not None and order.created_at < started and order.client_order_id not in listed:
                await self._resolve(order)
        self._publish()

    async def _resolve(self, order: TrackedOrder) -> None:
        """An order the exchange no longer lists as open, whose end the stream did not report."""
        status = await self.exchange.order_status(order.symbol, order.client_order_id)
        if self.ledger.is_finished(order.client_order_id):
            return  # the stream reported it meanwhile
        if status is None:
            self.orders.finish(order.client_order_id, "error", "the exchange does not know this acknowledged order")
            return
        outcome = TERMINAL.get(status)
        if outcome is not None:
            self.orders.finish(order.client_order_id, outcome)

    def _observe_leverage(self, symbol: str, applied: int) -> None:
        self.applied[symbol] = applied
        self.metrics.leverage_applied.labels(symbol).set(applied)
        configured = self.config.symbols[symbol].leverage
        if applied != configured:
            self.metrics.leverage_mismatch.inc()
            log.warning("leverage_mismatch symbol=%s configured=%d applied=%d", symbol, configured, applied)

    # --- metrics ----------------------------------------------------------------------------------

    def _publish(self) -> None:
        """Bucket usage and lock/unlock transitions from the books; wake `wait_for`."""
        for bucket in self.config.buckets:
            self.metrics.bucket_usage.labels(bucket).set(float(self.ledger.usage(bucket)))
        for symbol, locked in self.ledger.lock_changes():
            bucket = self.config.bucket_of(symbol)
            (self.metrics.bucket_locks if locked else self.metrics.bucket_unlocks).labels(bucket).inc()
        self._changed.set()

    def _publish_margin_fractions(self, positions: dict[str, Position],
                                  open_orders: dict[str, list[OpenOrder]]) -> None:
        """The margin the exchange holds per bucket (at the applied leverage) over its allocated margin."""
        now = self.clock.time()
        for name, bucket in self.config.buckets.items():
            held = ZERO
            for symbol in bucket.symbols:
                leverage = self.applied.get(symbol) or self.config.symbols[symbol].leverage
                position = positions.get(symbol)
                exposure = abs(position.amount) * position.mark_price if position else ZERO
                exposure += sum(((o.quantity - o.filled_quantity) * o.price
                                 for o in open_orders.get(symbol, ()) if not o.reduce_only), ZERO)
                held += exposure / leverage
            allocated = bucket.allocation * self.ledger.capital
            self.metrics.margin_fraction.labels(name).set(float(held / allocated) if allocated > 0 else 0.0)
            self.metrics.margin_fraction_updated.labels(name).set(now)
