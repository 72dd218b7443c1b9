"""The 24-hour rolling statistics of each symbol, as GET /fapi/v1/ticker/24hr reports them.

Prices are sampled at each tick into one-minute buckets (open, high, low, close), so a 48 h run
keeps at most 1 440 buckets a symbol whatever its tick. Volume, count and trade ids are those of
the simulator's own trades: its book is synthetic and has no other traders.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from controller.sim.orders import Fill

WINDOW_MS = 24 * 60 * 60 * 1000
BUCKET_MS = 60 * 1000
ZERO = Decimal(0)


@dataclass(slots=True)
class _Bucket:
    """One minute's prices (slotted: a 50-symbol market keeps 72 000 of them for 24 h)."""

    start_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal


@dataclass(frozen=True)
class DailyStats:
    """One symbol's last 24 hours."""

    symbol: str
    open: Decimal
    high: Decimal
    low: Decimal
    last: Decimal
    open_time_ms: int
    close_time_ms: int
    volume: Decimal
    quote_volume: Decimal
    last_qty: Decimal
    first_id: int           # -1 when there was no trade
    last_id: int
    count: int

    @property
    def change(self) -> Decimal:
        return self.last - self.open

    @property
    def change_percent(self) -> Decimal:
        return self.change / self.open * 100 if self.open else ZERO

    @property
    def weighted_average(self) -> Decimal:
        """Quote volume over volume; the last price when nothing traded (no trade, no weight)."""
        return self.quote_volume / self.volume if self.volume else self.last


class DailyTickers:
    """Keeps each symbol's price buckets and trades of the last 24 hours."""

    def __init__(self) -> None:
        self._buckets: dict[str, deque[_Bucket]] = {}
        self._trades: dict[str, deque[Fill]] = {}

    def observe(self, symbol: str, price: Decimal, now_ms: int) -> None:
        buckets = self._buckets.setdefault(symbol, deque())
        start = now_ms - now_ms % BUCKET_MS
        if buckets and buckets[-1].start_ms == start:
            last = buckets[-1]
            last.high, last.low, last.close = max(last.high, price), min(last.low, price), price
        else:
            buckets.append(_Bucket(start, price, price, price, price))
        self._forget(symbol, now_ms)

    def trade(self, fill: Fill) -> None:
        self._trades.setdefault(fill.symbol, deque()).append(fill)

    def stats(self, symbol: str, price: Decimal, now_ms: int) -> DailyStats:
        """The window ending now; ``price`` (the current one) counts as observed now."""
        self.observe(symbol, price, now_ms)
        buckets = self._buckets[symbol]
        trades = self._trades.get(symbol, deque())
        return DailyStats(
            symbol=symbol, open=buckets[0].open, high=max(b.high for b in buckets),
            low=min(b.low for b in buckets), last=price,
            open_time_ms=max(buckets[0].start_ms, now_ms - WINDOW_MS), close_time_ms=now_ms,
            volume=sum((t.qty for t in trades), ZERO), quote_volume=sum((t.quote_qty for t in trades), ZERO),
            last_qty=trades[-1].qty if trades else ZERO,
            first_id=trades[0].trade_id if trades else -1, last_id=trades[-1].trade_id if trades else -1,
            count=len(trades),
        )

    def _forget(self, symbol: str, now_ms: int) -> None:
        since = now_ms - WINDOW_MS
        buckets = self._buckets[symbol]
        dropped = None
        while len(buckets) > 1 and buckets[0].start_ms + BUCKET_MS <= since:
            dropped = buckets.popleft()
        if dropped is not None and buckets[0].start_ms > since:
            # The price the window opens at is the last one seen before it.
            price = dropped.close
            buckets.appendleft(_Bucket(since - since % BUCKET_MS, price, price, price, price))
        trades = self._trades.get(symbol)
        while trades and trades[0].time_ms < since:
            trades.popleft()
