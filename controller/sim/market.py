"""The synthetic market: symbols with Binance's trading rules and leverage brackets, and prices.

Prices follow a seeded geometric random walk on the simulator's clock (or a replayed CSV of
prices). Symbol rules (tick size, step size, min notional, max quantity) and brackets
approximate Binance's USD-M exchangeInfo and leverageBracket as published in 2024-2025; they
were written from memory of those responses, not fetched, so treat them as realistic rather
than exact (guessed where Binance has since changed them).
"""

from __future__ import annotations

import csv
import math
import random
from bisect import bisect_right
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from pathlib import Path



@dataclass(frozen=True)
class Bracket:
    """One notional tier: up to `cap` USDT of position, at most `leverage`, maintenance `mmr`."""

    number: int
    leverage: int
    floor: Decimal
    cap: Decimal
    mmr: Decimal
    cum: Decimal  # maintenance amount: makes maintenance margin continuous across tiers


def brackets_from(tiers: list[tuple[int, int, str]]) -> tuple[Bracket, ...]:
    """Build brackets from (cap, leverage, mmr) rows; floors and `cum` follow as Binance derives them."""
    out: list[Bracket] = []
    floor, cum, prev_mmr = Decimal(0), Decimal(0), Decimal(0)
    for number, (cap, leverage, mmr) in enumerate(tiers, start=1):
        rate = Decimal(mmr)
        cum = cum + floor * (rate - prev_mmr)
        out.append(Bracket(number, leverage, floor, Decimal(cap), rate, cum))
        floor, prev_mmr = Decimal(cap), rate
    return tuple(out)


# Tier tables (cap USDT, max leverage, maintenance margin rate).
_TIER_125 = brackets_from([
    (50_000, 125, "0.004"), (600_000, 100, "0.005"), (3_000_000, 75, "0.0065"),
    (12_000_000, 50, "0.01"), (70_000_000, 25, "0.02"), (100_000_000, 20, "0.025"),
    (230_000_000, 10, "0.05"), (480_000_000, 5, "0.1"), (600_000_000, 4, "0.125"),
    (800_000_000, 3, "0.15"), (1_200_000_000, 2, "0.25"), (1_800_000_000, 1, "0.5"),
])
_TIER_75 = brackets_from([
    (10_000, 75, "0.005"), (50_000, 50, "0.01"), (250_000, 40, "0.015"), (1_000_000, 25, "0.02"),
    (5_000_000, 20, "0.025"), (10_000_000, 10, "0.05"), (20_000_000, 5, "0.1"),
    (25_000_000, 4, "0.125"), (50_000_000, 2, "0.25"), (100_000_000, 1, "0.5"),
])
_TIER_50 = brackets_from([
    (5_000, 50, "0.01"), (25_000, 25, "0.02"), (100_000, 20, "0.025"), (250_000, 10, "0.05"),
    (1_000_000, 5, "0.1"), (5_000_000, 4, "0.125"), (10_000_000, 2, "0.25"), (20_000_000, 1, "0.5"),
])
_TIER_25 = brackets_from([
    (5_000, 25, "0.02"), (25_000, 20, "0.025"), (100_000, 10, "0.05"), (250_000, 5, "0.1"),
    (1_000_000, 2, "0.25"), (3_000_000, 1, "0.5"),
])


@dataclass(frozen=True)
class SymbolSpec:
    """A USD-M perpetual and its trading rules, as exchangeInfo describes it."""

    symbol: str
    base: str
    price: Decimal          # initial price of the synthetic walk
    tick: Decimal
    step: Decimal
    min_qty: Decimal
    max_qty: Decimal        # LOT_SIZE (limit orders)
    market_max_qty: Decimal  # MARKET_LOT_SIZE
    min_notional: Decimal
    brackets: tuple[Bracket, ...]
    volatility: float       # annualised, for the random walk
    onboard_ms: int = 1569398400000
    min_price: Decimal = Decimal("0")
    max_price: Decimal = Decimal("0")

    quote: str = "USDT"

    @property
    def pair(self) -> str:
        return self.symbol

    @property
    def price_precision(self) -> int:
        return _decimals(self.tick)

    @property
    def qty_precision(self) -> int:
        return _decimals(self.step)

    @property
    def max_leverage(self) -> int:
        return self.brackets[0].leverage

    def bracket_for(self, notional: Decimal) -> Bracket:
        for bracket in self.brackets:
            if notional < bracket.cap:
                return bracket
        return self.brackets[-1]

    def max_notional(self, leverage: int) -> Decimal:
        """The largest position notional allowed at `leverage` (the last tier that still allows it)."""
        allowed = [b.cap for b in self.brackets if b.leverage >= leverage]
        return allowed[-1] if allowed else Decimal(0)

    def round_price(self, price: Decimal) -> Decimal:
        return (price / self.tick).quantize(Decimal(1), ROUND_HALF_UP) * self.tick

    def round_qty_down(self, qty: Decimal) -> Decimal:
        return (qty / self.step).quantize(Decimal(1), ROUND_DOWN) * self.step


def _decimals(d: Decimal) -> int:
    exponent = d.as_tuple().exponent  # as written: "0.10" has two, like Binance's pricePrecision
    return max(0, -exponent) if isinstance(exponent, int) else 0


def _spec(symbol: str, price: str, tick: str, step: str, max_qty: str, market_max: str,
          min_notional: str, brackets: tuple[Bracket, ...], vol: float) -> SymbolSpec:
    p, t = Decimal(price), Decimal(tick)
    return SymbolSpec(
        symbol=symbol, base=symbol.removesuffix("USDT"), price=p, tick=t, step=Decimal(step),
        min_qty=Decimal(step), max_qty=Decimal(max_qty), market_max_qty=Decimal(market_max),
        min_notional=Decimal(min_notional), brackets=brackets, volatility=vol,
        min_price=t * 10, max_price=(p * 100).quantize(t),
    )


SYMBOLS: tuple[SymbolSpec, ...] = (
    _spec("BTCUSDT", "62000.00", "0.10", "0.001", "1000", "120", "100", _TIER_125, 0.5),
    _spec("ETHUSDT", "3000.00", "0.01", "0.001", "10000", "2000", "20", _TIER_125, 0.65),
    _spec("BNBUSDT", "550.00", "0.010", "0.01", "100000", "2000", "5", _TIER_75, 0.6),
    _spec("SOLUSDT", "150.0000", "0.0100", "1", "1000000", "5000", "5", _TIER_75, 0.8),
    _spec("XRPUSDT", "0.5500", "0.0001", "0.1", "10000000", "2000000", "5", _TIER_75, 0.8),
    _spec("DOGEUSDT", "0.120000", "0.000010", "1", "50000000", "30000000", "5", _TIER_75, 0.9),
    _spec("ADAUSDT", "0.45000", "0.00010", "1", "10000000", "300000", "5", _TIER_75, 0.8),
    _spec("AVAXUSDT", "30.0000", "0.0010", "1", "1000000", "50000", "5", _TIER_50, 0.9),
    _spec("LINKUSDT", "15.000", "0.001", "0.01", "500000", "100000", "20", _TIER_50, 0.85),
    _spec("DOTUSDT", "6.000", "0.001", "0.1", "1000000", "200000", "5", _TIER_50, 0.85),
    _spec("LTCUSDT", "80.00", "0.01", "0.001", "100000", "5000", "20", _TIER_75, 0.7),
    _spec("BCHUSDT", "400.00", "0.01", "0.001", "10000", "850", "20", _TIER_75, 0.7),
    _spec("TRXUSDT", "0.12000", "0.00001", "1", "10000000", "5000000", "5", _TIER_50, 0.5),
    _spec("NEARUSDT", "5.000", "0.001", "1", "1000000", "100000", "5", _TIER_50, 0.95),
    _spec("ATOMUSDT", "8.000", "0.001", "0.01", "100000", "50000", "5", _TIER_50, 0.85),
    _spec("UNIUSDT", "8.0000", "0.0010", "1", "1000000", "50000", "5", _TIER_50, 0.9),
    _spec("FILUSDT", "5.000", "0.001", "0.1", "1000000", "100000", "5", _TIER_25, 0.95),
    _spec("APTUSDT", "9.00000", "0.00010", "0.1", "1000000", "100000", "5", _TIER_25, 1.0),
    _spec("ARBUSDT", "1.0000", "0.0001", "0.1", "10000000", "1000000", "5", _TIER_25, 1.0),
    _spec("OPUSDT", "2.0000", "0.0001", "0.1", "1000000", "500000", "5", _TIER_25, 1.0),
    _spec("1000PEPEUSDT", "0.0090000", "0.0000001", "1", "800000000", "80000000", "5", _TIER_25, 1.2),
)

_SECONDS_PER_YEAR = 365 * 24 * 3600
BOOK_DEPTH = Decimal("200000")  # quote value resting at each synthetic book level


@dataclass
class PriceReplay:
    """Prices read from a CSV with columns `timestamp,symbol,price` (timestamp in epoch ms).

    The price at time t is the last row at or before t (the first row before the series starts).
    """

    series: dict[str, tuple[list[float], list[Decimal]]] = field(default_factory=dict)

    @classmethod
    def from_csv(cls, path: Path) -> PriceReplay:
        rows: dict[str, list[tuple[float, Decimal]]] = {}
        with path.open(newline="") as fh:
            for row in csv.DictReader(fh):
                rows.setdefault(row["symbol"].strip(), []).append(
                    (float(row["timestamp"]) / 1000.0, Decimal(row["price"].strip())))
        series = {}
        for symbol, points in rows.items():
            points.sort(key=lambda p: p[0])
            series[symbol] = ([t for t, _ in points], [p for _, p in points])
        return cls(series)

    def price(self, symbol: str, now: float) -> Decimal | None:
        if symbol not in self.series:
            return None
        times, prices = self.series[symbol]
        return prices[max(0, bisect_right(times, now) - 1)]


class Market:
    """Mark prices of every symbol at the clock's current time.

    `advance(now)` moves each walk forward by the elapsed time in one exact step
    (a sum of Gaussian increments is Gaussian), so a jump of 48 h costs the same as a tick.
    `set_price` pins a price (tests, admin endpoint); the walk continues from it.
    """

    def __init__(self, *, seed: int = 0, start: float, volatility: float = 1.0,
                 symbols: tuple[SymbolSpec, ...] = SYMBOLS, replay: PriceReplay | None = None,
                 depth_notional: Decimal = BOOK_DEPTH) -> None:
        self.specs = {s.symbol: s for s in symbols}
        self.volatility = volatility
        self.replay = replay
        self.depth_notional = depth_notional
        self._rng = random.Random(seed)
        self._log_prices = {s.symbol: math.log(float(s.price)) for s in symbols}
        self._prices = {s.symbol: s.price for s in symbols}
        self._time = start
        self.advance(start)

    def spec(self, symbol: str) -> SymbolSpec | None:
        return self.specs.get(symbol)

    def price(self, symbol: str) -> Decimal:
        return self._prices[symbol]

    def set_price(self, symbol: str, price: Decimal) -> None:
        if price <= 0:
            raise ValueError(f"a price must be > 0, not {price}")
        spec = self.specs[symbol]
        self._prices[symbol] = spec.round_price(price)
        self._log_prices[symbol] = math.log(float(price))

    def advance(self, now: float) -> None:
        dt = now - self._time
        if dt < 0:
            return
        self._time = now
        for symbol, spec in self.specs.items():
            replayed = self.replay.price(symbol, now) if self.replay else None
            if replayed is not None:
                self._prices[symbol] = spec.round_price(replayed)
                continue
            if dt == 0 or self.volatility == 0:
                continue
            sigma = spec.volatility * self.volatility * math.sqrt(dt / _SECONDS_PER_YEAR)
            self._log_prices[symbol] += self._rng.gauss(-0.5 * sigma * sigma, sigma)
            price = spec.round_price(Decimal(repr(math.exp(self._log_prices[symbol]))))
            self._prices[symbol] = max(price, spec.tick)

    def level_qty(self, symbol: str) -> Decimal:
        """Quantity resting at each synthetic book level (at least one step)."""
        spec = self.specs[symbol]
        return max(spec.round_qty_down(self.depth_notional / self._prices[symbol]), spec.step)

    def best(self, symbol: str, side: str) -> Decimal:
        """Best price a taker on `side` trades at: one tick through the mark price."""
        spec = self.specs[symbol]
        mark = self._prices[symbol]
        return mark + spec.tick if side == "BUY" else max(mark - spec.tick, spec.tick)

    def level_gap(self, symbol: str) -> Decimal:
        """Distance between synthetic book levels: about one basis point, at least a tick."""
        spec = self.specs[symbol]
        return max(spec.tick, spec.round_price(self._prices[symbol] / 10_000))
