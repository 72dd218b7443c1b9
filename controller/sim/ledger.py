"""Account bookkeeping on the simulated exchange: what a trade does to a position and the wallet,
fees, funding fees and income history, the margin open orders hold, the margin a new order needs, margin calls.

The valuation itself (unrealised PnL, maintenance margin, liquidation price) is the account's
(`controller.sim.accounts`); this module changes the numbers it values. Synchronous, like the
matching engine that calls it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from controller.sim import codes
from controller.sim.accounts import ZERO, Account, AccountBook
from controller.sim.events import BalanceChanged, MarginCalled
from controller.sim.market import Market, SymbolSpec
from controller.sim.orders import Fill, Order

TAKER_FEE = Decimal("0.0005")   # Binance's default (VIP 0) USD-M rates
MAKER_FEE = Decimal("0.0002")
# Guessed: Binance does not publish the ratio at which MARGIN_CALL is pushed; 80 % is its
# app's "margin ratio high" warning level.
MARGIN_CALL_RATIO = Decimal("0.8")
COMMISSION_QUANTUM = Decimal("0.00000001")


@dataclass(frozen=True)
class Income:
    tran_id: int
    symbol: str
    type: str        # REALIZED_PNL | COMMISSION | TRANSFER | FUNDING_FEE
    amount: Decimal
    trade_id: int
    time_ms: int


class Ledger:
    """Keeps every account's wallet, positions, open-order margin and income history in step with its trades."""

    def __init__(self, market: Market, book: AccountBook, now_ms: Callable[[], int]) -> None:
        self.market = market
        self.now_ms = now_ms
        self.income: dict[str, list[Income]] = {a.name: [] for a in book}
        self._tran_ids = itertools.count(9_000_000_001)

    # -- before an order -----------------------------------------------------------------------

    def check_margin(self, account: Account, spec: SymbolSpec, side: str, qty: Decimal, price: Decimal,
                     position_side: str = "BOTH") -> None:
        """Raise unless the account can open what the order adds to its position, within the bracket's notional."""
        position = account.position(spec.symbol, position_side).amount
        signed = qty if side == "BUY" else -qty
        opposite = position != 0 and (position > 0) != (signed > 0)
        increase = max(ZERO, qty - abs(position)) if opposite else qty
        if increase == 0:
            return
        leverage = account.setting(spec.symbol).leverage
        resting = max(account.open_buy.get(spec.symbol, ZERO), account.open_sell.get(spec.symbol, ZERO))
        if abs(position + signed) * price + resting > spec.max_notional(leverage):
            raise codes.over_max_position()
        required = increase * price / leverage + increase * price * TAKER_FEE
        if required > account.totals(self.market).available:
            raise codes.insufficient_margin()

    # -- a trade -------------------------------------------------------------------------------

    def settle(self, account: Account, symbol: str, side: str, qty: Decimal, price: Decimal, *,
               maker: bool, now: int, position_side: str = "BOTH") -> tuple[Decimal, Decimal]:
        """Book a trade into the position (of ``position_side``) and the wallet; returns (realised PnL, commission)."""
        realized = self._apply_to_position(account, symbol, side, qty, price, now, position_side)
        commission = (qty * price * (MAKER_FEE if maker else TAKER_FEE)).quantize(COMMISSION_QUANTUM)
        account.wallet += realized - commission
        account.update_ms = now
        return realized, commission

    def _apply_to_position(self, account: Account, symbol: str, side: str, qty: Decimal,
                           price: Decimal, now: int, position_side: str) -> Decimal:
        """Position accounting, one-way or one leg of a hedge (which never flips: what closes it is
        bounded by it); returns the realised PnL of the closed part."""
        pos = account.position(symbol, position_side)
        setting = account.setting(symbol)
        signed = qty if side == "BUY" else -qty
        realized = ZERO
        if pos.amount == 0 or (pos.amount > 0) == (signed > 0):
            size = abs(pos.amount) + qty
            pos.entry_price = (abs(pos.amount) * pos.entry_price + qty * price) / size
            pos.amount += signed
            if setting.isolated:
                pos.isolated_wallet += qty * price / setting.leverage
        else:
            closing = min(qty, abs(pos.amount))
            direction = Decimal(1) if pos.amount > 0 else Decimal(-1)
            realized = closing * (price - pos.entry_price) * direction
            if setting.isolated:
                pos.isolated_wallet -= pos.isolated_wallet * closing / abs(pos.amount)
            pos.amount += signed
            if pos.amount == 0:
                pos.entry_price = ZERO
                pos.isolated_wallet = ZERO
            elif (pos.amount > 0) != (direction > 0):  # flipped: the rest opens at this price
                pos.entry_price = price
                if setting.isolated:
                    pos.isolated_wallet = abs(pos.amount) * price / setting.leverage
        pos.realized += realized
        pos.update_ms = now
        return realized

    def record_income(self, account: Account, fill: Fill) -> None:
        """The income history rows a fill makes: its realised PnL (if any) and its commission."""
        rows = self.income[account.name]
        if fill.realized_pnl:
            rows.append(Income(next(self._tran_ids), fill.symbol, "REALIZED_PNL", fill.realized_pnl,
                               fill.trade_id, fill.time_ms))
        rows.append(Income(next(self._tran_ids), fill.symbol, "COMMISSION", -fill.commission,
                           fill.trade_id, fill.time_ms))

    # -- open orders ---------------------------------------------------------------------------

    def reserve(self, account: Account, order: Order, open_orders: list[Order]) -> None:
        """Recompute the margin ``order`` holds, then the account's sums over ``open_orders`` (of its symbol)."""
        leverage = account.setting(order.symbol).leverage
        order.reserved = ZERO if order.reduces or not order.is_open else \
            order.remaining * order.price / leverage
        self.resum(account, order.symbol, open_orders)

    @staticmethod
    def resum(account: Account, symbol: str, open_orders: list[Order]) -> None:
        """The margin and the resting notional on each side that the open orders of ``symbol`` hold."""
        account.open_margin[symbol] = sum((o.reserved for o in open_orders), ZERO)
        account.open_buy[symbol] = sum((o.remaining * o.price for o in open_orders if o.side == "BUY"), ZERO)
        account.open_sell[symbol] = sum((o.remaining * o.price for o in open_orders if o.side == "SELL"), ZERO)

    # -- what the account is told --------------------------------------------------------------

    def transfer(self, source: Account, target: Account, amount: Decimal) -> list[BalanceChanged]:
        """Move ``amount`` USDT from one futures wallet to another (a master's sub-account transfer):
        an income row ``TRANSFER`` on each side, and an ACCOUNT_UPDATE ``WITHDRAW`` / ``DEPOSIT`` whose
        balance change is the amount (Binance's reasons for money leaving and entering the wallet)."""
        source.wallet -= amount
        target.wallet += amount
        now = self.now_ms()
        self.income[source.name].append(Income(next(self._tran_ids), "", "TRANSFER", -amount, 0, now))
        self.income[target.name].append(Income(next(self._tran_ids), "", "TRANSFER", amount, 0, now))
        return [self.balance_event(source, "WITHDRAW", [], -amount), self.balance_event(target, "DEPOSIT", [], amount)]

    def pay_funding(self, account: Account, symbol: str, fee: Decimal, time_ms: int, *,
                    side: str = "BOTH") -> BalanceChanged:
        """A position pays ``fee`` USDT of funding (receives it when negative): an income row
        ``FUNDING_FEE`` and an ACCOUNT_UPDATE ``FUNDING_FEE``. As Binance pushes it, a cross position's
        update carries the balance only; an isolated one's carries that position too, whose margin
        the fee comes out of."""
        fee = fee.quantize(COMMISSION_QUANTUM)
        account.wallet -= fee
        isolated = account.setting(symbol).isolated
        if isolated:
            account.position(symbol, side).isolated_wallet -= fee
        account.update_ms = time_ms
        self.income[account.name].append(Income(next(self._tran_ids), symbol, "FUNDING_FEE", -fee, 0, time_ms))
        totals = account.totals(self.market)
        positions = tuple(account.risks(self.market, [symbol])) if isolated else ()
        return BalanceChanged(account.name, "FUNDING_FEE", account.wallet, totals.cross_wallet, -fee,
                              positions, time_ms)

    def balance_event(self, account: Account, reason: str, symbols: list[str], change: Decimal) -> BalanceChanged:
        totals = account.totals(self.market)
        return BalanceChanged(account.name, reason, account.wallet, totals.cross_wallet, change,
                              tuple(account.risks(self.market, symbols)), self.now_ms())

    def margin_call(self, account: Account) -> list[MarginCalled]:
        """A MARGIN_CALL when the margin ratio first reaches the warning level; none again until it falls back."""
        totals = account.totals(self.market)
        if totals.maint_margin == 0 or totals.margin_ratio < MARGIN_CALL_RATIO:
            account.margin_called = False
            return []
        if account.margin_called:
            return []
        account.margin_called = True
        held = list(dict.fromkeys(s for (s, _), p in account.positions.items()
                                  if p.amount and not account.setting(s).isolated))
        return [MarginCalled(account.name, totals.cross_wallet,
                             tuple(r for r in account.risks(self.market, held) if r.amount), self.now_ms())]
