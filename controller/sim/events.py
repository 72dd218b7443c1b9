"""What the simulated exchange tells an account's user-data stream, as typed snapshots.

Each event holds copies of the state at the moment it happened, so rendering it later (after
more fills) still shows what Binance would have sent then. `controller.sim.wire` turns them into
Binance's JSON payloads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING
from decimal import Decimal

from controller.sim.accounts import PositionRisk
from controller.sim.orders import Fill, Order

if TYPE_CHECKING:
    from controller.sim.triggers import AlgoOrder


@dataclass(frozen=True)
class OrderUpdated:
    """ORDER_TRADE_UPDATE: an order was accepted, traded, cancelled or expired."""

    account: str
    order: Order          # a copy taken when the event happened
    exec_type: str        # NEW | TRADE | CALCULATED (a liquidation's or ADL's trade) | CANCELED | EXPIRED
    fill: Fill | None
    time_ms: int


@dataclass(frozen=True)
class BalanceChanged:
    """ACCOUNT_UPDATE: the wallet or a position changed."""

    account: str
    reason: str           # ORDER | MARGIN_TYPE_CHANGE | ...
    wallet: Decimal
    cross_wallet: Decimal
    balance_change: Decimal
    positions: tuple[PositionRisk, ...]
    time_ms: int


@dataclass(frozen=True)
class LeverageChanged:
    """ACCOUNT_CONFIG_UPDATE: a symbol's leverage was changed."""

    account: str
    symbol: str
    leverage: int
    time_ms: int


@dataclass(frozen=True)
class MultiAssetsChanged:
    """ACCOUNT_CONFIG_UPDATE ``ai``: the account's multi-assets margin mode was changed."""

    account: str
    multi_assets: bool
    time_ms: int


@dataclass(frozen=True)
class MarginCalled:
    """MARGIN_CALL: the account's margin ratio crossed the warning level."""

    account: str
    cross_wallet: Decimal
    positions: tuple[PositionRisk, ...]
    time_ms: int


@dataclass(frozen=True)
class AlgoUpdated:
    """ALGO_UPDATE: a conditional order was placed, triggered, finished, cancelled or rejected."""

    account: str
    algo: AlgoOrder       # a copy taken when the event happened
    time_ms: int
    placed: Order | None = None   # a copy of the order it placed, once triggered


Event = AlgoUpdated | OrderUpdated | BalanceChanged | LeverageChanged | MultiAssetsChanged | MarginCalled
