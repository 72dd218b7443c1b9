"""Binance's JSON shapes for the simulator's state: REST responses and user-data events.

Field names follow Binance's USD-M documentation and the response models of Binance's own
`binance-sdk-derivatives-trading-usds-futures` (18.1). Numbers are strings as Binance sends
them (prices to the symbol's precision, money to 8 decimals); ids, times, leverage and bracket
numbers are JSON numbers.

Where the SDK's models and Binance's documentation disagree, the documentation wins:
- New, Modify and Cancel Order answers carry ``avgPrice`` and ``cumQuote`` (Cancel: ``cumQuote``
  only), as Binance's response examples show; the SDK's models leave them out.
- The leverage brackets' ``cum`` is a decimal number in both answers of GET
  /fapi/v1/leverageBracket (the list's example shows ``0.0``, and the maintenance amounts of
  higher brackets are not whole); the SDK types it an integer in the single-symbol answer only,
  from an example that reads ``0``.
- Account Information V2 positions carry ``breakEvenPrice`` (its response example).
- ``listenKeyExpired`` sends its event time as a string (its example, and the live API).
One way round: symbolConfig's ``isAutoAddMargin`` is a boolean as the SDK says, where the
docs' example shows a string (guessed: the SDK is the more recent source).
"""

from __future__ import annotations

from decimal import Decimal

from controller.sim.accounts import Account, PositionRisk, Totals
from controller.sim.events import AlgoUpdated, BalanceChanged, Event, LeverageChanged, MarginCalled, MultiAssetsChanged, OrderUpdated
from controller.sim.market import Bracket, Market, SymbolSpec
from controller.sim.filters import MAX_MODIFICATIONS, MAX_OPEN_ORDERS, PERCENT_PRICE_DOWN, PERCENT_PRICE_UP
from controller.sim.funding import INTEREST, FundingRate, FundingState
from controller.sim.ledger import Income
from controller.sim.orders import Fill, Order
from controller.sim.tickers import DailyStats
from controller.sim.triggers import MAX_ALGO_ORDERS, AlgoOrder

ZERO = Decimal(0)


def fmt(d: Decimal, places: int) -> str:
    return f"{d:.{places}f}"


def money(d: Decimal) -> str:
    return fmt(d, 8)


def plain(d: Decimal) -> str:
    return format(d.normalize(), "f") if d else "0"


def _price(spec: SymbolSpec, d: Decimal) -> str:
    return fmt(d, spec.price_precision) if d else "0"


def _qty(spec: SymbolSpec, d: Decimal) -> str:
    return fmt(d, spec.qty_precision)


# -- market ------------------------------------------------------------------------------------


def exchange_info(market: Market, server_ms: int, weight_limit: int) -> dict:
    return {
        "timezone": "UTC",
        "serverTime": server_ms,
        "futuresType": "U_MARGINED",
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
             "limit": weight_limit},
            {"rateLimitType": "ORDERS", "interval": "MINUTE", "intervalNum": 1, "limit": 1200},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 300},
        ],
        "exchangeFilters": [],
        "assets": [{"asset": "USDT", "marginAvailable": True, "autoAssetExchange": "-10000"}],
        "symbols": [_symbol(spec) for spec in market.specs.values()],
    }


def _symbol(spec: SymbolSpec) -> dict:
    return {
        "symbol": spec.symbol, "pair": spec.pair, "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000, "onboardDate": spec.onboard_ms, "status": "TRADING",
        "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
        "baseAsset": spec.base, "quoteAsset": spec.quote, "marginAsset": "USDT",
        "pricePrecision": spec.price_precision, "quantityPrecision": spec.qty_precision,
        "baseAssetPrecision": 8, "quotePrecision": 8, "underlyingType": "COIN",
        "underlyingSubType": [], "settlePlan": 0, "triggerProtect": "0.0500",
        "liquidationFee": "0.012500", "marketTakeBound": "0.05", "maxMoveOrderLimit": MAX_MODIFICATIONS,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": plain(spec.min_price),
             "maxPrice": plain(spec.max_price), "tickSize": str(spec.tick)},
            {"filterType": "LOT_SIZE", "minQty": str(spec.min_qty), "maxQty": str(spec.max_qty),
             "stepSize": str(spec.step)},
            {"filterType": "MARKET_LOT_SIZE", "minQty": str(spec.min_qty),
             "maxQty": str(spec.market_max_qty), "stepSize": str(spec.step)},
            {"filterType": "MAX_NUM_ORDERS", "limit": MAX_OPEN_ORDERS},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "limit": MAX_ALGO_ORDERS},
            {"filterType": "MIN_NOTIONAL", "notional": str(spec.min_notional)},
            {"filterType": "PERCENT_PRICE", "multiplierUp": f"{PERCENT_PRICE_UP:.4f}",
             "multiplierDown": f"{PERCENT_PRICE_DOWN:.4f}",
             "multiplierDecimal": "4"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT",
                       "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
    }


def brackets(spec: SymbolSpec) -> dict:
    return {"symbol": spec.symbol, "brackets": [_bracket(b) for b in spec.brackets]}


def _bracket(b: Bracket) -> dict:
    return {"bracket": b.number, "initialLeverage": b.leverage, "notionalCap": int(b.cap),
            "notionalFloor": int(b.floor), "maintMarginRatio": float(b.mmr), "cum": float(b.cum)}


def ticker_price(spec: SymbolSpec, price: Decimal, now_ms: int) -> dict:
    return {"symbol": spec.symbol, "price": _price(spec, price), "time": now_ms}


def premium_index(spec: SymbolSpec, price: Decimal, funding: FundingState, now_ms: int) -> dict:
    """lastFundingRate is the estimate for the window in progress, as Binance's is."""
    return {"symbol": spec.symbol, "markPrice": fmt(price, spec.price_precision + 6),
            "indexPrice": fmt(funding.index, spec.price_precision + 6),
            "estimatedSettlePrice": fmt(price, spec.price_precision + 6),
            "lastFundingRate": fmt(funding.rate, 8), "interestRate": fmt(INTEREST, 8),
            "nextFundingTime": funding.next_time_ms, "time": now_ms}


def funding_rate(spec: SymbolSpec, row: FundingRate) -> dict:
    return {"symbol": row.symbol, "fundingRate": fmt(row.rate, 8), "fundingTime": row.time_ms,
            "markPrice": fmt(row.mark, spec.price_precision + 6)}


def ticker_24hr(spec: SymbolSpec, stats: DailyStats) -> dict:
    return {
        "symbol": spec.symbol, "priceChange": _price(spec, stats.change),
        "priceChangePercent": fmt(stats.change_percent, 3), "weightedAvgPrice": _price(spec, stats.weighted_average),
        "lastPrice": _price(spec, stats.last), "lastQty": _qty(spec, stats.last_qty),
        "openPrice": _price(spec, stats.open), "highPrice": _price(spec, stats.high),
        "lowPrice": _price(spec, stats.low), "volume": _qty(spec, stats.volume),
        "quoteVolume": money(stats.quote_volume), "openTime": stats.open_time_ms,
        "closeTime": stats.close_time_ms, "firstId": stats.first_id, "lastId": stats.last_id,
        "count": stats.count,
    }


def book_ticker(market: Market, spec: SymbolSpec, now_ms: int) -> dict:
    level = _qty(spec, market.level_qty(spec.symbol))
    return {"symbol": spec.symbol, "bidPrice": _price(spec, market.best(spec.symbol, "SELL")),
            "bidQty": level, "askPrice": _price(spec, market.best(spec.symbol, "BUY")),
            "askQty": level, "time": now_ms, "lastUpdateId": now_ms}


# -- orders and trades -------------------------------------------------------------------------


# Which fields each answer about an order leaves out (Binance's response examples):
# POST answers carry cumQty but no time; GET (query, open orders) carry time and cumQuote but
# no cumQty; DELETE carries cumQty and cumQuote, no time and no avgPrice.
_ORDER_SHAPES = {"new": ("time",), "modify": ("time",), "query": ("cumQty",), "cancel": ("time", "avgPrice"),
                 # GET /fapi/v1/forceOrders (its response example and the SDK's model)
                 "force": ("cumQty", "priceProtect", "priceMatch", "selfTradePreventionMode", "goodTillDate")}


def order(spec: SymbolSpec, o: Order, shape: str = "query") -> dict:
    """An order as POST (``new``), PUT (``modify``), GET (``query``) or DELETE (``cancel``)
    /fapi/v1/order answer it, or GET /fapi/v1/forceOrders (``force``)."""
    answer = {
        "orderId": o.order_id, "symbol": o.symbol, "status": o.status,
        "clientOrderId": o.client_order_id, "price": _price(spec, o.price),
        "avgPrice": fmt(o.avg_price, max(5, spec.price_precision)),
        "origQty": _qty(spec, o.orig_qty), "executedQty": _qty(spec, o.executed_qty),
        "cumQty": _qty(spec, o.executed_qty), "cumQuote": money(o.cum_quote),
        "timeInForce": o.time_in_force, "type": o.type, "reduceOnly": o.reduce_only,
        "closePosition": False, "side": o.side, "positionSide": o.position_side, "stopPrice": "0",
        "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": o.orig_type or o.type,
        "priceMatch": "NONE", "selfTradePreventionMode": "EXPIRE_MAKER",
        "goodTillDate": o.good_till_date, "time": o.time_ms, "updateTime": o.update_ms,
    }
    for name in _ORDER_SHAPES[shape]:
        del answer[name]
    return answer


def algo_order(spec: SymbolSpec, a: AlgoOrder, shape: str = "query") -> dict:
    """An algo order as POST (``new``) or GET (``query``: one, open ones, all) /fapi/v1/algoOrder
    answer it: the answer to a new one carries a trailing stop's activation price and callback rate,
    a query the order it placed once triggered (an empty id before)."""
    answer = {
        "algoId": a.algo_id, "clientAlgoId": a.client_algo_id, "algoType": "CONDITIONAL", "orderType": a.type,
        "symbol": a.symbol, "side": a.side, "positionSide": a.position_side, "timeInForce": a.time_in_force,
        "quantity": _qty(spec, a.quantity), "algoStatus": a.status,
        "triggerPrice": _price(spec, a.trigger_price), "price": _price(spec, a.price),
        "selfTradePreventionMode": "EXPIRE_MAKER", "workingType": a.working_type,
        "priceMatch": "NONE", "closePosition": a.close_position, "priceProtect": a.price_protect,
        "reduceOnly": a.reduce_only, "createTime": a.create_ms, "updateTime": a.update_ms,
        "triggerTime": a.trigger_ms, "goodTillDate": a.good_till_date,
    }
    if shape == "new":
        if a.is_trailing:
            answer["activatePrice"] = _price(spec, a.activate_price)
            answer["callbackRate"] = plain(a.callback_rate)
    else:
        answer["actualOrderId"] = str(a.actual_order_id) if a.actual_order_id else ""
        answer["actualPrice"] = "0"  # Guessed: Binance's docs give this field no description
    return answer


def trade(spec: SymbolSpec, f: Fill) -> dict:
    return {
        "symbol": f.symbol, "id": f.trade_id, "orderId": f.order_id, "side": f.side,
        "price": _price(spec, f.price), "qty": _qty(spec, f.qty), "realizedPnl": money(f.realized_pnl),
        "marginAsset": "USDT", "quoteQty": money(f.quote_qty), "commission": money(f.commission),
        "commissionAsset": "USDT", "time": f.time_ms, "positionSide": f.position_side,
        "buyer": f.side == "BUY", "maker": f.maker,
    }


def income(row: Income) -> dict:
    return {"symbol": row.symbol, "incomeType": row.type, "income": money(row.amount),
            "asset": "USDT", "info": row.type, "time": row.time_ms, "tranId": row.tran_id,
            "tradeId": str(row.trade_id) if row.trade_id else ""}  # Binance: empty unless from a trade


# -- account -----------------------------------------------------------------------------------


def _margin_type(r: PositionRisk) -> str:
    """positionRisk v2 and ACCOUNT_UPDATE spell it in lower case; symbolConfig says CROSSED/ISOLATED."""
    return "isolated" if r.isolated else "cross"


def _isolated_margin(r: PositionRisk) -> str:
    return money(r.isolated_wallet + r.unrealized if r.isolated else ZERO)


def position_v2(spec: SymbolSpec, r: PositionRisk) -> dict:
    return {
        "symbol": r.symbol, "positionAmt": _qty(spec, r.amount), "entryPrice": plain(r.entry_price),
        "breakEvenPrice": plain(r.break_even), "markPrice": fmt(r.mark, spec.price_precision + 6),
        "unRealizedProfit": money(r.unrealized), "liquidationPrice": plain(r.liquidation_price),
        "leverage": str(r.leverage), "maxNotionalValue": plain(r.max_notional),
        "marginType": _margin_type(r), "isolatedMargin": _isolated_margin(r),
        "isAutoAddMargin": "false", "positionSide": r.position_side, "notional": plain(r.notional),
        "isolatedWallet": plain(r.isolated_wallet), "updateTime": r.update_ms,
    }


def position_v3(spec: SymbolSpec, r: PositionRisk) -> dict:
    """GET /fapi/v3/positionRisk: no leverage or margin type (those live in symbolConfig)."""
    return {
        "symbol": r.symbol, "positionSide": r.position_side, "positionAmt": _qty(spec, r.amount),
        "entryPrice": plain(r.entry_price), "breakEvenPrice": plain(r.break_even),
        "markPrice": fmt(r.mark, spec.price_precision + 6), "unRealizedProfit": money(r.unrealized),
        "liquidationPrice": plain(r.liquidation_price),
        "isolatedMargin": _isolated_margin(r),
        "notional": plain(r.notional), "marginAsset": "USDT", "isolatedWallet": plain(r.isolated_wallet),
        "initialMargin": money(r.initial_margin), "maintMargin": money(r.maint_margin),
        "positionInitialMargin": money(r.position_initial_margin),
        "openOrderInitialMargin": money(r.open_order_margin), "adl": 0,
        "bidNotional": plain(r.bid_notional), "askNotional": plain(r.ask_notional),
        "updateTime": r.update_ms,
    }


def symbol_config(r: PositionRisk) -> dict:
    # isAutoAddMargin: Binance's docs example shows "false" (a string) but its SDK models a
    # boolean; the SDK is the more recent source, so a boolean it is (guessed).
    return {"symbol": r.symbol, "marginType": r.margin_type, "isAutoAddMargin": False,
            "leverage": r.leverage, "maxNotionalValue": plain(r.max_notional)}


def _max_withdraw(t: Totals) -> Decimal:
    return max(ZERO, t.cross_wallet + min(ZERO, t.cross_unrealized) - t.initial_margin)


def _asset(t: Totals, update_ms: int) -> dict:
    return {
        "asset": "USDT", "walletBalance": money(t.wallet), "unrealizedProfit": money(t.unrealized),
        "marginBalance": money(t.margin_balance), "maintMargin": money(t.maint_margin),
        "initialMargin": money(t.initial_margin),
        "positionInitialMargin": money(t.position_initial_margin),
        "openOrderInitialMargin": money(t.open_order_margin),
        "crossWalletBalance": money(t.cross_wallet), "crossUnPnl": money(t.cross_unrealized),
        "availableBalance": money(t.available), "maxWithdrawAmount": money(_max_withdraw(t)),
        "marginAvailable": True, "updateTime": update_ms,
    }


def _totals(t: Totals) -> dict:
    return {
        "totalInitialMargin": money(t.initial_margin), "totalMaintMargin": money(t.maint_margin),
        "totalWalletBalance": money(t.wallet), "totalUnrealizedProfit": money(t.unrealized),
        "totalMarginBalance": money(t.margin_balance),
        "totalPositionInitialMargin": money(t.position_initial_margin),
        "totalOpenOrderInitialMargin": money(t.open_order_margin),
        "totalCrossWalletBalance": money(t.cross_wallet), "totalCrossUnPnl": money(t.cross_unrealized),
        "availableBalance": money(t.available), "maxWithdrawAmount": money(_max_withdraw(t)),
    }


def account_v2(account: Account, market: Market) -> dict:
    t = account.totals(market)
    positions = []
    for r in account.risks(market):
        spec = market.specs[r.symbol]
        positions.append({
            "symbol": r.symbol, "initialMargin": money(r.initial_margin),
            "maintMargin": money(r.maint_margin), "unrealizedProfit": money(r.unrealized),
            "positionInitialMargin": money(r.position_initial_margin),
            "openOrderInitialMargin": money(r.open_order_margin), "leverage": str(r.leverage),
            "isolated": r.isolated, "entryPrice": plain(r.entry_price),
            "breakEvenPrice": plain(r.break_even), "maxNotional": plain(r.max_notional),
            "bidNotional": plain(r.bid_notional), "askNotional": plain(r.ask_notional),
            "positionSide": r.position_side, "positionAmt": _qty(spec, r.amount), "updateTime": r.update_ms,
        })
    return {"feeTier": 0, "feeBurn": False, "canTrade": True, "canDeposit": True,
            "canWithdraw": True, "updateTime": 0, "multiAssetsMargin": False, "tradeGroupId": -1,
            **_totals(t), "assets": [_asset(t, account.update_ms)], "positions": positions}


def account_v3(account: Account, market: Market, active: list[str]) -> dict:
    t = account.totals(market)
    positions = []
    for r in account.risks(market, active):
        spec = market.specs[r.symbol]
        positions.append({
            "symbol": r.symbol, "positionSide": r.position_side, "positionAmt": _qty(spec, r.amount),
            "unrealizedProfit": money(r.unrealized),
            "isolatedMargin": _isolated_margin(r),
            "notional": plain(r.notional), "isolatedWallet": plain(r.isolated_wallet),
            "initialMargin": money(r.initial_margin), "maintMargin": money(r.maint_margin),
            "updateTime": r.update_ms,
        })
    return {**_totals(t), "assets": [_asset(t, account.update_ms)], "positions": positions}


def balance(account: Account, market: Market) -> list[dict]:
    t = account.totals(market)
    return [{"accountAlias": account.name, "asset": "USDT", "balance": money(t.wallet),
             "crossWalletBalance": money(t.cross_wallet), "crossUnPnl": money(t.cross_unrealized),
             "availableBalance": money(t.available), "maxWithdrawAmount": money(_max_withdraw(t)),
             "marginAvailable": True, "updateTime": account.update_ms}]


def subaccount_summary(t: Totals, email: str) -> dict:
    return {"email": email, **_summary(t)}


_SUMMARY_TOTALS = ("totalInitialMargin", "totalMaintenanceMargin", "totalMarginBalance",
                   "totalOpenOrderInitialMargin", "totalPositionInitialMargin",
                   "totalUnrealizedProfit", "totalWalletBalance")


def _summary(t: Totals) -> dict:
    return {"totalInitialMargin": money(t.initial_margin), "totalMaintenanceMargin": money(t.maint_margin),
            "totalMarginBalance": money(t.margin_balance),
            "totalOpenOrderInitialMargin": money(t.open_order_margin),
            "totalPositionInitialMargin": money(t.position_initial_margin),
            "totalUnrealizedProfit": money(t.unrealized), "totalWalletBalance": money(t.wallet),
            "asset": "USD"}


def subaccounts_summary(rows: list[tuple[str, Totals]]) -> dict:
    """GET /sapi/v1/sub-account/futures/accountSummary (v2 wraps it in futureAccountSummaryResp)."""
    subs = [subaccount_summary(t, email) for email, t in rows]
    totals = {k: money(sum((Decimal(s[k]) for s in subs), ZERO)) for k in _SUMMARY_TOTALS}
    return {**totals, "asset": "USD", "subAccountList": subs}


def subaccount_detail(account: Account, market: Market) -> dict:
    t = account.totals(market)
    asset = _asset(t, account.update_ms)
    return {"email": account.email, "asset": "USDT", "assets": [{
        "asset": "USDT", "initialMargin": asset["initialMargin"],
        "maintenanceMargin": asset["maintMargin"], "marginBalance": asset["marginBalance"],
        "maxWithdrawAmount": asset["maxWithdrawAmount"],
        "openOrderInitialMargin": asset["openOrderInitialMargin"],
        "positionInitialMargin": asset["positionInitialMargin"],
        "unrealizedProfit": asset["unrealizedProfit"], "walletBalance": asset["walletBalance"]}],
        "canDeposit": True, "canTrade": True, "canWithdraw": True, "feeTier": 0,
        "maxWithdrawAmount": asset["maxWithdrawAmount"], **{
            k: v for k, v in _summary(t).items() if k != "asset"}, "updateTime": account.update_ms}


# -- user-data stream events -------------------------------------------------------------------


def event(e: Event, market: Market, account: Account) -> dict:
    if isinstance(e, OrderUpdated):
        return _order_update(e, market.specs[e.order.symbol], account)
    if isinstance(e, BalanceChanged):
        return _account_update(e, market)
    if isinstance(e, AlgoUpdated):
        return _algo_update(e, market.specs[e.algo.symbol], market)
    if isinstance(e, LeverageChanged):
        return {"e": "ACCOUNT_CONFIG_UPDATE", "E": e.time_ms, "T": e.time_ms,
                "ac": {"s": e.symbol, "l": e.leverage}}
    if isinstance(e, MultiAssetsChanged):
        return {"e": "ACCOUNT_CONFIG_UPDATE", "E": e.time_ms, "T": e.time_ms, "ai": {"j": e.multi_assets}}
    if isinstance(e, MarginCalled):
        return {"e": "MARGIN_CALL", "E": e.time_ms, "cw": money(e.cross_wallet), "p": [
            {"s": r.symbol, "ps": r.position_side, "pa": _qty(market.specs[r.symbol], r.amount),
             "mt": "CROSSED", "iw": money(r.isolated_wallet), "mp": plain(r.mark),
             "up": money(r.unrealized), "mm": money(r.maint_margin)} for r in e.positions]}
    raise TypeError(f"not a simulator event: {e!r}")


def _order_update(e: OrderUpdated, spec: SymbolSpec, account: Account) -> dict:
    o, f = e.order, e.fill
    body = {
        "s": o.symbol, "c": o.client_order_id, "S": o.side, "o": o.type, "f": o.time_in_force,
        "q": _qty(spec, o.orig_qty), "p": _price(spec, o.price),
        "ap": fmt(o.avg_price, max(5, spec.price_precision)), "sp": "0", "x": e.exec_type,
        "X": o.status, "i": o.order_id, "l": _qty(spec, f.qty if f else ZERO),
        "z": _qty(spec, o.executed_qty), "L": _price(spec, f.price) if f else "0",
        "T": e.time_ms, "t": f.trade_id if f else 0,
        "b": plain(account.open_buy.get(o.symbol, ZERO)), "a": plain(account.open_sell.get(o.symbol, ZERO)),
        "m": f.maker if f else False, "R": o.reduce_only, "wt": "CONTRACT_PRICE", "ot": o.orig_type or o.type,
        "ps": o.position_side, "cp": False, "rp": money(f.realized_pnl if f else ZERO), "pP": False,
        "si": 0, "ss": 0, "V": "EXPIRE_MAKER", "pm": "NONE", "gtd": o.good_till_date,
    }
    if f is not None:  # Binance: commission fields are pushed only with a trade
        body["N"], body["n"] = "USDT", money(f.commission)
    return {"e": "ORDER_TRADE_UPDATE", "E": e.time_ms, "T": e.time_ms, "o": body}


def _algo_update(e: AlgoUpdated, spec: SymbolSpec, market: Market) -> dict:
    a = e.algo
    body: dict = {
        "caid": a.client_algo_id, "aid": a.algo_id, "at": "CONDITIONAL", "o": a.type, "s": a.symbol,
        "S": a.side, "ps": a.position_side, "f": a.time_in_force, "q": _qty(spec, a.quantity), "X": a.status,
        "ai": str(a.actual_order_id) if a.actual_order_id else "", "tp": _price(spec, a.trigger_price),
        "p": _price(spec, a.price), "V": "EXPIRE_MAKER", "wt": a.working_type, "pm": "NONE",
        "cp": a.close_position, "pP": a.price_protect, "R": a.reduce_only, "tt": a.trigger_ms,
        "gtd": a.good_till_date,
    }
    if a.actual_order_id is not None:  # Binance: shown once the order is placed in the matching engine
        placed = e.placed
        body["ap"] = fmt(placed.avg_price, max(5, spec.price_precision)) if placed else "0"
        body["aq"] = _qty(spec, placed.executed_qty) if placed else "0"
        body["act"] = placed.type if placed else ""
    if a.reject_reason:
        body["rm"] = a.reject_reason
    if a.is_trailing:
        body["ia"] = a.activated
    return {"e": "ALGO_UPDATE", "T": e.time_ms, "E": e.time_ms, "o": body}


def _account_update(e: BalanceChanged, market: Market) -> dict:
    return {"e": "ACCOUNT_UPDATE", "E": e.time_ms, "T": e.time_ms, "a": {
        "m": e.reason,
        "B": [{"a": "USDT", "wb": money(e.wallet), "cw": money(e.cross_wallet),
               "bc": money(e.balance_change)}],
        "P": [{"s": r.symbol, "pa": _qty(market.specs[r.symbol], r.amount), "ep": plain(r.entry_price),
               "bep": plain(r.break_even), "cr": money(r.realized), "up": money(r.unrealized),
               "mt": _margin_type(r), "iw": money(r.isolated_wallet), "ps": r.position_side}
              for r in e.positions],
    }}


def listen_key_expired(listen_key: str, now_ms: int) -> dict:
    # Binance sends this event's "E" as a string (seen on the live API: go-binance issue 510).
    return {"e": "listenKeyExpired", "E": str(now_ms), "listenKey": listen_key}
