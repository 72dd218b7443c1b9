"""The exchange's view of one account as observations: the synchronous core of `ExchangeObserver`.

Pure computation: typed events (from the user-data stream) and snapshots (from REST, with the
Clock times they were requested and answered) come in; `Observation`s and `Heartbeat`s go out
to the sink. Nothing here awaits, reads a clock or does I/O, so an exchange event becomes its
observations within microseconds, and every rule is tested without a loop.

Two sources describe the same state, so each snapshot value is dropped for a position the stream
updated while the request was out, or at the very time it was sent (the stream's value is newer).
Position notional on the stream is ``amount x entry price + unrealized PnL`` (Binance computes
that PnL at the mark price), so no mark-price calls are needed between snapshots.

A position is a (symbol, position side): BOTH in one-way mode, LONG and SHORT in hedge mode, where
one symbol holds two positions at once. A symbol's exposure is the sum of its sides' notionals
(gross: a long and a short both hold margin and both can be liquidated; they do not net out).
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

import msgspec

from controller.analysis.observation import Heartbeat, Labels, Observation, Sink, labels_of
from controller.config.strategy import StrategyConfig
from controller.exchange.events import (
    AccountModes,
    AccountSnapshot,
    AccountUpdate,
    ExchangeEvent,
    Fill,
    LeverageChanged,
    MarginCall,
    MultiAssetsChanged,
    OrderUpdate,
    Position,
    StreamStatus,
    SubAccountBalance,
    SymbolSettings,
)
from controller.exchange.stream import BoundedSet
from controller.logs import get_logger

log = get_logger(__name__)

CONTROLLER_ORDERS = re.compile(r"^(cc-|rb\d+d\d+)")
"""Client ids of the orders the controller itself places (flattening, a rollback's): not the release's."""

SOURCE = "exchange"
OUTCOMES = {"FILLED": "filled", "CANCELED": "canceled", "EXPIRED": "expired", "EXPIRED_IN_MATCH": "expired",
            "REJECTED": "rejected"}
"""Binance statuses that end an order, and the ``outcome`` label each is counted under."""
UNFILLED = "unfilled"
"""The outcome of an order its own time in force ended unfilled (`ENDS_UNFILLED`): what healthy
IOC, FOK and post-only orders do, so it is counted apart from ``expired``, which is a failure."""
ENDS_UNFILLED = frozenset({"IOC", "FOK", "GTX"})
MODES = ("position_mode", "multi_assets")
"""The ``mode`` label of ``account_mode_mismatch``: one-way/hedge, and multi-assets margin."""
ZERO = Decimal(0)
NO_LABELS: Labels = ()
SIDES = ("BOTH", "LONG", "SHORT")
"""Position sides: BOTH in one-way mode, LONG and SHORT in hedge mode."""
PositionKey = tuple[str, str]
"""(symbol, position side): one position of the account."""
TRANSFER_REASONS = frozenset({"DEPOSIT", "WITHDRAW", "WITHDRAW_REJECT", "ADMIN_DEPOSIT", "ADMIN_WITHDRAW",
                              "ASSET_TRANSFER"})
"""ACCOUNT_UPDATE reasons that move capital into or out of the futures wallet, its ``bc`` the amount
(Binance's list; not MARGIN_TRANSFER, which moves margin between a position and the wallet)."""
DOLLARS = frozenset({"USDT", "USDC", "FDUSD", "BUSD"})
"""Assets whose transfers count as capital one for one; any other makes the capital moved in unknown."""


class _Order(msgspec.Struct, frozen=True, gc=False):
    """What a fill needs to know about its order (the fill itself carries only its own trade); a
    Struct, built for every order update, several times faster than a frozen dataclass."""

    quantity: Decimal
    price: Decimal          # 0 for a market order
    average_price: Decimal
    reduce_only: bool

    @property
    def notional(self) -> Decimal:
        return self.quantity * (self.price if self.price > 0 else self.average_price)


@dataclass
class ViewStats:
    events: int = 0
    unsized_fills: int = 0     # fills whose order the stream never showed (found over REST after a gap)
    foreign_events: int = 0    # orders, fills, positions and leverage changes of symbols outside the config
    stale_snapshot_values: int = 0  # snapshot values dropped because the stream had newer ones


class ExchangeView:
    """Turns one account's events and snapshots into the exchange source's observations."""

    def __init__(self, *, config: StrategyConfig, sink: Sink, capital: Decimal | None = None,
                 heartbeat_every: float = 1.0, remember_orders: int = 10_000,
                 modes: AccountModes | None = None, placed_at: float | None = None) -> None:
        self.config = config
        self.sink = sink
        self.heartbeat_every = heartbeat_every
        self.stats = ViewStats()
        self.capital: Decimal | None = None
        # The capital moved into the account: its wallet at the first snapshot plus the transfers
        # in less the transfers out since (None until that snapshot, or once a transfer is unreadable).
        self.funded: Decimal | None = None
        self.funding_unknown: str | None = None
        self._unrealized = ZERO  # the account's unrealized PnL at the newest snapshot
        self._labels = {s: labels_of(symbol=s) for s in config.symbols}
        self._fill_labels = {s: labels_of(symbol=s, bucket=config.bucket_of(s)) for s in config.symbols}
        self._outcome_labels = {o: labels_of(outcome=o) for o in sorted({*OUTCOMES.values(), UNFILLED})}
        self._mode_labels = {m: labels_of(mode=m) for m in MODES}
        self.modes = modes  # what the account's modes must stay; None: the first reading sets it
        self._liquidated = BoundedSet(remember_orders)
        self._foreign_amounts: dict[PositionKey, Decimal] = {}  # positions outside the config, as last seen
        self._positions_read = False
        self.placed_at = placed_at  # when the release's placement began (a position older is not its doing)
        self._limits: dict[str, Decimal] = {}
        self._applied: dict[str, int] = {}
        self._leverage_event_at: dict[str, float] = {}
        self._notional: dict[PositionKey, Decimal] = {}
        self._position_event_at: dict[PositionKey, float] = {}
        self._orders: OrderedDict[int, _Order] = OrderedDict()
        self._remember_orders = remember_orders
        self._ended = BoundedSet(remember_orders)
        self._born = BoundedSet(remember_orders)  # orders the release created while this view watched
        self.own_filled = 0
        self.prior_filled = 0   # fills of orders created before it watched (no liquidation, none of the controller's)
        self.orders_placed = 0  # orders the release created while this view watched (shadow: none)
        self.fills = 0          # fills on the account while this view watched, whoever's order (shadow: none)
        self.outcomes = dict.fromkeys(self._outcome_labels, 0)
        # Health: the stream's state, the last snapshot pass's error, a stream found silent.
        self.connected: bool | None = None  # None: not connected yet
        self._disconnect_reason = ""
        self.snapshot_error: str | None = None
        self.stalled: str | None = None
        self._last_beat = -math.inf
        # Stall detection: position amounts of the previous snapshot, and changes between two
        # snapshots that no ACCOUNT_UPDATE reported: position -> (changed after, first seen at).
        self._amounts: dict[PositionKey, Decimal] | None = None
        self._amounts_at = 0.0
        self._unreported: dict[PositionKey, tuple[float, float]] = {}
        if capital is not None:
            self.set_capital(capital)

    # --- state ------------------------------------------------------------------------------------

    def set_capital(self, capital: Decimal) -> None:
        """The account's capital at the start: the denominator of every ratio."""
        if capital <= 0:
            raise ValueError(f"capital must be positive, not {capital}")
        self.capital = capital
        self._limits = {s: self.config.notional_limit(s, capital) for s in self.config.symbols}

    @property
    def problem(self) -> str | None:
        """Why the source is not healthy now, or None."""
        if self.snapshot_error is not None:
            return self.snapshot_error
        if self.connected is None:
            return "the user-data stream has not connected yet"
        if not self.connected:
            return f"the user-data stream is disconnected ({self._disconnect_reason})"
        return self.stalled

    def open(self, at: float) -> None:
        """Start every order-outcome counter at its total, so the first order counts as an increase."""
        for outcome, labels in self._outcome_labels.items():
            self._emit("order_outcomes", labels, self.outcomes[outcome], at)
        self._emit("own_orders_filled", NO_LABELS, self.own_filled, at)
        self._emit("prior_orders_filled", NO_LABELS, self.prior_filled, at)
        self._emit("orders_placed", NO_LABELS, self.orders_placed, at)
        self._emit("account_fills", NO_LABELS, self.fills, at)

    # --- events (the hot path) ----------------------------------------------------------------------

    def on_event(self, event: ExchangeEvent) -> None:
        self.stats.events += 1
        if isinstance(event, OrderUpdate):
            self._on_order(event)
        elif isinstance(event, MultiAssetsChanged):
            self._on_multi_assets(event)
        elif isinstance(event, Fill):
            self._on_fill(event)
        elif isinstance(event, AccountUpdate):
            self._on_account_update(event)
        elif isinstance(event, LeverageChanged):
            self._on_leverage(event)
        elif isinstance(event, MarginCall):
            self._on_margin_call(event)
        elif isinstance(event, StreamStatus):
            self._on_stream_status(event)
            return
        if event.ts_init - self._last_beat >= self.heartbeat_every and self.problem is None:
            self._beat(event.ts_init)

    def _on_order(self, update: OrderUpdate) -> None:
        if update.symbol not in self.config.symbols:
            self._foreign(update.symbol, update.ts_event)
        kind = update.liquidation
        if kind is not None and self._liquidated.add(update.order_id):  # one count per order
            log.warning("exchange_liquidation", kind=kind, symbol=update.symbol, order_id=update.order_id)
            self._emit("liquidations", labels_of(symbol=update.symbol, kind=kind), 1, update.ts_event)
        known = self._orders.get(update.order_id)
        average = update.average_price if update.average_price > 0 or known is None else known.average_price
        self._orders[update.order_id] = _Order(update.quantity, update.price, average, update.reduce_only)
        self._orders.move_to_end(update.order_id)
        if len(self._orders) > self._remember_orders:
            self._orders.popitem(last=False)
        if update.status == "NEW" and kind is None and not CONTROLLER_ORDERS.match(update.client_order_id):
            if self._born.add(update.order_id):  # the release's own order, created while this view watches
                self.orders_placed += 1
                self._emit("orders_placed", NO_LABELS, self.orders_placed, update.ts_event)
        outcome = OUTCOMES.get(update.status)
        if outcome == "expired" and update.status == "EXPIRED" and update.time_in_force in ENDS_UNFILLED:
            outcome = UNFILLED
        if outcome is not None and self._ended.add(update.order_id):  # one count per order
            self.outcomes[outcome] += 1
            self._emit("order_outcomes", self._outcome_labels[outcome], self.outcomes[outcome], update.ts_event)
            if outcome == "filled" and update.order_id in self._born:
                # What the bot can have counted: its own orders, not a predecessor's resting orders that
                # fill after the placement, nor the exchange's liquidations or the controller's own.
                self.own_filled += 1
                self._emit("own_orders_filled", NO_LABELS, self.own_filled, update.ts_event)
            elif outcome == "filled" and kind is None and not CONTROLLER_ORDERS.match(update.client_order_id):
                # Created before this view watched: a predecessor's resting order, or the release's own
                # (a verification started while it runs); the exchange cannot tell which.
                self.prior_filled += 1
                self._emit("prior_orders_filled", NO_LABELS, self.prior_filled, update.ts_event)

    def _on_fill(self, fill: Fill) -> None:
        self.fills += 1
        self._emit("account_fills", NO_LABELS, self.fills, fill.ts_event)
        symbol = fill.symbol
        configured = self.config.symbols.get(symbol)
        if configured is None:
            self._foreign(symbol, fill.ts_event)
            return
        applied = self._applied.get(symbol)
        if applied is not None:
            self._emit("fill_leverage_mismatch", self._labels[symbol], applied != configured.leverage, fill.ts_event)
        order = self._orders.get(fill.order_id)
        if order is None:
            self.stats.unsized_fills += 1
            return
        if order.reduce_only or symbol not in self._limits:  # a reduce-only order adds no exposure
            return
        self._emit("fill_notional_ratio", self._fill_labels[symbol], order.notional / self._limits[symbol],
                   fill.ts_event)

    def _on_account_update(self, update: AccountUpdate) -> None:
        if update.reason in TRANSFER_REASONS:
            self._on_transfer(update)
        for position in update.positions:
            key = (position.symbol, position.side)
            if position.symbol not in self.config.symbols:
                self._foreign_position(key, position.amount, update.ts_event)
            self._position_event_at[key] = update.ts_init
            self._unreported.pop(key, None)
            self._notional[key] = abs(position.amount * position.entry_price + position.unrealized_pnl)
        if self.stalled is not None and not self._unreported:
            self._set_stalled(None, update.ts_init)
        if update.positions and self.capital is not None:
            for symbol in dict.fromkeys(p.symbol for p in update.positions):  # once each, in order
                self._emit_exposure(symbol, update.ts_event)
            self._emit_total_exposure(update.ts_event)

    def _on_transfer(self, update: AccountUpdate) -> None:
        """Capital moved in or out: the balance change each balance states, counted into `funded`."""
        if self.funded is None:
            return  # before the first snapshot (whose wallet balance holds it), or unknown already
        for balance in update.balances:
            if balance.change is None or balance.asset not in DOLLARS:
                self.funding_unknown = (f"a {update.reason} of {balance.asset} "
                                        f"{'without its amount' if balance.change is None else 'not in dollars'}")
                self.funded = None  # fail closed: capital_share stops, its policy goes nodata
                log.warning("exchange_capital_moved_unknown", reason=self.funding_unknown)
                return
            self.funded += balance.change

    def _on_leverage(self, event: LeverageChanged) -> None:
        if event.symbol not in self.config.symbols:
            self._foreign(event.symbol, event.ts_event)
            return
        self._leverage_event_at[event.symbol] = event.ts_init
        self._apply_leverage(event.symbol, event.leverage, event.ts_event)

    def _on_multi_assets(self, event: MultiAssetsChanged) -> None:
        if self.modes is not None:
            self._emit("account_mode_mismatch", self._mode_labels["multi_assets"],
                       event.multi_assets != self.modes.multi_assets, event.ts_event)

    def _on_margin_call(self, call: MarginCall) -> None:
        self._emit("margin_calls", NO_LABELS, 1, call.ts_event)
        # The call's own numbers give the cross margin ratio at once, before the next snapshot.
        maintenance = sum((p.maintenance_margin for p in call.positions), ZERO)
        balance = call.cross_wallet_balance + sum((p.unrealized_pnl for p in call.positions), ZERO)
        ratio = maintenance / balance if balance > 0 else Decimal(maintenance > 0)  # as AccountSnapshot has it
        self._emit("margin_ratio", NO_LABELS, ratio, call.ts_event)

    def _on_stream_status(self, status: StreamStatus) -> None:
        self.connected = status.connected
        self._disconnect_reason = status.reason
        # A new connection starts the stall check afresh: what changed while it was down was
        # never the stream's to deliver (the stream's REST reconciliation covers fills).
        self._amounts, self._unreported, self.stalled = None, {}, None
        self._emit("stream_connected", NO_LABELS, status.connected, status.ts_event)
        if self.problem is None:
            self._beat(status.ts_init)
        else:
            self._fail(status.ts_init, self.problem)

    # --- snapshots ----------------------------------------------------------------------------------

    def on_settings(self, settings: Iterable[SymbolSettings], *, requested_at: float, at: float) -> None:
        """GET /fapi/v1/symbolConfig: applied leverage and margin type per configured symbol."""
        found = {s.symbol: s for s in settings}
        for symbol, configured in self.config.symbols.items():
            current = found.get(symbol)
            if current is None:  # the exchange applies nothing for it: the config cannot be met
                log.warning("exchange_symbol_unknown", symbol=symbol)
                self._emit("leverage_mismatch", self._labels[symbol], 1, at)
                continue
            self._emit("margin_type_mismatch", self._labels[symbol], current.margin_type != configured.margin_type, at)
            if self._leverage_event_at.get(symbol, -math.inf) >= requested_at:  # a tie: see `on_positions`
                self.stats.stale_snapshot_values += 1
                continue
            self._apply_leverage(symbol, current.leverage, at)

    def on_positions(self, positions: Iterable[Position], *, requested_at: float, at: float) -> None:
        """GET /fapi/v3/positionRisk (it lists only symbols with a position or open orders; in hedge
        mode one row per side)."""
        listed = {(p.symbol, p.side): p for p in positions}
        valued: set[str] = set()  # symbols with a position valued by this snapshot
        for key in sorted({(s, "BOTH") for s in self.config.symbols} | set(listed) | set(self._notional)):
            # A tie goes to the stream: a stepped clock stands still while the request is out, so an
            # event at the request's very time may be newer than the answer (a close it predates).
            if self._position_event_at.get(key, -math.inf) >= requested_at:
                self.stats.stale_snapshot_values += 1
                continue
            position = listed.get(key)
            self._notional[key] = abs(position.notional) if position is not None else ZERO
            valued.add(key[0])
        if self.capital is not None:
            for symbol in sorted(valued):
                self._emit_exposure(symbol, at)
            self._emit_total_exposure(at)
        for key in sorted(set(listed) | set(self._foreign_amounts)):
            symbol = key[0]
            if symbol in self.config.symbols:
                continue
            position = listed.get(key)
            amount = position.amount if position is not None else ZERO
            if self._positions_read:
                self._foreign_position(key, amount, at)
                continue
            # The first reading: the release may have traded before the view started. A position
            # that last changed before the placement began (a predecessor's, kept) is not its doing;
            # without the placement's time, any position outside the config is counted.
            self._foreign_amounts[key] = amount
            if amount and (self.placed_at is None or position.update_time >= self.placed_at):
                self._foreign(symbol, at)
        self._positions_read = True
        self._emit_isolated_margin(listed, at)
        self._check_stall({k: p.amount for k, p in listed.items() if p.amount}, requested_at, at)

    def on_modes(self, modes: AccountModes, *, at: float) -> None:
        """GET /fapi/v1/accountConfig: each mode against the one it must stay (the first reading,
        unless the view was given the modes the account had when the release was placed)."""
        if self.modes is None:
            self.modes = modes
        self._emit("account_mode_mismatch", self._mode_labels["position_mode"], modes.hedge != self.modes.hedge, at)
        self._emit("account_mode_mismatch", self._mode_labels["multi_assets"],
                   modes.multi_assets != self.modes.multi_assets, at)

    def on_account(self, account: AccountSnapshot, *, at: float) -> None:
        """GET /fapi/v2/account: margin ratio, and PnL against the starting capital."""
        if self.capital is None:
            self.set_capital(account.total_wallet_balance)
        if self.funded is None and self.funding_unknown is None:
            self.funded = account.total_wallet_balance  # what the account was given when the watch began
        self._unrealized = account.total_unrealized_pnl
        self._emit("margin_ratio", NO_LABELS, account.margin_ratio, at)
        pnl = account.total_wallet_balance + account.total_unrealized_pnl - self.capital
        self._emit("pnl_ratio", NO_LABELS, pnl / self.capital, at)

    def on_balances(self, own_wallet: Decimal, master: AccountSnapshot, subs: Iterable[SubAccountBalance], *,
                    at: float) -> None:
        """Over the firm's capital (the master's wallet plus every sub-account's): the capital moved
        into this account (``capital_share``, what the cap judges: a profit is not capital given), and
        its equity, wallet plus unrealized PnL (``equity_share``, judged against the cap plus headroom)."""
        total = master.total_wallet_balance + sum((s.wallet_balance for s in subs), ZERO)
        if total <= 0:
            return
        if self.funded is not None:
            self._emit("capital_share", NO_LABELS, self.funded / total, at)
        self._emit("equity_share", NO_LABELS, (own_wallet + self._unrealized) / total, at)

    def snapshot_done(self, at: float, error: str | None, *, report: bool = True) -> None:
        """End of a snapshot pass: a heartbeat, ok only if the pass and the stream are both healthy.

        With ``report=False`` (the pass before the stream starts) only a failure is reported.
        """
        self.snapshot_error = error
        problem = self.problem
        if problem is None:
            self._beat(at)
        elif error is not None or report:
            self._fail(at, problem)

    # --- internals -----------------------------------------------------------------------------------

    def _foreign_position(self, key: PositionKey, amount: Decimal, ts: float) -> None:
        """A position outside the config counts when it moves."""
        known = self._foreign_amounts.get(key, ZERO)
        self._foreign_amounts[key] = amount
        if amount != known:
            self._foreign(key[0], ts)

    def _foreign(self, symbol: str, ts: float) -> None:
        """An order, fill, position or leverage change on a symbol the config does not name."""
        self.stats.foreign_events += 1
        self._emit("foreign_activity", labels_of(symbol=symbol), 1, ts)

    def _emit_isolated_margin(self, listed: dict[PositionKey, Position], at: float) -> None:
        """Each isolated position's own margin ratio (maintenance margin over its isolated margin:
        1 is its liquidation), which the account's cross margin ratio does not include; a
        configured isolated symbol with no position reads 0, so its group stays fresh. A hedged
        symbol's two sides are two isolated positions: its figure is the nearer to liquidation."""
        sides: dict[str, list[Position]] = {symbol: [] for symbol, configured in self.config.symbols.items()
                                            if configured.margin_type == "ISOLATED"}
        for (symbol, _), position in listed.items():
            sides.setdefault(symbol, []).append(position)
        for symbol in sorted(sides):
            ratios = [ratio for ratio in map(self._isolated_ratio, sides[symbol] or [None]) if ratio is not None]
            if not ratios:
                continue  # only cross positions: the account's margin_ratio judges them
            ratio = max(ratios)
            if symbol in self.config.symbols or ratio:
                self._emit("isolated_margin_ratio", self._labels.get(symbol) or labels_of(symbol=symbol), ratio, at)

    @staticmethod
    def _isolated_ratio(position: Position | None) -> Decimal | None:
        """One position's isolated margin ratio: 0 when there is none, None for a cross position."""
        if position is None or not position.amount:
            return ZERO
        if position.isolated_margin == 0:
            return None
        if position.isolated_margin < 0:
            return Decimal(1)
        return position.maintenance_margin / position.isolated_margin

    def _apply_leverage(self, symbol: str, leverage: int, ts: float) -> None:
        self._applied[symbol] = leverage
        labels = self._labels[symbol]
        self._emit("leverage_applied", labels, leverage, ts)
        self._emit("leverage_mismatch", labels, leverage != self.config.symbols[symbol].leverage, ts)

    def _emit_exposure(self, symbol: str, ts: float) -> None:
        """The symbol's notional over capital: its sides summed (one in one-way mode, two hedged)."""
        labels = self._labels.get(symbol)
        if labels is None:
            labels = self._labels[symbol] = labels_of(symbol=symbol)
        notional = sum((self._notional.get((symbol, side), ZERO) for side in SIDES), ZERO)
        self._emit("exposure_ratio", labels, notional / self.capital, ts)

    def _emit_total_exposure(self, ts: float) -> None:
        self._emit("exposure_total_ratio", NO_LABELS, sum(self._notional.values(), ZERO) / self.capital, ts)

    def _check_stall(self, amounts: dict[PositionKey, Decimal], requested_at: float, at: float) -> None:
        """A position that changed between two snapshots must have come with an ACCOUNT_UPDATE;
        one still missing a pass later means the stream is connected but silent."""
        previous, since = self._amounts, self._amounts_at
        self._amounts, self._amounts_at = amounts, requested_at
        if previous is None or not self.connected:
            return
        for key in amounts.keys() | previous.keys():
            moved = amounts.get(key, ZERO) != previous.get(key, ZERO)
            if moved and self._position_event_at.get(key, -math.inf) < since:
                self._unreported.setdefault(key, (since, requested_at))
        late = sorted(symbol if side == "BOTH" else f"{symbol} {side}"
                      for (symbol, side), (_, seen) in self._unreported.items() if seen < requested_at)
        if late and self.stalled is None:
            self._set_stalled(f"the user-data stream is connected but silent: positions of {', '.join(late)} "
                              "changed without an ACCOUNT_UPDATE", at)

    def _set_stalled(self, reason: str | None, at: float) -> None:
        """Found silent (the pass's `snapshot_done` reports it), or delivering again."""
        self.stalled = reason
        self._emit("stream_connected", NO_LABELS, reason is None, at)
        if reason is not None:
            log.warning("exchange_stream_silent", reason=reason)
        elif self.problem is None:
            self._beat(at)

    def _emit(self, metric: str, labels: Labels, value: Decimal | int | bool, ts: float) -> None:
        self.sink(Observation(SOURCE, metric, labels, float(value), ts))

    def _beat(self, at: float) -> None:
        self._last_beat = at
        self.sink(Heartbeat(SOURCE, at))

    def _fail(self, at: float, error: str) -> None:
        self.sink(Heartbeat(SOURCE, at, ok=False, error=error))
