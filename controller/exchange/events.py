"""Typed, immutable events and snapshots: all that the code above the exchange layer ever sees.

Events are past tense, carry the exchange's own time (``ts_event``, seconds since the epoch)
and the time this process parsed them (``ts_init``, on the controller's Clock), so that
detection latency is measured from the exchange's clock, not ours. Money and quantities are
Decimal.

The stream's events are frozen msgspec Structs, not dataclasses: every frame of every account
builds one or two, and a Struct is built several times faster than a frozen dataclass (whose
``__init__`` sets each field through ``object.__setattr__``). ``gc=False``: an event holds no cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import msgspec


class LeverageChanged(msgspec.Struct, frozen=True, gc=False):
    """ACCOUNT_CONFIG_UPDATE ``ac``: a symbol's leverage is now ``leverage`` on the exchange."""

    account: str
    symbol: str
    leverage: int
    ts_event: float
    ts_init: float


class OrderUpdate(msgspec.Struct, frozen=True, gc=False):
    """ORDER_TRADE_UPDATE: an order changed state (NEW, PARTIALLY_FILLED, FILLED, CANCELED, EXPIRED, ...)."""

    account: str
    symbol: str
    order_id: int
    client_order_id: str
    side: str
    order_type: str
    execution_type: str
    status: str
    quantity: Decimal
    price: Decimal
    average_price: Decimal
    filled_quantity: Decimal
    reduce_only: bool
    ts_event: float
    ts_init: float
    time_in_force: str = "GTC"

    @property
    def liquidation(self) -> str | None:
        """``liquidation`` or ``adl`` when the exchange itself closes the position (Binance names
        those orders by their client id: ``autoclose-...``, ``adl_autoclose``), else None."""
        if not self.client_order_id.startswith(("adl_autoclose", "autoclose-")):  # asked of every order update
            return "liquidation" if self.order_type == "LIQUIDATION" else None
        return "adl" if self.client_order_id.startswith("adl_autoclose") else "liquidation"


class Fill(msgspec.Struct, frozen=True, gc=False):
    """One trade of an order; ``(account, symbol, trade_id)`` identifies it across stream and REST."""

    account: str
    symbol: str
    trade_id: int
    order_id: int
    client_order_id: str | None
    side: str
    price: Decimal
    quantity: Decimal
    quote_quantity: Decimal
    commission: Decimal
    commission_asset: str
    realized_pnl: Decimal
    maker: bool
    ts_event: float
    ts_init: float

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.account, self.symbol, self.trade_id)

    @property
    def notional(self) -> Decimal:
        return self.quote_quantity


class MultiAssetsChanged(msgspec.Struct, frozen=True, gc=False):
    """ACCOUNT_CONFIG_UPDATE ``ai``: the account's multi-assets margin mode is now ``multi_assets``."""

    account: str
    multi_assets: bool
    ts_event: float
    ts_init: float


class Balance(msgspec.Struct, frozen=True, gc=False):
    asset: str
    wallet_balance: Decimal
    cross_wallet_balance: Decimal
    change: Decimal | None = None
    """``bc``: the wallet's change except PnL and commission (a transfer's amount); None: not sent."""


class PositionChange(msgspec.Struct, frozen=True, gc=False):
    symbol: str
    amount: Decimal
    entry_price: Decimal
    unrealized_pnl: Decimal
    margin_type: str
    isolated_wallet: Decimal
    side: str = "BOTH"  # the position side: BOTH in one-way mode, LONG or SHORT in hedge mode


class AccountUpdate(msgspec.Struct, frozen=True, gc=False):
    """ACCOUNT_UPDATE: balances and positions after ``reason`` (ORDER, FUNDING_FEE, DEPOSIT, ...)."""

    account: str
    reason: str
    balances: tuple[Balance, ...]
    positions: tuple[PositionChange, ...]
    ts_event: float
    ts_init: float


class MarginCallPosition(msgspec.Struct, frozen=True, gc=False):
    symbol: str
    side: str
    amount: Decimal
    margin_type: str
    mark_price: Decimal
    unrealized_pnl: Decimal
    maintenance_margin: Decimal


class MarginCall(msgspec.Struct, frozen=True, gc=False):
    """MARGIN_CALL: the account's margin ratio is close to liquidation."""

    account: str
    cross_wallet_balance: Decimal
    positions: tuple[MarginCallPosition, ...]
    ts_event: float
    ts_init: float


class StreamStatus(msgspec.Struct, frozen=True, gc=False):
    """The user-data stream connected (after its REST reconciliation) or lost its connection."""

    account: str
    connected: bool
    reason: str
    ts_event: float
    ts_init: float


ExchangeEvent = LeverageChanged | MultiAssetsChanged | OrderUpdate | Fill | AccountUpdate | MarginCall | StreamStatus


# --- snapshots (REST) ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    amount: Decimal
    entry_price: Decimal
    mark_price: Decimal
    unrealized_pnl: Decimal
    notional: Decimal
    liquidation_price: Decimal
    isolated_margin: Decimal
    maintenance_margin: Decimal
    update_time: float = 0.0  # seconds since the epoch: when the position last changed (0: not said)
    side: str = "BOTH"  # the position side: BOTH in one-way mode, LONG or SHORT in hedge mode (two rows)


@dataclass(frozen=True, slots=True)
class SymbolSettings:
    """GET /fapi/v1/symbolConfig: what the exchange applies to a symbol."""

    symbol: str
    leverage: int
    margin_type: str


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    account: str
    total_wallet_balance: Decimal
    total_margin_balance: Decimal
    total_maintenance_margin: Decimal
    available_balance: Decimal
    total_unrealized_pnl: Decimal
    ts_init: float

    @property
    def margin_ratio(self) -> Decimal:
        """Maintenance margin over margin balance, as Binance shows it (1 means liquidation)."""
        if self.total_margin_balance <= 0:
            return Decimal("1") if self.total_maintenance_margin > 0 else Decimal("0")
        return self.total_maintenance_margin / self.total_margin_balance


@dataclass(frozen=True, slots=True)
class AccountModes:
    """GET /fapi/v1/accountConfig: the account-wide modes a release must not change."""

    hedge: bool          # dualSidePosition: hedge mode (true) or one-way (false)
    multi_assets: bool   # multiAssetsMargin


@dataclass(frozen=True, slots=True)
class OpenOrder:
    symbol: str
    order_id: int
    client_order_id: str
    side: str
    order_type: str
    status: str
    quantity: Decimal
    price: Decimal
    filled_quantity: Decimal
    reduce_only: bool


@dataclass(frozen=True, slots=True)
class LeverageBracket:
    symbol: str
    bracket: int
    initial_leverage: int
    notional_cap: Decimal
    notional_floor: Decimal
    maint_margin_ratio: Decimal


@dataclass(frozen=True, slots=True)
class SubAccountBalance:
    """A sub-account's USD-M futures balance as the master account sees it."""

    email: str
    wallet_balance: Decimal
    margin_balance: Decimal


@dataclass(frozen=True, slots=True)
class SymbolFilters:
    """GET /fapi/v1/exchangeInfo: how prices and quantities must be rounded for a symbol."""

    symbol: str
    tick_size: Decimal
    step_size: Decimal
    min_qty: Decimal
    min_notional: Decimal

    def round_quantity(self, quantity: Decimal) -> Decimal:
        """Down to a multiple of the step size (never up: sizing must not exceed its limit)."""
        return (quantity // self.step_size) * self.step_size

    def round_price(self, price: Decimal) -> Decimal:
        return (price // self.tick_size) * self.tick_size
