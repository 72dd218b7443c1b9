"""What a bot release runs with: its symbols and leverage, capital buckets and order sizing.

The canary checks the exchange's view of the account against this file (leverage applied,
bucket usage within allocation), so every limit here is explicit and exact: ``Decimal``, never
float.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, model_validator

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


class StrategyConfig(ConfigModel):
    """A bot release's strategy file: every symbol belongs to exactly one bucket."""

    symbols: dict[Symbol, SymbolConfig] = Field(min_length=1)
    buckets: dict[BucketName, BucketConfig] = Field(min_length=1)
    sizing: SizingConfig
    bot: dict[str, Any] = Field(default_factory=dict)
    """The release's own settings, passed to it unread (the reference bot keeps its deliberate
    defects here); the controller judges the release by the fields above, never by these."""

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
