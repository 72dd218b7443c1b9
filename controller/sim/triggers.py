"""Conditional (algo) orders on the simulated exchange: they wait outside the book and, when the
price crosses their trigger, place a real order in it.

Since 2025-12-09 Binance takes STOP, STOP_MARKET, TAKE_PROFIT, TAKE_PROFIT_MARKET and
TRAILING_STOP_MARKET only through its Algo Order API (POST /fapi/v1/algoOrder; python-binance
1.0.37 routes them there, and POST /fapi/v1/order answers -4120). An algo order is NEW until the
price crosses its trigger; it then places a MARKET (or, for STOP and TAKE_PROFIT, a LIMIT) order
in the matching engine: TRIGGERING, the order's own events, TRIGGERED, and FINISHED once that
order is done (REJECTED if the engine refuses it), each pushed as ALGO_UPDATE.

Stops trigger when the price moves against the order's side (a SELL stop at or below its
trigger, a BUY stop at or above), take-profits the other way. A trailing stop activates at its
activation price (the current price by default), then follows the best price since and triggers
once the price comes back by its callback rate. Simplified: the simulator has one price per
symbol, so MARK_PRICE and CONTRACT_PRICE triggers both watch it.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import TYPE_CHECKING

from controller.sim import codes, filters
from controller.sim.accounts import ZERO, Account
from controller.sim.events import AlgoUpdated, Event
from controller.sim.market import SymbolSpec
from controller.sim.orders import NewOrder

if TYPE_CHECKING:
    from controller.sim.matching import MatchingEngine

MAX_ALGO_ORDERS = 10        # exchangeInfo's MAX_NUM_ALGO_ORDERS filter, per symbol
STOPS = ("STOP", "STOP_MARKET")
TAKE_PROFITS = ("TAKE_PROFIT", "TAKE_PROFIT_MARKET")
CLOSE_ALL_TYPES = ("STOP_MARKET", "TAKE_PROFIT_MARKET")
OPEN_STATUSES = ("NEW",)
_CLIENT_ID = re.compile(r"^[\.A-Z\:/a-z0-9_-]{1,36}$")
MIN_CALLBACK, MAX_CALLBACK = Decimal("0.1"), Decimal("10")


@dataclass(frozen=True)
class AlgoRequest:
    """A parsed POST /fapi/v1/algoOrder (algoType CONDITIONAL)."""

    symbol: str
    side: str
    type: str
    quantity: Decimal | None
    price: Decimal | None = None
    trigger_price: Decimal | None = None
    time_in_force: str | None = None
    working_type: str = "CONTRACT_PRICE"
    position_side: str = "BOTH"
    reduce_only: bool = False
    close_position: bool = False
    price_protect: bool = False
    activate_price: Decimal | None = None
    callback_rate: Decimal | None = None
    client_algo_id: str | None = None
    good_till_date: int = 0


@dataclass
class AlgoOrder:
    algo_id: int
    client_algo_id: str
    account: str
    symbol: str
    side: str
    type: str
    time_in_force: str
    quantity: Decimal           # ZERO for close-all (closePosition)
    price: Decimal              # ZERO for the *_MARKET types
    trigger_price: Decimal      # ZERO for a trailing stop
    working_type: str
    position_side: str
    reduce_only: bool
    close_position: bool
    price_protect: bool
    activate_price: Decimal
    callback_rate: Decimal
    create_ms: int
    update_ms: int
    good_till_date: int = 0
    status: str = "NEW"         # NEW | TRIGGERING | TRIGGERED | FINISHED | CANCELED | REJECTED | EXPIRED
    trigger_ms: int = 0
    actual_order_id: int | None = None
    reject_reason: str = ""
    activated: bool = False     # a trailing stop's activation price was reached
    extreme: Decimal = ZERO     # a trailing stop's best price since activation

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def is_trailing(self) -> bool:
        return self.type == "TRAILING_STOP_MARKET"


class TriggerBook:
    """Every account's algo orders; placed, cancelled, and triggered at each tick."""

    def __init__(self, engine: MatchingEngine) -> None:
        self.engine = engine
        self.orders: dict[int, AlgoOrder] = {}
        self._algo_ids = itertools.count(1_000_000_001)

    # -- queries -------------------------------------------------------------------------------

    def open_orders(self, account: Account, symbol: str | None = None) -> list[AlgoOrder]:
        return [a for a in self.orders.values() if a.account == account.name and a.is_open
                and (symbol is None or a.symbol == symbol)]

    def find(self, account: Account, algo_id: int | None, client_algo_id: str | None) -> AlgoOrder | None:
        if algo_id is not None:
            algo = self.orders.get(algo_id)
            return algo if algo is not None and algo.account == account.name else None
        found = [a for a in self.orders.values() if a.account == account.name and a.client_algo_id == client_algo_id]
        return max(found, key=lambda a: a.algo_id) if found else None

    # -- orders --------------------------------------------------------------------------------

    def place(self, account: Account, req: AlgoRequest) -> tuple[AlgoOrder, list[Event]]:
        spec = self.engine.spec(req.symbol)
        self._validate(account, req)
        mark = self.engine.market.price(spec.symbol)
        now = self.engine.now_ms()
        algo_id = next(self._algo_ids)
        trailing = req.type == "TRAILING_STOP_MARKET"
        algo = AlgoOrder(
            algo_id=algo_id, client_algo_id=req.client_algo_id or f"sim-algo-{algo_id}", account=account.name,
            symbol=spec.symbol, side=req.side, type=req.type, time_in_force=req.time_in_force or "GTC",
            quantity=req.quantity or ZERO, price=req.price or ZERO, trigger_price=req.trigger_price or ZERO,
            working_type=req.working_type, position_side=req.position_side, reduce_only=req.reduce_only,
            close_position=req.close_position, price_protect=req.price_protect,
            activate_price=req.activate_price or (mark if trailing else ZERO),
            callback_rate=req.callback_rate or ZERO, create_ms=now, update_ms=now,
            good_till_date=req.good_till_date,
        )
        self.orders[algo_id] = algo
        return algo, [self._update(algo)] + self._watch(algo, mark)

    def cancel(self, account: Account, algo_id: int | None, client_algo_id: str | None) -> tuple[AlgoOrder, list[Event]]:
        if algo_id is None and client_algo_id is None:
            raise codes.BinanceError(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, "
                                            "but both were empty/null!")
        algo = self.find(account, algo_id, client_algo_id)
        if algo is None or not algo.is_open:
            raise codes.unknown_order()
        return algo, [self._finish(algo, "CANCELED")]

    def cancel_all(self, account: Account, symbol: str) -> list[Event]:
        self.engine.spec(symbol)
        return [self._finish(a, "CANCELED") for a in self.open_orders(account, symbol)]

    # -- time ----------------------------------------------------------------------------------

    def on_tick(self) -> list[Event]:
        """Trigger what the price crossed; finish what a triggered order completed."""
        events: list[Event] = []
        for algo in list(self.orders.values()):
            if algo.status == "TRIGGERED":
                order = self.engine.orders[algo.actual_order_id]  # type: ignore[index]
                if not order.is_open:
                    events.append(self._finish(algo, "FINISHED"))
            elif algo.is_open:
                events += self._watch(algo, self.engine.market.price(algo.symbol))
        return events

    # -- internals -----------------------------------------------------------------------------

    def _validate(self, account: Account, req: AlgoRequest) -> None:
        spec = self.engine.spec(req.symbol)
        if req.side not in ("BUY", "SELL"):
            raise codes.bad_side()
        if req.type not in filters.ALGO_TYPES:
            raise codes.bad_order_type()
        if req.working_type not in ("MARK_PRICE", "CONTRACT_PRICE"):
            raise codes.bad_value("workingType")
        if req.client_algo_id is not None:
            if not _CLIENT_ID.match(req.client_algo_id):
                raise codes.bad_client_order_id()
            if any(a.client_algo_id == req.client_algo_id for a in self.open_orders(account)):
                raise codes.duplicate_client_order_id()
        if req.position_side not in ("BOTH", "LONG", "SHORT"):
            raise codes.bad_value("positionSide")
        if (req.position_side == "BOTH") == account.hedge:
            raise codes.position_side_mismatch()
        if account.hedge and req.reduce_only:
            raise codes.not_required("reduceOnly")
        if req.close_position:
            if req.type not in CLOSE_ALL_TYPES:
                # Guessed: Binance documents closePosition "used with STOP_MARKET or TAKE_PROFIT_MARKET" only.
                raise codes.bad_value("closePosition")
            if req.quantity is not None:
                raise codes.not_required("quantity")
            if req.reduce_only:
                raise codes.not_required("reduceOnly")
        elif req.quantity is None:
            raise codes.mandatory("quantity")
        mark = self.engine.market.price(spec.symbol)
        if req.type == "TRAILING_STOP_MARKET":
            if req.callback_rate is None:
                raise codes.mandatory("callbackRate")
            if not MIN_CALLBACK <= req.callback_rate <= MAX_CALLBACK:
                raise codes.bad_callback_rate()
            if req.activate_price is not None:
                self._check_price(spec, req.activate_price)
        else:
            if req.trigger_price is None:
                raise codes.mandatory("triggerPrice")
            self._check_price(spec, req.trigger_price)
            if _crossed(req.type, req.side, req.trigger_price, mark):
                raise codes.would_trigger_immediately()
        if not req.close_position:
            # The order it will place must pass the symbol's filters as a new order would.
            limit = req.type in ("STOP", "TAKE_PROFIT")
            filters.check(spec, NewOrder(
                symbol=spec.symbol, side=req.side, type="LIMIT" if limit else "MARKET", quantity=req.quantity,
                price=req.price if limit else None, time_in_force=(req.time_in_force or "GTC") if limit else None,
                reduce_only=req.reduce_only, good_till_date=req.good_till_date,
                position_side=req.position_side), self.engine.market)
        if len(self.open_orders(account, spec.symbol)) >= MAX_ALGO_ORDERS:
            raise codes.max_algo_orders()

    @staticmethod
    def _check_price(spec: SymbolSpec, price: Decimal) -> None:
        if price <= 0:
            raise codes.price_not_positive()
        if filters.places(price) > spec.price_precision:
            raise codes.bad_precision()
        if price % spec.tick:
            raise codes.price_not_on_tick()

    def _watch(self, algo: AlgoOrder, price: Decimal) -> list[Event]:
        """Trigger ``algo`` if ``price`` reached it (a trailing stop first moves with the price)."""
        if algo.is_trailing:
            if not algo.activated:
                reached = price >= algo.activate_price if algo.side == "SELL" else price <= algo.activate_price
                if not reached:
                    return []
                algo.activated, algo.extreme = True, price
            algo.extreme = max(algo.extreme, price) if algo.side == "SELL" else min(algo.extreme, price)
            rate = algo.callback_rate / 100
            back = price <= algo.extreme * (1 - rate) if algo.side == "SELL" else price >= algo.extreme * (1 + rate)
            return self._trigger(algo) if back else []
        return self._trigger(algo) if _crossed(algo.type, algo.side, algo.trigger_price, price) else []

    def _trigger(self, algo: AlgoOrder) -> list[Event]:
        account = self.engine.book[algo.account]
        now = self.engine.now_ms()
        algo.status, algo.trigger_ms, algo.update_ms = "TRIGGERING", now, now
        events: list[Event] = [self._update(algo)]
        limit = algo.type in ("STOP", "TAKE_PROFIT")
        quantity = algo.quantity
        if algo.close_position:
            quantity = abs(account.position(algo.symbol, algo.position_side).amount)
        try:
            if quantity <= 0:
                raise codes.reduce_only_rejected()  # close-all with nothing left to close
            _, order, placed = self.engine.place(account, NewOrder(
                symbol=algo.symbol, side=algo.side, type="LIMIT" if limit else "MARKET", quantity=quantity,
                price=algo.price if limit else None, time_in_force=algo.time_in_force if limit else None,
                reduce_only=(algo.reduce_only or algo.close_position) and algo.position_side == "BOTH",
                client_order_id=algo.client_algo_id, good_till_date=algo.good_till_date,
                position_side=algo.position_side, orig_type=algo.type))
        except codes.BinanceError as refused:
            algo.reject_reason = refused.msg
            return events + [self._finish(algo, "REJECTED")]
        algo.status, algo.actual_order_id = "TRIGGERED", order.order_id
        events += placed
        events.append(self._update(algo))
        if not order.is_open:
            events.append(self._finish(algo, "FINISHED"))
        return events

    def _finish(self, algo: AlgoOrder, status: str) -> AlgoUpdated:
        algo.status, algo.update_ms = status, self.engine.now_ms()
        return self._update(algo)

    def _update(self, algo: AlgoOrder) -> AlgoUpdated:
        placed = self.engine.orders.get(algo.actual_order_id) if algo.actual_order_id else None
        return AlgoUpdated(algo.account, replace(algo), algo.update_ms,
                           replace(placed) if placed is not None else None)


def _crossed(order_type: str, side: str, trigger: Decimal, price: Decimal) -> bool:
    """Whether ``price`` is at or past a stop's or take-profit's trigger for ``side``."""
    if order_type in STOPS:
        return price >= trigger if side == "BUY" else price <= trigger
    return price <= trigger if side == "BUY" else price >= trigger
