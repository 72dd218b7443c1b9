"""What a bot release runs with: its symbols and leverage, capital buckets and order sizing.

The canary checks the exchange's view of the account against this file (leverage applied,
bucket usage within allocation), so every limit here is explicit and exact: ``Decimal``, never
float.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, StrictBool, StringConstraints, model_validator

from controller.config.model import ConfigModel, Fraction, Int, error_at

Symbol = Annotated[str, StringConstraints(pattern=r"^[A-Z0-9]{5,20}$")]
"""A Binance USD-M futures symbol as the exchange spells it, e.g. ``BTCUSDT``."""

BucketName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class SymbolConfig(ConfigModel):
    """How one symbol is traded."""

    leverage: Int = Field(ge=1, le=125)
    margin_type: Literal["ISOLATED", "CROSSED"] = "CROSSED"  # Binance's spelling, not "CROSS"


class BucketConfig(ConfigModel):
    """A share of account capital that a group of symbols trades within."""

    allocation: Fraction
    symbols: list[Symbol] = Field(min_length=1)


class SizingConfig(ConfigModel):
    """How large each order is and how many may rest at once."""

    order_fraction: Fraction
    """Fraction of the bucket's notional limit that one order may use."""
    max_open_orders_per_symbol: Int = Field(default=2, ge=1)


class WrongLeverage(ConfigModel):
    """Set ``leverage`` on the exchange for ``symbol`` instead of the configured one."""

    symbol: Symbol
    leverage: Int = Field(ge=1, le=125)


class DefectsConfig(ConfigModel):
    """Deliberate defects a release of the reference bot can carry, so that the canary has
    something real to catch. All off by default; a production strategy leaves this out."""

    wrong_leverage: WrongLeverage | None = None
    """The bot sets this leverage on the exchange while reporting the configured one."""
    oversized_orders: Annotated[Decimal, Field(gt=1, le=100)] | None = None
    """Orders this many times the size their bucket gives them (the bucket check is not told)."""
    slow_signal_seconds: Annotated[Decimal, Field(gt=0, le=60)] | None = None
    """Added to every signal-to-order path."""
    unhandled_exception_after_seconds: Annotated[Decimal, Field(ge=0)] | None = None
    """The trading task raises an uncaught exception this long after trading starts."""
    rejected_orders_burst: Annotated[Int, Field(ge=1, le=200)] | None = None
    """This many orders that the exchange refuses, sent on the first trading iteration."""
    oversized_exits: Annotated[Decimal, Field(gt=1, le=100)] | None = None
    """Reduce-only closes this many times the position; the exchange expires what is left."""
    exits_never_sent: StrictBool = False
    """Positions are never closed: the close path drops its orders, so margin is never given back."""


class StrategyConfig(ConfigModel):
    """A bot release's strategy file: every symbol belongs to exactly one bucket."""

    symbols: dict[Symbol, SymbolConfig] = Field(min_length=1)
    buckets: dict[BucketName, BucketConfig] = Field(min_length=1)
    sizing: SizingConfig
    defects: DefectsConfig = DefectsConfig()

    @model_validator(mode="after")
    def _buckets_cover_symbols(self) -> StrategyConfig:
        total = sum((bucket.allocation for bucket in self.buckets.values()), Decimal(0))
        if total > 1:
            raise error_at(("buckets",), f"bucket allocations sum to {total}, more than 1 (all capital)")
        owner: dict[str, str] = {}
        for name, bucket in self.buckets.items():
            for index, symbol in enumerate(bucket.symbols):
                at = ("buckets", name, "symbols", index)
                if symbol not in self.symbols:
                    raise error_at(at, f"symbol {symbol} is not defined under symbols")
                if symbol in owner:
                    raise error_at(at, f"symbol {symbol} is already in bucket {owner[symbol]!r}; "
                                       "a symbol belongs to exactly one bucket")
                owner[symbol] = name
        unbucketed = [symbol for symbol in self.symbols if symbol not in owner]
        if unbucketed:
            raise error_at(("symbols", unbucketed[0]),
                           f"symbol {unbucketed[0]} is in no bucket; add it to one under buckets")
        wrong = self.defects.wrong_leverage
        if wrong is not None:
            at = ("defects", "wrong_leverage")
            if wrong.symbol not in self.symbols:
                raise error_at(at + ("symbol",), f"symbol {wrong.symbol} is not defined under symbols; "
                                                 "the wrong leverage must replace a configured one")
            if wrong.leverage == self.symbols[wrong.symbol].leverage:
                raise error_at(at + ("leverage",), f"leverage {wrong.leverage} is the configured leverage of "
                                                   f"{wrong.symbol}; a wrong leverage must differ from it")
        return self

    def bucket_of(self, symbol: str) -> str:
        """The name of the bucket ``symbol`` trades in."""
        for name, bucket in self.buckets.items():
            if symbol in bucket.symbols:
                return name
        raise KeyError(f"symbol {symbol} is not in this strategy")

    def notional_limit(self, symbol: str, capital: Decimal) -> Decimal:
        """The bucket's notional limit for ``symbol``: allocation × account capital × leverage."""
        allocation = self.buckets[self.bucket_of(symbol)].allocation
        return allocation * capital * self.symbols[symbol].leverage

    def order_notional(self, symbol: str, capital: Decimal) -> Decimal:
        """The notional one order on ``symbol`` may use: ``order_fraction`` of the bucket's limit."""
        return self.sizing.order_fraction * self.notional_limit(symbol, capital)
