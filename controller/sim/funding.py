"""Funding of the simulated perpetuals: index price, premium, rate, and the fee positions pay.

Binance's schedule and formula, on the simulator's clock. Funding happens at 00:00, 08:00 and
16:00 UTC. The rate is F = P + clamp(I - P, -0.05 %, +0.05 %), with I the interest rate (0.01 %
per 8 h) and P the premium index averaged over the 8 h window, then capped at ±75 % of the
symbol's first-tier maintenance margin rate (±0.3 % for BTCUSDT, as Binance caps it). At each
funding time every open position pays notional (at the mark price) x rate when the rate is
positive and it is long, or negative and it is short, and receives it otherwise.

The index is synthetic: the mark price's exponential average over `INDEX_LAG` seconds, so the
perpetual trades at a premium while its price rises and at a discount while it falls, and the
window's average premium is about (INDEX_LAG / 8 h) x the window's return. Between ticks the mark
price is constant (the market moves it in one step), so the average and the premium integral
are exact for a clock that jumps hours at once; a jump across funding times settles each of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from controller.sim.accounts import Account
from controller.sim.events import BalanceChanged
from controller.sim.ledger import Ledger
from controller.sim.market import Market

INTERVAL = 8 * 3600.0        # seconds between funding times, aligned on 00:00 UTC
INTEREST = Decimal("0.0001")  # Binance's interest rate per 8 h for USDT-margined contracts
CLAMP = Decimal("0.0005")
CAP_OF_MAINTENANCE = Decimal("0.75")
INDEX_LAG = 600.0            # seconds: how far behind the mark price the synthetic index trails
RATE_QUANTUM = Decimal("0.00000001")


@dataclass(frozen=True)
class FundingState:
    """What the premium index and the mark price stream say of a symbol's funding, now."""

    index: Decimal
    rate: Decimal          # the estimated rate of the window in progress
    next_time_ms: int


@dataclass(frozen=True)
class FundingRate:
    """One settled funding: GET /fapi/v1/fundingRate's row."""

    symbol: str
    rate: Decimal
    time_ms: int
    mark: Decimal


class FundingBook:
    """Every symbol's index and premium average, the funding history, and the settlement."""

    def __init__(self, market: Market, accounts: Iterable[Account], ledger: Ledger, *, start: float) -> None:
        self.market = market
        self.accounts = accounts
        self.ledger = ledger
        self.history: list[FundingRate] = []
        self._index = {s: float(market.price(s)) for s in market.specs}
        self._premium = dict.fromkeys(market.specs, 0.0)  # the premium's integral over the window
        self._time = start
        self._window_start = start
        self.next_time = (start // INTERVAL + 1) * INTERVAL

    # -- what it says --------------------------------------------------------------------------

    def state(self, symbol: str) -> FundingState:
        spec = self.market.specs[symbol]
        index = spec.round_price(Decimal(repr(self._index[symbol])))
        return FundingState(index, self.rate(symbol), int(self.next_time * 1000))

    def rate(self, symbol: str) -> Decimal:
        """F = P + clamp(I - P), capped at ±75 % of the first tier's maintenance margin rate."""
        elapsed = self._time - self._window_start
        premium = Decimal(repr(self._premium[symbol] / elapsed)) if elapsed > 0 else Decimal(0)
        rate = premium + min(CLAMP, max(-CLAMP, INTEREST - premium))
        cap = CAP_OF_MAINTENANCE * self.market.specs[symbol].brackets[0].mmr
        return min(cap, max(-cap, rate)).quantize(RATE_QUANTUM)

    # -- time ----------------------------------------------------------------------------------

    def advance(self, now: float) -> list[BalanceChanged]:
        """Move to ``now``: settle every funding time passed on the way; returns the balance events."""
        events: list[BalanceChanged] = []
        while now >= self.next_time:
            self._integrate(self.next_time)
            events += self._settle(int(self.next_time * 1000))
            self._window_start = self.next_time
            self._premium = dict.fromkeys(self._premium, 0.0)
            self.next_time += INTERVAL
        self._integrate(now)
        return events

    def _integrate(self, until: float) -> None:
        """The index and the premium's integral from the last step to ``until``, the mark held constant."""
        dt = until - self._time
        if dt <= 0:
            return
        decay = math.exp(-dt / INDEX_LAG)
        for symbol in self._index:
            mark, index = float(self.market.price(symbol)), self._index[symbol]
            # (mark - index(t)) / mark integrates in closed form while index(t) decays toward mark.
            self._premium[symbol] += (mark - index) / mark * INDEX_LAG * (1 - decay)
            self._index[symbol] = mark + (index - mark) * decay
        self._time = until

    def _settle(self, time_ms: int) -> list[BalanceChanged]:
        rates = {symbol: self.rate(symbol) for symbol in self.market.specs}
        for symbol, rate in rates.items():
            self.history.append(FundingRate(symbol, rate, time_ms, self.market.price(symbol)))
        events: list[BalanceChanged] = []
        for account in self.accounts:
            for (symbol, side), position in list(account.positions.items()):
                if position.amount:  # a hedge-mode SHORT side holds a negative amount, as on Binance
                    fee = position.amount * self.market.price(symbol) * rates[symbol]
                    events.append(self.ledger.pay_funding(account, symbol, fee, time_ms, side=side))
        return events
