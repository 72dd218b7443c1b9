"""The order path: a bounded queue of commands and the one task that sends them, in order.

Commands go out one at a time, in the order they were decided, so a cancel always follows
the entries it cancels. An order enters the books when it is decided (its margin counts from
then on), and its end is counted once, by outcome: the exchange's refusal or a failed request
here; filled, canceled or expired from the stream or a REST look-up (see `Bot`). The times
the metrics show (signal to acknowledgement, wait in the queue) are the bot's own work, timed
on its `Stopwatch`.

In shadow mode (``paper``) nothing is sent: an order fills on paper at once, whole, at the mark
price its command was valued at, and moves the books' position; a cancel has nothing to cancel.
The signal latency, timed to the exchange's acknowledgement, is not observed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal

from reference_bot.clock import Mark, Stopwatch
from reference_bot.errors import ExchangeError, Rejected
from reference_bot.exchange import FuturesAccount
from reference_bot.ledger import DEFECT, Ledger, TrackedOrder
from reference_bot.metrics import BotMetrics
from reference_bot.strategy import CancelOrders, Command, PlaceOrder

log = logging.getLogger("reference_bot")

QUEUE_SIZE = 1000
CLIENT_ORDER_PREFIX = "bot-"


class OrderSender:
    """Queues commands and sends them; `run` is the sending task, `drain` stops it taking more."""

    def __init__(self, *, exchange: FuturesAccount, stopwatch: Stopwatch, ledger: Ledger, metrics: BotMetrics,
                 on_change: Callable[[], None], size: int = QUEUE_SIZE, paper: bool = False) -> None:
        self.exchange = exchange
        self.stopwatch = stopwatch
        self.ledger = ledger
        self.metrics = metrics
        self._on_change = on_change
        self.paper = paper
        self._queue: asyncio.Queue[Command] = asyncio.Queue(size)
        self._cancels_queued: set[str] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._taking = True
        self._ids = itertools.count(1)
        self._run_id = uuid.uuid4().hex[:8]  # client ids stay unique across restarts of the bot
        metrics.watch_queue(self._queue.qsize)

    def cancel_queued(self, symbol: str) -> bool:
        return symbol in self._cancels_queued

    def register(self, command: Command, signal_at: float, signaled: Mark | None) -> Command:
        """Give an order its client id and enter it in the books now, so that the next decision
        (same bucket, same iteration) already counts its margin. ``signal_at``: the signal's time
        on the bot's clock (the order's age); ``signaled``: where its latency is timed from."""
        if isinstance(command, CancelOrders):
            self._cancels_queued.add(command.symbol)
            return command
        client_order_id = f"{CLIENT_ORDER_PREFIX}{self._run_id}-{next(self._ids)}"
        command = replace(command, client_order_id=client_order_id,
                          signaled=None if command.purpose == DEFECT else signaled)
        self.ledger.add(TrackedOrder(client_order_id, command.symbol, command.side, command.quantity,
                                     command.reference_price, command.purpose, signal_at))
        return command

    def enqueue(self, command: Command) -> None:
        if not self._taking:
            self._drop(command)
            return
        try:
            self._queue.put_nowait(replace(command, queued=self.stopwatch.start()))
        except asyncio.QueueFull:
            log.error("order_queue_full size=%d symbol=%s", self._queue.maxsize, command.symbol)
            if isinstance(command, PlaceOrder):
                self.finish(command.client_order_id, "error", "the order queue is full")
            else:
                self._cancels_queued.discard(command.symbol)

    async def run(self) -> None:
        while True:
            self._idle.set()
            command = await self._queue.get()
            if not self._taking:
                self._drop(command)
                continue
            self._idle.clear()
            if command.queued is not None:
                self.metrics.order_queue_latency.observe(self.stopwatch.elapsed(command.queued))
            if self.paper:
                self._paper(command)
            elif isinstance(command, PlaceOrder):
                await self._place(command)
            else:
                await self._cancel(command)

    def stop_taking(self) -> None:
        """From now on commands are dropped, queued or not: nothing new reaches the exchange."""
        self._taking = False

    async def drain(self, timeout: float) -> None:
        """Stop taking commands, drop the queued ones (never sent: no outcome), and wait, bounded,
        for the one in flight."""
        self.stop_taking()
        dropped = 0
        while not self._queue.empty():
            self._drop(self._queue.get_nowait())
            dropped += 1
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            log.warning("order_in_flight_abandoned after_seconds=%s", timeout)
        log.info("order_queue_drained dropped=%d", dropped)

    def _drop(self, command: Command) -> None:
        if isinstance(command, PlaceOrder):
            self.ledger.finish(command.client_order_id, "dropped")
        self._cancels_queued.discard(command.symbol)
        self._on_change()

    def finish(self, client_order_id: str, outcome: str, reason: str | None = None) -> None:
        """End an order the bot learned the end of; counted unless it had ended already."""
        order = self.ledger.finish(client_order_id, outcome)
        if order is not None:
            self.count(order, outcome, reason)

    def count(self, order: TrackedOrder, outcome: str, reason: str | None = None) -> None:
        self.metrics.order_ended(outcome)
        if outcome in ("rejected", "error"):
            log.warning("order_%s symbol=%s side=%s quantity=%s purpose=%s client_order_id=%s error=%s", outcome,
                        order.symbol, order.side, order.quantity, order.purpose, order.client_order_id, reason)
        self._on_change()

    def _paper(self, command: Command) -> None:
        """Shadow mode: fill an order on paper at the mark price, whole, now; a cancel has nothing
        to cancel (paper orders never rest)."""
        if isinstance(command, PlaceOrder) and command.purpose == DEFECT:
            self.finish(command.client_order_id, "rejected", "on paper: the exchange refuses a defect's order")
        elif isinstance(command, PlaceOrder):
            order = self.ledger.orders.get(command.client_order_id)
            if order is not None:
                mark = self.ledger.marks.get(command.symbol, command.reference_price)
                before = self.ledger.position(command.symbol)
                after = before + order.direction * command.quantity
                if command.reduce_only and after * before < 0:
                    after = Decimal(0)  # a reduce-only order closes the position, never turns it
                self.ledger.set_position(command.symbol, after)
                log.debug("paper_fill symbol=%s side=%s quantity=%s price=%s", command.symbol, command.side,
                          command.quantity, mark)
                self.finish(command.client_order_id, "filled")
        else:
            self._cancels_queued.discard(command.symbol)
        self._on_change()

    async def _place(self, command: PlaceOrder) -> None:
        try:
            order_id = await self.exchange.new_order(
                symbol=command.symbol, side=command.side, order_type=command.order_type, quantity=command.quantity,
                price=command.price, reduce_only=command.reduce_only, client_order_id=command.client_order_id)
        except Rejected as exc:
            self.finish(command.client_order_id, "rejected", str(exc))
            return
        except ExchangeError as exc:  # timeouts, rate limits, budget: the order's fate is unknown
            self.finish(command.client_order_id, "error", str(exc))
            return
        if command.signaled is not None:
            self.metrics.signal_latency.observe(self.stopwatch.elapsed(command.signaled))
        self.ledger.acknowledge(command.client_order_id, order_id)
        self._on_change()

    async def _cancel(self, command: CancelOrders) -> None:
        try:
            await self.exchange.cancel_all_orders(command.symbol)
        except ExchangeError as exc:  # the orders stay; the next iteration decides again
            log.warning("cancel_failed symbol=%s reason=%s error=%s", command.symbol, command.reason, exc)
        else:
            self.ledger.request_cancel(command.symbol)
        finally:
            self._cancels_queued.discard(command.symbol)
        self._on_change()
