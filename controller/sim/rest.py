"""The REST endpoints: Binance's paths, parameters, security types and request weights.

Paths and versions are the ones python-binance 1.0.37 calls (e.g. `futures_position_information`
-> GET /fapi/v3/positionRisk, `futures_account` -> GET /fapi/v2/account, `futures_symbol_config`
-> GET /fapi/v1/symbolConfig), plus the other versions Binance still serves. Weights are those
of Binance's USD-M docs. Handlers are synchronous: they parse, ask the matching engine, publish
the resulting events, and return the JSON body.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from controller.sim import codes, wire
from controller.sim.accounts import Account, AccountBook, ApiKey
from controller.sim.auth import Security
from controller.sim.events import Event, MultiAssetsChanged
from controller.sim.faults import Faults
from controller.sim.funding import FundingBook
from controller.sim.market import Market, SymbolSpec
from controller.sim.matching import MatchingEngine
from controller.sim.orders import NewOrder
from controller.sim.triggers import AlgoRequest
from controller.sim.userstream import UserStreams

_DECIMAL = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_DECIMAL_RANGE = "^([0-9]{1,20})(\\.[0-9]{1,20})?$"


@dataclass(frozen=True)
class Call:
    account: Account | None
    params: dict[str, str]
    key: ApiKey | None = None
    """The account's key the request came with."""
    ip: str = "127.0.0.1"
    """Where the request came from (what a refusal of the key names)."""

    @property
    def user(self) -> Account:
        assert self.account is not None, "a signed endpoint always has an account"
        return self.account


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    handler: Callable[[Call], object]
    security: Security
    weight: Callable[[dict[str, str]], int]
    family: str = "fapi"      # which weight counter: fapi, sapi or api
    new_order: bool = False   # counts against the account's order rate limit
    trade: bool = False       # changes what the account holds: refused to a key that cannot trade futures


def _w(n: int) -> Callable[[dict[str, str]], int]:
    return lambda params: n


def _w_symbol(with_symbol: int, without: int) -> Callable[[dict[str, str]], int]:
    return lambda params: with_symbol if params.get("symbol") else without


class RestApi:
    """Binance's USD-M futures REST API (and the few spot/sapi calls a controller needs)."""

    def __init__(self, *, engine: MatchingEngine, market: Market, book: AccountBook,
                 streams: UserStreams, faults: Faults, funding: FundingBook,
                 now_ms: Callable[[], int], weight_limit: int) -> None:
        self.engine = engine
        self.market = market
        self.book = book
        self.streams = streams
        self.faults = faults
        self.funding = funding
        self.now_ms = now_ms
        self.weight_limit = weight_limit

    def endpoints(self) -> list[Endpoint]:
        S, K, N = Security.SIGNED, Security.KEY, Security.NONE
        return [
            Endpoint("GET", "/fapi/v1/ping", lambda c: {}, N, _w(1)),
            Endpoint("GET", "/fapi/v1/time", self.server_time, N, _w(1)),
            Endpoint("GET", "/fapi/v1/exchangeInfo", self.exchange_info, N, _w(1)),
            Endpoint("GET", "/fapi/v1/ticker/price", self.ticker_price, N, _w_symbol(1, 2)),
            Endpoint("GET", "/fapi/v2/ticker/price", self.ticker_price, N, _w_symbol(1, 2)),
            Endpoint("GET", "/fapi/v1/premiumIndex", self.premium_index, N, _w_symbol(1, 10)),
            Endpoint("GET", "/fapi/v1/fundingRate", self.funding_rate, N, _w(1)),
            Endpoint("GET", "/fapi/v1/ticker/bookTicker", self.book_ticker, N, _w_symbol(2, 5)),
            Endpoint("GET", "/fapi/v1/ticker/24hr", self.ticker_24hr, N, _w_symbol(1, 40)),
            Endpoint("POST", "/fapi/v1/order", self.new_order, S, _w(0), new_order=True, trade=True),
            Endpoint("POST", "/fapi/v1/order/test", self.test_order, S, _w(0), trade=True),
            Endpoint("PUT", "/fapi/v1/order", self.modify_order, S, _w(0), new_order=True, trade=True),
            Endpoint("GET", "/fapi/v1/order", self.query_order, S, _w(1)),
            Endpoint("DELETE", "/fapi/v1/order", self.cancel_order, S, _w(1), trade=True),
            Endpoint("DELETE", "/fapi/v1/allOpenOrders", self.cancel_all, S, _w(1), trade=True),
            Endpoint("GET", "/fapi/v1/openOrders", self.open_orders, S, _w_symbol(1, 40)),
            Endpoint("GET", "/fapi/v1/openOrder", self.open_order, S, _w(1)),
            Endpoint("GET", "/fapi/v1/allOrders", self.all_orders, S, _w(5)),
            Endpoint("GET", "/fapi/v1/forceOrders", self.force_orders, S, _w_symbol(20, 50)),
            Endpoint("POST", "/fapi/v1/algoOrder", self.new_algo_order, S, _w(0), new_order=True, trade=True),
            Endpoint("DELETE", "/fapi/v1/algoOrder", self.cancel_algo_order, S, _w(1), trade=True),
            Endpoint("DELETE", "/fapi/v1/algoOpenOrders", self.cancel_all_algo_orders, S, _w(1), trade=True),
            Endpoint("GET", "/fapi/v1/algoOrder", self.query_algo_order, S, _w(1)),
            Endpoint("GET", "/fapi/v1/openAlgoOrders", self.open_algo_orders, S, _w_symbol(1, 40)),
            Endpoint("GET", "/fapi/v1/allAlgoOrders", self.all_algo_orders, S, _w(5)),
            Endpoint("GET", "/fapi/v1/userTrades", self.user_trades, S, _w(5)),
            Endpoint("GET", "/fapi/v1/income", self.income, S, _w(30)),
            Endpoint("GET", "/fapi/v2/account", self.account_v2, S, _w(5)),
            Endpoint("GET", "/fapi/v3/account", self.account_v3, S, _w(5)),
            Endpoint("GET", "/fapi/v2/balance", self.balance, S, _w(5)),
            Endpoint("GET", "/fapi/v3/balance", self.balance, S, _w(5)),
            Endpoint("GET", "/fapi/v2/positionRisk", self.position_risk_v2, S, _w(5)),
            Endpoint("GET", "/fapi/v3/positionRisk", self.position_risk_v3, S, _w(5)),
            Endpoint("GET", "/fapi/v1/symbolConfig", self.symbol_config, S, _w(5)),
            Endpoint("GET", "/fapi/v1/accountConfig", self.account_config, S, _w(5)),
            Endpoint("POST", "/fapi/v1/leverage", self.change_leverage, S, _w(1), trade=True),
            Endpoint("POST", "/fapi/v1/marginType", self.change_margin_type, S, _w(1), trade=True),
            Endpoint("GET", "/fapi/v1/leverageBracket", self.leverage_bracket, S, _w(1)),
            Endpoint("GET", "/fapi/v1/positionSide/dual", self.position_mode, S, _w(30)),
            Endpoint("POST", "/fapi/v1/positionSide/dual", self.change_position_mode, S, _w(1), trade=True),
            Endpoint("GET", "/fapi/v1/multiAssetsMargin", self.multi_assets_mode, S, _w(30)),
            Endpoint("POST", "/fapi/v1/multiAssetsMargin", self.change_multi_assets_mode, S, _w(1), trade=True),
            Endpoint("GET", "/fapi/v1/commissionRate", self.commission_rate, S, _w(20)),
            Endpoint("POST", "/fapi/v1/listenKey", self.listen_key_create, K, _w(1)),
            Endpoint("PUT", "/fapi/v1/listenKey", self.listen_key_keepalive, K, _w(1)),
            Endpoint("DELETE", "/fapi/v1/listenKey", self.listen_key_close, K, _w(1)),
            Endpoint("GET", "/sapi/v1/sub-account/list", self.subaccount_list, S, _w(1), "sapi"),
            Endpoint("GET", "/sapi/v1/sub-account/futures/accountSummary", self.summary_v1, S, _w(1),
                     "sapi"),
            Endpoint("GET", "/sapi/v2/sub-account/futures/accountSummary", self.summary_v2, S, _w(10),
                     "sapi"),
            Endpoint("GET", "/sapi/v2/sub-account/futures/account", self.subaccount_detail, S, _w(1),
                     "sapi"),
            Endpoint("POST", "/sapi/v1/sub-account/futures/internalTransfer", self.internal_transfer, S, _w(1),
                     "sapi"),
            Endpoint("GET", "/sapi/v1/account/apiRestrictions", self.api_restrictions, S, _w(1), "sapi"),
            Endpoint("GET", "/api/v3/ping", lambda c: {}, N, _w(1), "api"),
            Endpoint("GET", "/api/v3/time", self.server_time, N, _w(1), "api"),
        ]

    # -- market data ---------------------------------------------------------------------------

    def server_time(self, call: Call) -> dict:
        return {"serverTime": self.now_ms()}

    def exchange_info(self, call: Call) -> dict:
        return wire.exchange_info(self.market, self.now_ms(), self.weight_limit)

    def ticker_price(self, call: Call) -> object:
        return self._per_symbol(call, lambda s: wire.ticker_price(s, self.market.price(s.symbol),
                                                                  self.now_ms()))

    def book_ticker(self, call: Call) -> object:
        return self._per_symbol(call, lambda s: wire.book_ticker(self.market, s, self.now_ms()))

    def ticker_24hr(self, call: Call) -> object:
        now = self.now_ms()
        return self._per_symbol(call, lambda s: wire.ticker_24hr(
            s, self.engine.tickers.stats(s.symbol, self.market.price(s.symbol), now)))

    def _per_symbol(self, call: Call, render: Callable) -> object:
        if call.params.get("symbol"):
            return render(self.engine.spec(call.params["symbol"]))
        return [render(spec) for spec in self.market.specs.values()]

    # -- funding: premium index and funding rate history ---------------------------------------

    def premium_index(self, call: Call) -> object:
        return self._per_symbol(call, lambda s: wire.premium_index(
            s, self.market.price(s.symbol), self.funding.state(s.symbol), self.now_ms()))

    def funding_rate(self, call: Call) -> list[dict]:
        """Settled rates, oldest first: the last `limit` (100, at most 1000), or the first from `startTime`."""
        p = call.params
        rows = self.funding.history
        if p.get("symbol"):
            symbol = self.engine.spec(p["symbol"]).symbol
            rows = [r for r in rows if r.symbol == symbol]
        limit = _limit(p, 100, 1000)
        if p.get("startTime"):
            return [wire.funding_rate(self.market.specs[r.symbol], r)
                    for r in _between(rows, p, lambda r: r.time_ms)[:limit]]
        rows = _between(rows, p, lambda r: r.time_ms)
        return [wire.funding_rate(self.market.specs[r.symbol], r) for r in rows[-limit:]]

    # -- orders --------------------------------------------------------------------------------

    def new_order(self, call: Call) -> dict:
        accepted, live, events = self.engine.place(call.user, self._new_order_request(call.params))
        self.publish(events)
        spec = self.market.specs[live.symbol]
        return wire.order(spec, live if call.params.get("newOrderRespType") == "RESULT" else accepted, "new")

    def test_order(self, call: Call) -> dict:
        """Validated as POST /fapi/v1/order would be (same errors); nothing is placed. Binance answers {}."""
        self.engine.validate(call.user, self._new_order_request(call.params))
        return {}

    def _new_order_request(self, p: dict[str, str]) -> NewOrder:
        return NewOrder(
            symbol=_required(p, "symbol"), side=_required(p, "side"), type=_required(p, "type"),
            quantity=_decimal(p, "quantity"), price=_decimal(p, "price"),
            time_in_force=p.get("timeInForce") or None, reduce_only=_bool(p, "reduceOnly"),
            client_order_id=p.get("newClientOrderId") or None,
            good_till_date=_int(p, "goodTillDate") or 0, position_side=p.get("positionSide") or "BOTH",
        )

    def modify_order(self, call: Call) -> dict:
        """PUT /fapi/v1/order: both quantity and price are mandatory (unlike /dapi's modify)."""
        spec, order_id, client_id = self._order_ref(call)
        side = _required(call.params, "side")
        if side not in ("BUY", "SELL"):
            raise codes.bad_side()
        quantity, price = _decimal(call.params, "quantity"), _decimal(call.params, "price")
        if quantity is None:
            raise codes.mandatory("quantity")
        if price is None:
            raise codes.mandatory("price")
        order, events = self.engine.modify(call.user, spec.symbol, order_id, client_id, side, quantity, price)
        self.publish(events)
        return wire.order(spec, order, "modify")

    def query_order(self, call: Call) -> dict:
        spec, order_id, client_id = self._order_ref(call)
        order = self.engine.find(call.user, spec.symbol, order_id, client_id)
        if order is None:
            raise codes.no_such_order()
        return wire.order(spec, order)

    def open_order(self, call: Call) -> dict:
        spec, order_id, client_id = self._order_ref(call)
        order = self.engine.find(call.user, spec.symbol, order_id, client_id)
        if order is None or not order.is_open:
            raise codes.no_such_order()
        return wire.order(spec, order)

    def cancel_order(self, call: Call) -> dict:
        spec, order_id, client_id = self._order_ref(call)
        order, events = self.engine.cancel(call.user, spec.symbol, order_id, client_id)
        self.publish(events)
        return wire.order(spec, order, "cancel")

    def cancel_all(self, call: Call) -> dict:
        symbol = _required(call.params, "symbol")
        self.publish(self.engine.cancel_all(call.user, symbol))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def open_orders(self, call: Call) -> list[dict]:
        symbol = call.params.get("symbol") or None
        if symbol:
            self.engine.spec(symbol)
        return [wire.order(self.market.specs[o.symbol], o)
                for o in self.engine.open_orders(call.user, symbol)]

    def all_orders(self, call: Call) -> list[dict]:
        spec = self.engine.spec(_required(call.params, "symbol"))
        orders = [o for o in self.engine.orders.values()
                  if o.account == call.user.name and o.symbol == spec.symbol]
        limit = _limit(call.params, 500, 1000)
        from_id = _int(call.params, "orderId")
        orders = _between(orders, call.params, lambda o: o.time_ms)
        if from_id is not None:  # Binance: "orders >= that orderId", read forward from it
            return [wire.order(spec, o) for o in orders if o.order_id >= from_id][:limit]
        return [wire.order(spec, o) for o in orders[-limit:]]

    def force_orders(self, call: Call) -> list[dict]:
        """GET /fapi/v1/forceOrders: the account's liquidation (client id ``autoclose-...``) and ADL
        (``adl_autoclose``) orders, both unless ``autoCloseType`` says one; default 50, at most 100."""
        p = call.params
        kind = p.get("autoCloseType")
        if kind not in (None, "LIQUIDATION", "ADL"):
            raise codes.bad_value("autoCloseType")
        symbol = self.engine.spec(p["symbol"]).symbol if p.get("symbol") else None

        def closed_by_exchange(order) -> bool:
            adl = order.client_order_id.startswith("adl_autoclose")
            liquidation = order.client_order_id.startswith("autoclose-")
            return (adl or liquidation) and kind in (None, "ADL" if adl else "LIQUIDATION")

        orders = [o for o in self.engine.orders.values() if o.account == call.user.name
                  and (symbol is None or o.symbol == symbol) and closed_by_exchange(o)]
        orders = _between(orders, p, lambda o: o.time_ms)
        return [wire.order(self.market.specs[o.symbol], o, "force") for o in orders[-_limit(p, 50, 100):]]

    # -- conditional (algo) orders -------------------------------------------------------------

    def new_algo_order(self, call: Call) -> dict:
        p = call.params
        if _required(p, "algoType") != "CONDITIONAL":
            raise codes.bad_value("algoType")
        algo, events = self.engine.triggers.place(call.user, AlgoRequest(
            symbol=_required(p, "symbol"), side=_required(p, "side"), type=_required(p, "type"),
            quantity=_decimal(p, "quantity"), price=_decimal(p, "price"), trigger_price=_decimal(p, "triggerPrice"),
            time_in_force=p.get("timeInForce") or None, working_type=p.get("workingType") or "CONTRACT_PRICE",
            position_side=p.get("positionSide") or "BOTH", reduce_only=_bool(p, "reduceOnly"),
            close_position=_bool(p, "closePosition"), price_protect=_bool(p, "priceProtect"),
            activate_price=_decimal(p, "activatePrice"), callback_rate=_decimal(p, "callbackRate"),
            client_algo_id=p.get("clientAlgoId") or None, good_till_date=_int(p, "goodTillDate") or 0,
        ))
        self.publish(events)
        return wire.algo_order(self.market.specs[algo.symbol], algo, "new")

    def cancel_algo_order(self, call: Call) -> dict:
        algo, events = self.engine.triggers.cancel(call.user, _int(call.params, "algoId"),
                                                   call.params.get("clientAlgoId") or None)
        self.publish(events)
        return {"algoId": algo.algo_id, "clientAlgoId": algo.client_algo_id, "code": "200", "msg": "success"}

    def cancel_all_algo_orders(self, call: Call) -> dict:
        self.publish(self.engine.triggers.cancel_all(call.user, _required(call.params, "symbol")))
        return {"code": 200, "msg": "The operation of cancel all open order is done."}

    def query_algo_order(self, call: Call) -> dict:
        algo_id, client_id = _int(call.params, "algoId"), call.params.get("clientAlgoId") or None
        if algo_id is None and client_id is None:
            raise codes.BinanceError(-1102, "Param 'clientAlgoId' or 'algoId' must be sent, "
                                            "but both were empty/null!")
        algo = self.engine.triggers.find(call.user, algo_id, client_id)
        if algo is None:
            raise codes.no_such_order()
        return wire.algo_order(self.market.specs[algo.symbol], algo)

    def open_algo_orders(self, call: Call) -> list[dict]:
        symbol = call.params.get("symbol") or None
        if symbol:
            self.engine.spec(symbol)
        return [wire.algo_order(self.market.specs[a.symbol], a)
                for a in self.engine.triggers.open_orders(call.user, symbol)]

    def all_algo_orders(self, call: Call) -> list[dict]:
        spec = self.engine.spec(_required(call.params, "symbol"))
        algos = [a for a in self.engine.triggers.orders.values()
                 if a.account == call.user.name and a.symbol == spec.symbol]
        algos = _between(algos, call.params, lambda a: a.create_ms)
        limit = _limit(call.params, 500, 1000)
        from_id = _int(call.params, "algoId")
        if from_id is not None:
            return [wire.algo_order(spec, a) for a in algos if a.algo_id >= from_id][:limit]
        return [wire.algo_order(spec, a) for a in algos[-limit:]]

    def _order_ref(self, call: Call) -> tuple[SymbolSpec, int | None, str | None]:
        spec = self.engine.spec(_required(call.params, "symbol"))
        order_id = _int(call.params, "orderId")
        client_id = call.params.get("origClientOrderId") or None
        if order_id is None and client_id is None:
            raise codes.BinanceError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, "
                                            "but both were empty/null!")
        return spec, order_id, client_id

    # -- trades and income ---------------------------------------------------------------------

    def user_trades(self, call: Call) -> list[dict]:
        p = call.params
        spec = self.engine.spec(_required(p, "symbol"))
        trades = [t for t in self.engine.trades[call.user.name] if t.symbol == spec.symbol]
        order_id, from_id = _int(p, "orderId"), _int(p, "fromId")
        if order_id is not None:
            trades = [t for t in trades if t.order_id == order_id]
        if from_id is not None:
            trades = [t for t in trades if t.trade_id >= from_id]
            return [wire.trade(spec, t) for t in trades[:_limit(p, 500, 1000)]]
        trades = _between(trades, p, lambda t: t.time_ms)
        return [wire.trade(spec, t) for t in trades[-_limit(p, 500, 1000):]]

    def income(self, call: Call) -> list[dict]:
        p = call.params
        rows = self.engine.ledger.income[call.user.name]
        if p.get("symbol"):
            rows = [r for r in rows if r.symbol == p["symbol"]]
        if p.get("incomeType"):
            rows = [r for r in rows if r.type == p["incomeType"]]
        rows, limit = _between(rows, p, lambda r: r.time_ms), _limit(p, 100, 1000)
        # Binance: a window holding more than `limit` rows answers its first `limit` (from startTime on);
        # with no startTime, the most recent `limit`.
        return [wire.income(r) for r in (rows[:limit] if p.get("startTime") else rows[-limit:])]

    # -- account -------------------------------------------------------------------------------

    def account_v2(self, call: Call) -> dict:
        return wire.account_v2(call.user, self.market)

    def account_v3(self, call: Call) -> dict:
        return wire.account_v3(call.user, self.market, self._active(call.user))

    def balance(self, call: Call) -> list[dict]:
        return wire.balance(call.user, self.market)

    def position_risk_v2(self, call: Call) -> list[dict]:
        symbols = [self.engine.spec(call.params["symbol"]).symbol] if call.params.get("symbol") else None
        return [wire.position_v2(self.market.specs[r.symbol], r)
                for r in call.user.risks(self.market, symbols)]

    def position_risk_v3(self, call: Call) -> list[dict]:
        """v3 lists only symbols with a position or open orders (Binance's documented rule); in hedge
        mode, a side of such a symbol only when it is held or the symbol has open orders (guessed)."""
        active = self._active(call.user)
        if call.params.get("symbol"):
            symbol = self.engine.spec(call.params["symbol"]).symbol
            active = [s for s in active if s == symbol]
        with_orders = {o.symbol for o in self.engine.open_orders(call.user)}
        return [wire.position_v3(self.market.specs[r.symbol], r)
                for r in call.user.risks(self.market, active)
                if r.amount or r.symbol in with_orders or r.position_side == "BOTH"]

    def symbol_config(self, call: Call) -> list[dict]:
        symbols = [self.engine.spec(call.params["symbol"]).symbol] if call.params.get("symbol") else None
        names = symbols or list(self.market.specs)
        return [wire.symbol_config(call.user.risk(self.market.specs[s], self.market)) for s in names]

    def account_config(self, call: Call) -> dict:
        return {"feeTier": 0, "canTrade": True, "canDeposit": True, "canWithdraw": True,
                "dualSidePosition": call.user.hedge, "updateTime": 0, "multiAssetsMargin": call.user.multi_assets,
                "tradeGroupId": -1}

    def change_leverage(self, call: Call) -> dict:
        symbol = _required(call.params, "symbol")
        leverage = _int(call.params, "leverage")
        if leverage is None:
            raise codes.mandatory("leverage")
        applied = not self.faults.leverage_ignored(call.user.name, symbol)
        value, max_notional, events = self.engine.set_leverage(call.user, symbol, leverage, apply=applied)
        self.publish(events)
        return {"leverage": value, "maxNotionalValue": wire.plain(max_notional), "symbol": symbol}

    def change_margin_type(self, call: Call) -> dict:
        symbol = _required(call.params, "symbol")
        margin_type = _required(call.params, "marginType").upper()
        self.publish(self.engine.set_margin_type(call.user, symbol, margin_type))
        return {"code": 200, "msg": "success"}

    def position_mode(self, call: Call) -> dict:
        return {"dualSidePosition": call.user.hedge}

    def multi_assets_mode(self, call: Call) -> dict:
        return {"multiAssetsMargin": call.user.multi_assets}

    def change_position_mode(self, call: Call) -> dict:
        """One-way (positionSide BOTH) or hedge mode (LONG and SHORT). Binance pushes no user-stream
        event for it: only reading the mode shows the change."""
        dual = _bool(call.params, "dualSidePosition")
        if dual == call.user.hedge:
            raise codes.position_side_unchanged()
        if self.engine.open_orders(call.user) or self.engine.triggers.open_orders(call.user):
            raise codes.position_side_open_orders()
        if any(p.amount for p in call.user.positions.values()):
            raise codes.position_side_position()
        call.user.hedge = dual
        return {"code": 200, "msg": "success"}

    def change_multi_assets_mode(self, call: Call) -> dict:
        """Recorded and answered; margin stays single-asset (USDT). Pushes ACCOUNT_CONFIG_UPDATE ``ai``."""
        multi = _bool(call.params, "multiAssetsMargin")
        if multi == call.user.multi_assets:
            raise codes.multi_assets_unchanged()
        call.user.multi_assets = multi
        self.publish([MultiAssetsChanged(call.user.name, multi, self.now_ms())])
        return {"code": 200, "msg": "success"}

    def leverage_bracket(self, call: Call) -> object:
        if call.params.get("symbol"):
            # Binance answers a single object when a symbol is given, a list otherwise.
            return wire.brackets(self.engine.spec(call.params["symbol"]))
        return [wire.brackets(spec) for spec in self.market.specs.values()]

    def commission_rate(self, call: Call) -> dict:
        spec = self.engine.spec(_required(call.params, "symbol"))
        return {"symbol": spec.symbol, "makerCommissionRate": "0.000200",
                "takerCommissionRate": "0.000500"}

    def _active(self, account: Account) -> list[str]:
        with_orders = {o.symbol for o in self.engine.open_orders(account)}
        return [s for s in self.market.specs
                if s in with_orders or account.holds(s)]

    # -- user-data stream ----------------------------------------------------------------------

    def listen_key_create(self, call: Call) -> dict:
        return {"listenKey": self.streams.create(call.user)}

    def listen_key_keepalive(self, call: Call) -> dict:
        return {"listenKey": self.streams.keepalive(call.user, call.params.get("listenKey"))}

    def listen_key_close(self, call: Call) -> dict:
        self.streams.close(call.user, call.params.get("listenKey"))
        return {}

    # -- sub-accounts (master only, /sapi on the spot host) ------------------------------------

    def _master(self, call: Call) -> Account:
        if not call.user.master:
            # Guessed: the code Binance gives a sub-account key on a master-only endpoint.
            raise codes.BinanceError(-1002, "You are not authorized to execute this request.", 401)
        return call.user

    def subaccount_list(self, call: Call) -> dict:
        self._master(call)
        return {"subAccounts": [{"email": a.email, "isFreeze": False, "createTime": 1700000000000,
                                 "isManagedSubAccount": False, "isAssetManagementSubAccount": False}
                                for a in self.book.subaccounts()]}

    def summary_v1(self, call: Call) -> dict:
        self._master(call)
        return wire.subaccounts_summary(
            [(a.email, a.totals(self.market)) for a in self.book.subaccounts()])

    def summary_v2(self, call: Call) -> dict:
        self._master(call)
        self._usdm(call)
        subs = self.book.subaccounts()
        page, limit = _int(call.params, "page") or 1, min(_int(call.params, "limit") or 10, 20)
        chosen = subs[(page - 1) * limit: page * limit]
        return {"futureAccountSummaryResp": wire.subaccounts_summary(
            [(a.email, a.totals(self.market)) for a in chosen])}

    def subaccount_detail(self, call: Call) -> dict:
        self._master(call)
        self._usdm(call)
        email = _required(call.params, "email")
        for account in self.book.subaccounts():
            if account.email == email:
                return {"futureAccountResp": wire.subaccount_detail(account, self.market)}
        raise codes.bad_value("email")

    def internal_transfer(self, call: Call) -> dict:
        """A master moves USDT between the USD-M futures wallets of its accounts (itself or a sub-account),
        with a key allowed internal transfers (-2015 otherwise, as for any right a key lacks)."""
        self._master(call)
        if call.key is None or not call.key.rights.get("enableInternalTransfer"):
            raise codes.rejected_key(call.ip)
        self._usdm(call)
        if _required(call.params, "asset").upper() != "USDT":
            raise codes.unsupported("The simulator's wallets hold USDT only.")
        amount = _decimal(call.params, "amount")
        if amount is None:
            raise codes.mandatory("amount")
        if amount <= 0:
            raise codes.bad_value("amount")
        emails = {a.email: a for a in self.book}
        source, target = (emails.get(_required(call.params, name)) for name in ("fromEmail", "toEmail"))
        if source is None or target is None or source is target:
            raise codes.bad_value("fromEmail" if source is None else "toEmail")
        if source.totals(self.market).available < amount:
            raise codes.insufficient_margin()
        self.publish(self.engine.ledger.transfer(source, target, amount))
        return {"success": True, "txnId": str(self.engine.ledger.income[target.name][-1].tran_id)}

    def api_restrictions(self, call: Call) -> dict:
        """What the calling key may do: its rights (a knob, `Account.set_api_rights`) in Binance's fields."""
        rights = call.key.rights if call.key is not None else call.user.api_rights
        return {"createTime": 1700000000000, "tradingAuthorityExpirationTime": 0, **rights}

    def _usdm(self, call: Call) -> None:
        futures_type = _required(call.params, "futuresType")
        if futures_type == "2":
            raise codes.unsupported("The simulator has USD-M futures only (futuresType=1).")
        if futures_type != "1":
            raise codes.bad_value("futuresType")

    # -- events --------------------------------------------------------------------------------

    def publish(self, events: list[Event]) -> None:
        """Render one exchange action's events and push them to each account's streams."""
        by_account: dict[str, list[dict]] = {}
        for e in events:
            account = self.book[e.account]
            by_account.setdefault(e.account, []).append(wire.event(e, self.market, account))
        for name, payloads in by_account.items():
            self.streams.publish(name, payloads)



# -- parameter parsing -------------------------------------------------------------------------


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise codes.mandatory(name)
    return value


def _decimal(params: dict[str, str], name: str) -> Decimal | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if not _DECIMAL.match(value):
        raise codes.illegal_chars(name, _DECIMAL_RANGE)
    return Decimal(value)


def _int(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise codes.illegal_chars(name, "^[0-9]{1,20}$") from None


def _bool(params: dict[str, str], name: str) -> bool:
    # python-binance sends Python booleans as "True"/"False"; Binance accepts either case.
    value = params.get(name, "false").lower()
    if value not in ("true", "false"):
        raise codes.bad_value(name)
    return value == "true"


def _limit(params: dict[str, str], default: int, maximum: int) -> int:
    limit = _int(params, "limit") or default
    if not 1 <= limit <= maximum:
        raise codes.bad_value("limit")
    return limit


def _between(rows: list, params: dict[str, str], time_of: Callable) -> list:
    start, end = _int(params, "startTime"), _int(params, "endTime")
    return [r for r in rows if (start is None or time_of(r) >= start)
            and (end is None or time_of(r) <= end)]
