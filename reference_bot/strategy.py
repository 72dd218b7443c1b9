"""The reference strategy's decisions: a seeded signal per symbol, and the orders it asks for.

Pure: no I/O, no clock; time and state come in as arguments. The direction of each symbol is
a seeded AR(1) score (``score = 0.95 * score + N(0, 1)``; LONG above +0.5, SHORT below -0.5,
FLAT between): persistent enough that a position builds up over several iterations, and it
flips often enough that positions close and buckets unlock. The same seed gives the same
directions, iteration by iteration, whatever the prices do. Mark prices set the limit price
and the size: one entry order's notional is ``allocation x capital x leverage x
order_fraction`` (`Strategy.order_notional`), rounded down to the step size.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum

from reference_bot.clock import Mark
from reference_bot.config import Strategy
from reference_bot.ledger import ENTRY, EXIT, TrackedOrder
from reference_bot.payloads import TradingRules

PERSISTENCE = 0.95
DEAD_BAND = 0.5


class Direction(IntEnum):
    SHORT = -1
    FLAT = 0
    LONG = 1


class Signal:
    """One seeded score per symbol; `next` moves it one iteration and reads its direction."""

    def __init__(self, seed: int, symbols: Iterable[str], *, persistence: float = PERSISTENCE,
                 band: float = DEAD_BAND) -> None:
        self._rng = {symbol: random.Random(f"{seed}:{symbol}") for symbol in symbols}
        self._score = dict.fromkeys(self._rng, 0.0)
        self._persistence = persistence
        self._band = band

    def next(self, symbol: str) -> Direction:
        score = self._persistence * self._score[symbol] + self._rng[symbol].gauss(0.0, 1.0)
        self._score[symbol] = score
        if score > self._band:
            return Direction.LONG
        if score < -self._band:
            return Direction.SHORT
        return Direction.FLAT


# --- commands (what the order sender carries out, in order) ---------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PlaceOrder:
    """Send one order. The bot fills in the client id and the times when it queues the command."""

    symbol: str
    side: str
    order_type: str                  # LIMIT or MARKET
    quantity: Decimal
    price: Decimal | None            # LIMIT only
    reference_price: Decimal         # what the order is valued at in the books (limit or mark price)
    purpose: str                     # ledger.ENTRY, EXIT or DEFECT
    reduce_only: bool = False
    client_order_id: str = ""
    signaled: Mark | None = None     # when the signal behind it was read; None: not from a signal
    queued: Mark | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelOrders:
    """Cancel every open order of a symbol (DELETE /fapi/v1/allOpenOrders)."""

    symbol: str
    reason: str
    queued: Mark | None = None


Command = PlaceOrder | CancelOrders


# --- sizing -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """A sized entry order: what is sent, and the margin the bucket check counts for it."""

    quantity: Decimal
    price: Decimal
    margin: Decimal


def size_entry(config: Strategy, symbol: str, capital: Decimal, mark: Decimal, filters: TradingRules,
               *, factor: Decimal = Decimal(1)) -> Entry | None:
    """The entry order for ``symbol`` at ``mark``; None when it would be below the exchange's minimum.

    ``factor`` (the oversized-orders defect) scales what is sent but not the margin the bucket
    check counts, the way a sizing bug slips past a correct check.
    """
    notional = config.order_notional(symbol, capital)
    price = filters.round_price(mark)
    if price <= 0:
        return None
    quantity = filters.round_quantity(notional * factor / price)
    if quantity < filters.min_qty or quantity * price < filters.min_notional:
        return None
    return Entry(quantity, price, notional / config.symbols[symbol].leverage)


# --- decisions --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SymbolView:
    """What a decision needs to know about one symbol."""

    symbol: str
    position: Decimal
    mark: Decimal
    orders: Sequence[TrackedOrder]
    cancel_queued: bool = False

    @property
    def entries(self) -> list[TrackedOrder]:
        return [o for o in self.orders if o.purpose == ENTRY]

    @property
    def exiting(self) -> bool:
        return any(o.purpose == EXIT for o in self.orders)


def decide(direction: Direction, view: SymbolView, entry: Entry | None, *, room: Decimal, now: float,
           ttl: float, max_open: int) -> list[Command]:
    """The commands that move ``view`` towards ``direction``.

    A position against the signal is closed (reduce-only market order) and its entries
    canceled; entries that are stale or on the wrong side are canceled; otherwise one more
    entry is placed while the symbol has fewer than ``max_open`` and the bucket has ``room``
    (its allocated margin minus what it commits) for it. Nothing is decided while a close or a
    cancel is still on its way: the next iteration sees its result.
    """
    if view.exiting or view.cancel_queued:
        return []
    live = [o for o in view.entries if not o.cancel_requested]
    if view.position != 0 and (1 if view.position > 0 else -1) != direction:
        commands: list[Command] = [CancelOrders(symbol=view.symbol, reason="closing")] if live else []
        side = "SELL" if view.position > 0 else "BUY"
        commands.append(PlaceOrder(symbol=view.symbol, side=side, order_type="MARKET", quantity=abs(view.position),
                                   price=None, reference_price=view.mark, purpose=EXIT, reduce_only=True))
        return commands
    if direction == Direction.FLAT:
        return [CancelOrders(symbol=view.symbol, reason="flat")] if any(o.order_id is not None for o in live) else []
    side = "BUY" if direction == Direction.LONG else "SELL"
    if any(o.side != side for o in live):  # the signal flipped before these filled
        return [CancelOrders(symbol=view.symbol, reason="flipped")] if all(o.order_id for o in live) else []
    if any(o.order_id is not None and now - o.created_at >= ttl for o in live):
        return [CancelOrders(symbol=view.symbol, reason="stale")]
    if len(view.entries) >= max_open or entry is None or entry.margin > room:
        return []
    return [PlaceOrder(symbol=view.symbol, side=side, order_type="LIMIT", quantity=entry.quantity, price=entry.price,
                       reference_price=entry.price, purpose=ENTRY)]
