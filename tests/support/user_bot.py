"""A user's strategy bot, written against python-binance alone (its AsyncClient and socket manager),
as the harness places a release: the in-process entry point ``user_bot:UserBot``. It is the test bot
of issue 15's "done when": does the simulator serve what a bot on Binance does?

- prices from the ``<symbol>@markPrice@1s`` streams (one combined socket of BinanceSocketManager);
- hedge mode (dualSidePosition): its first symbol trades LONG and SHORT, the others LONG;
- each interval, per symbol and side: a resting LIMIT order away from the mark, moved the next
  interval (``futures_modify_order``) and canceled the one after; once a cycle, a marketable LIMIT
  entry, then a protective STOP_MARKET and a TAKE_PROFIT_MARKET (closePosition, algo orders);
- at the end of a cycle it flattens the symbol (orders canceled, positions closed: the bucket's
  margin given back), unless funding settles soon: it holds positions through every settlement;
- /metrics: the strategy_* series stage B reads, from what the exchange answered, and
  ``user_bot_exchange_errors_total{code}``: every error the exchange returned, by code.

Its log goes to the file named by ``USER_BOT_LOG`` (JSON lines); on stop it writes there a last line
``{"event": "report", ...}``: its errors by code, its funding income and its account's PnL.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter as Tally
from collections.abc import Mapping, Sequence
from decimal import ROUND_UP, Decimal
from typing import Any

import aiohttp
from aiohttp import web
from binance import AsyncClient, BinanceSocketManager
from binance.exceptions import BinanceAPIException
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CYCLE = 16               # intervals from one entry to the flattening of a symbol
ENTRY_OFFSET = Decimal("0.002")   # a marketable LIMIT: this far through the mark
REST_OFFSET = Decimal("0.02")     # a resting LIMIT: this far from the mark
PROTECT_OFFSET = Decimal("0.05")  # the stop and the take-profit: this far from the entry
FUNDING_GUARD_MS = 3 * 60 * 1000  # no flattening this close to a funding settlement
START_TIMEOUT = 60.0
WINDOW_MS = 8 * 3600 * 1000  # the income read back in windows this long


class ClockedClient(AsyncClient):
    """python-binance stamping signed requests with the embedding program's clock."""

    def __init__(self, api_key: str, api_secret: str, rest_url: str, clock: Any,
                 trace_configs: Sequence[aiohttp.TraceConfig]) -> None:
        super().__init__(api_key, api_secret, session_params={"trace_configs": list(trace_configs)})
        self.FUTURES_URL = rest_url.rstrip("/")
        self.clock = clock

    def _get_request_kwargs(self, method, signed: bool, force_params: bool = False, **kwargs):
        self.timestamp_offset = (self.clock.time() - time.time()) * 1000
        return super()._get_request_kwargs(method, signed, force_params, **kwargs)


class Page:
    """The bot's /metrics."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.orders = Counter("strategy_orders", "Orders by outcome", ["outcome"], registry=registry)
        self.leverage_configured = Gauge("strategy_leverage_configured", "Leverage in the config", ["symbol"],
                                         registry=registry)
        self.leverage_applied = Gauge("strategy_leverage_applied", "Leverage the exchange answered", ["symbol"],
                                      registry=registry)
        Gauge("strategy_leverage_mismatch_total", "Leverage refused", registry=registry).set(0)
        self.latency = Histogram("strategy_signal_latency_seconds", "Signal to order accepted",
                                 buckets=(0.025, 0.05, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 2.5), registry=registry)
        self.usage = Gauge("strategy_bucket_usage_ratio", "Margin of the bucket's positions and orders over capital",
                           ["bucket"], registry=registry)
        self.unlocks = Counter("strategy_bucket_unlocks", "Symbols of the bucket going flat", ["bucket"],
                               registry=registry)
        self.fraction = Gauge("strategy_margin_fraction", "Margin the exchange holds for the bucket over capital",
                              ["bucket"], registry=registry)
        self.fraction_updated = Gauge("strategy_margin_fraction_updated_timestamp_seconds",
                                      "When strategy_margin_fraction was last computed", ["bucket"],
                                      registry=registry)
        self.errors = Counter("user_bot_exchange_errors", "Errors the exchange returned", ["code"],
                              registry=registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class UserBot:
    """One placement of the bot: `start` it, `stop` it (the harness's EmbeddedRelease)."""

    def __init__(self, *, config: Mapping[str, Any], exchange: Mapping[str, Any], clock: Any,
                 settings: Mapping[str, Any] | None = None, label: str = "bot", account: str = "bot",
                 trace_configs: Sequence[aiohttp.TraceConfig] = ()) -> None:
        self.config = config
        self.exchange = exchange
        self.clock = clock
        self.interval = float((settings or {}).get("interval", 45.0))
        self.label = label
        self.client = ClockedClient(exchange["api_key"], exchange["api_secret"], exchange["rest_url"], clock,
                                    trace_configs)
        self.page = Page()
        self.crash: BaseException | None = None
        self.errors: Tally[int] = Tally()
        self.filled: set[int] = set()
        self.marks: dict[str, Decimal] = {}
        self.priced = asyncio.Event()
        self.symbols = list(config["symbols"])
        self.hedged = self.symbols[0]
        self.bucket_of = {s: name for name, bucket in config["buckets"].items() for s in bucket["symbols"]}
        self.rules: dict[str, tuple[Decimal, Decimal, Decimal]] = {}  # symbol -> (tick, step, min notional)
        self.resting: dict[tuple[str, str], tuple[int, int]] = {}  # (symbol, side) -> (order id, age)
        self.holding: set[str] = set()  # symbols entered since their last flattening
        self.capital = Decimal(0)
        self.started_at = 0.0
        self.next_funding_ms: dict[str, int] = {}
        self.iterations = 0
        self.tasks: list[asyncio.Task] = []
        self.runner: web.AppRunner | None = None
        self.port = 0
        self.log_path = os.environ.get("USER_BOT_LOG")

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    # ------------------------------------------------------------ the harness's calls

    async def start(self) -> None:
        await self._serve()
        try:
            await self._set_up()
            self.tasks.append(asyncio.create_task(self._stream(), name=f"user-bot-prices-{self.label}"))
            async with asyncio.timeout(START_TIMEOUT):
                while len(self.marks) < len(self.symbols):
                    self.priced.clear()
                    await self.priced.wait()
            await self._iterate()
        except Exception as exc:
            self.crash = exc
            await self._stop_serving()
            return
        self.tasks.append(asyncio.create_task(self._trade(), name=f"user-bot-{self.label}"))
        self.tasks.append(asyncio.create_task(self._reconcile(), name=f"user-bot-reconcile-{self.label}"))
        for task in self.tasks:
            task.add_done_callback(self._ended)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        try:
            for symbol in self.symbols:
                await self._call(self.client.futures_cancel_all_open_orders, symbol=symbol)
                await self._call(self.client.futures_cancel_all_open_orders, symbol=symbol, conditional=True)
            await self._report()
        except Exception as exc:  # stopping goes on: /metrics and the connection close all the same
            self._log("stop_failed", error=repr(exc))
        await self._stop_serving()
        await self.client.close_connection()

    def _ended(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is None:
            return
        self.crash = task.exception()
        self._log("crashed", error=repr(self.crash))
        asyncio.get_running_loop().create_task(self._stop_serving())

    # ------------------------------------------------------------ set-up

    async def _set_up(self) -> None:
        info = await self._call(self.client.futures_exchange_info)
        for entry in info["symbols"]:
            if entry["symbol"] in self.symbols:
                found = {f["filterType"]: f for f in entry["filters"]}
                self.rules[entry["symbol"]] = (Decimal(found["PRICE_FILTER"]["tickSize"]),
                                               Decimal(found["LOT_SIZE"]["stepSize"]),
                                               Decimal(found["MIN_NOTIONAL"]["notional"]))
        mode = await self._call(self.client.futures_get_position_mode)
        if not mode["dualSidePosition"]:
            await self._call(self.client.futures_change_position_mode, dualSidePosition="true")
        # symbolConfig lists every symbol (positionRisk only those with a position or open orders):
        # whoever placed the bot may have set the margin type already, and Binance answers a change
        # to the same type with -4046.
        current_types = {c["symbol"]: c["marginType"] for c in await self._call(self.client.futures_symbol_config)}
        for symbol, settings in self.config["symbols"].items():
            wanted = settings.get("margin_type", "CROSSED")
            if current_types.get(symbol, "CROSSED") != wanted:
                await self._call(self.client.futures_change_margin_type, symbol=symbol, marginType=wanted)
            answer = await self._call(self.client.futures_change_leverage, symbol=symbol,
                                      leverage=settings["leverage"])
            self.page.leverage_configured.labels(symbol).set(settings["leverage"])
            self.page.leverage_applied.labels(symbol).set(answer["leverage"])
        account = await self._call(self.client.futures_account)
        self.capital = Decimal(account["totalWalletBalance"])
        self.started_at = self.clock.time()
        self._log("started", capital=str(self.capital), dual_side=True)

    # ------------------------------------------------------------ prices

    async def _stream(self) -> None:
        manager = BinanceSocketManager(self.client)
        manager.FSTREAM_URL = self.exchange["ws_url"].rstrip("/") + "/"
        streams = [f"{symbol.lower()}@markPrice@1s" for symbol in self.symbols]
        while True:
            try:
                async with manager.futures_multiplex_socket(streams) as socket:
                    while True:
                        message = await socket.recv()
                        data = message.get("data", {}) if isinstance(message, dict) else {}
                        if data.get("e") == "markPriceUpdate":
                            self.marks[data["s"]] = Decimal(data["p"])
                            self.next_funding_ms[data["s"]] = int(data["T"])
                            self.priced.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a socket python-binance gave up on: open another
                self._log("stream_lost", error=repr(exc))
                await self.clock.sleep(1.0)

    # ------------------------------------------------------------ trading

    async def _trade(self) -> None:
        while True:
            await self.clock.sleep(self.interval)
            await self._iterate()

    def _sides(self, symbol: str) -> tuple[str, ...]:
        return ("LONG", "SHORT") if symbol == self.hedged else ("LONG",)

    async def _iterate(self) -> None:
        phase = self.iterations % CYCLE
        self.iterations += 1
        for symbol in self.symbols:
            signal = time.perf_counter()  # the signal: this interval's streamed mark
            mark = self.marks[symbol]
            if phase == CYCLE - 1 and self._funding_far(symbol):
                await self._flatten(symbol)
                continue
            entering = phase == 0 and symbol not in self.holding
            if entering:
                self.holding.add(symbol)
            for side in self._sides(symbol):
                if entering:
                    await self._enter(symbol, side, mark, signal)
                await self._rest(symbol, side, mark, signal)
        await self._read_usage()

    def _funding_far(self, symbol: str) -> bool:
        due = self.next_funding_ms.get(symbol)
        return due is None or due - self.clock.time() * 1000 > FUNDING_GUARD_MS

    def _quantity(self, symbol: str, mark: Decimal) -> Decimal:
        settings = self.config["symbols"][symbol]
        bucket = self.config["buckets"][self.bucket_of[symbol]]
        share = Decimal(str(bucket["allocation"])) / len(bucket["symbols"]) / 4
        notional = self.capital * share * Decimal(str(self.config["sizing"]["order_fraction"])) * settings["leverage"]
        _, step, least = self.rules[symbol]
        # Never below the exchange's minimum notional, with room for the price to move under it.
        notional = max(notional, least * Decimal("1.2"))
        return (notional / mark / step).to_integral_value(ROUND_UP) * step

    def _price(self, symbol: str, price: Decimal) -> str:
        tick = self.rules[symbol][0]
        return str((price / tick).to_integral_value() * tick)

    async def _enter(self, symbol: str, side: str, mark: Decimal, signal: float) -> None:
        """A marketable LIMIT entry, then its stop and take-profit."""
        buying = side == "LONG"
        price = mark * (1 + ENTRY_OFFSET if buying else 1 - ENTRY_OFFSET)
        order = await self._order(signal, symbol=symbol, side="BUY" if buying else "SELL", positionSide=side,
                                  type="LIMIT", timeInForce="GTC", quantity=str(self._quantity(symbol, mark)),
                                  price=self._price(symbol, price), newOrderRespType="RESULT")
        if order is None or order["status"] != "FILLED":
            return
        entry = Decimal(order["avgPrice"])
        exit_side = "SELL" if buying else "BUY"
        stop = entry * (1 - PROTECT_OFFSET if buying else 1 + PROTECT_OFFSET)
        take = entry * (1 + PROTECT_OFFSET if buying else 1 - PROTECT_OFFSET)
        for kind, trigger in (("STOP_MARKET", stop), ("TAKE_PROFIT_MARKET", take)):
            await self._call(self.client.futures_create_order, symbol=symbol, side=exit_side, positionSide=side,
                             type=kind, stopPrice=self._price(symbol, trigger), closePosition="true",
                             workingType="MARK_PRICE")

    async def _rest(self, symbol: str, side: str, mark: Decimal, signal: float) -> None:
        """A resting LIMIT away from the mark: placed, moved the next interval, canceled the one after."""
        buying = side == "LONG"
        price = self._price(symbol, mark * (1 - REST_OFFSET if buying else 1 + REST_OFFSET))
        held = self.resting.pop((symbol, side), None)
        if held is None:
            order = await self._order(signal, symbol=symbol, side="BUY" if buying else "SELL", positionSide=side,
                                      type="LIMIT", timeInForce="GTC", quantity=str(self._quantity(symbol, mark)),
                                      price=price)
            if order is not None and order["status"] == "NEW":
                self.resting[(symbol, side)] = (order["orderId"], 0)
            return
        order_id, age = held
        if age == 0:
            current = await self._call(self.client.futures_get_order, symbol=symbol, orderId=order_id)
            if current is None or current["status"] != "NEW":
                return
            if Decimal(current["price"]) != Decimal(price):
                moved = await self._call(self.client.futures_modify_order, symbol=symbol, orderId=order_id,
                                         side=current["side"], quantity=current["origQty"], price=price)
                if moved is None:
                    return
            self.resting[(symbol, side)] = (order_id, 1)
            return
        await self._call(self.client.futures_cancel_order, symbol=symbol, orderId=order_id)

    async def _order(self, signal: float, **params: Any) -> dict | None:
        answer = await self._call(self.client.futures_create_order, **params)
        if answer is None:
            self.page.orders.labels("rejected").inc()
            return None
        self.page.latency.observe(time.perf_counter() - signal)
        self._filled(answer)
        return answer

    def _filled(self, order: dict | None) -> None:
        """Counted as the exchange answers; the rest (resting orders, triggered stops) as it reports them."""
        if order is not None and order.get("status") == "FILLED" and order["orderId"] not in self.filled:
            self.filled.add(order["orderId"])
            self.page.orders.labels("filled").inc()

    async def _flatten(self, symbol: str) -> None:
        """Every order of the symbol canceled, every position closed: its margin given back."""
        await self._call(self.client.futures_cancel_all_open_orders, symbol=symbol)
        await self._call(self.client.futures_cancel_all_open_orders, symbol=symbol, conditional=True)
        for side in self._sides(symbol):
            self.resting.pop((symbol, side), None)
        self.holding.discard(symbol)
        for position in await self._call(self.client.futures_position_information, symbol=symbol) or []:
            amount = Decimal(position["positionAmt"])
            if amount:
                self._filled(await self._call(
                    self.client.futures_create_order, symbol=symbol, side="SELL" if amount > 0 else "BUY",
                    positionSide=position["positionSide"], type="MARKET", quantity=str(abs(amount)),
                    newOrderRespType="RESULT"))
        self.page.unlocks.labels(self.bucket_of[symbol]).inc()

    # ------------------------------------------------------------ what the exchange holds

    async def _reconcile(self) -> None:
        while True:
            await self.clock.sleep(min(30.0, self.interval))
            await self._read_usage()
            await self._count_fills()

    async def _read_usage(self) -> None:
        """Each bucket's margin over capital: positions and open orders at the mark, over leverage."""
        positions = await self._call(self.client.futures_position_information)
        orders = await self._call(self.client.futures_get_open_orders)
        if positions is None or orders is None:
            return
        held: dict[str, Decimal] = dict.fromkeys(self.config["buckets"], Decimal(0))
        for position in positions:
            symbol = position["symbol"]
            if symbol in self.bucket_of:
                notional = abs(Decimal(position["positionAmt"])) * Decimal(position["markPrice"])
                held[self.bucket_of[symbol]] += notional / self.config["symbols"][symbol]["leverage"]
        pending = dict.fromkeys(self.config["buckets"], Decimal(0))
        for order in orders:
            symbol = order["symbol"]
            if symbol in self.bucket_of:
                notional = Decimal(order["origQty"]) * max(Decimal(order["price"]), self.marks[symbol])
                pending[self.bucket_of[symbol]] += notional / self.config["symbols"][symbol]["leverage"]
        now = self.clock.time()
        for bucket in self.config["buckets"]:
            self.page.fraction.labels(bucket).set(float(held[bucket] / self.capital))
            self.page.fraction_updated.labels(bucket).set(now)
            # Margin of the next entry too: an honest figure is never below the exchange's, even
            # while an entry is on its way.
            planned = sum((self._quantity(s, self.marks[s]) * self.marks[s] * len(self._sides(s))
                           / self.config["symbols"][s]["leverage"]
                           for s in self.config["buckets"][bucket]["symbols"]), Decimal(0))
            self.page.usage.labels(bucket).set(float((held[bucket] + pending[bucket] + planned) / self.capital))

    async def _count_fills(self) -> None:
        """Orders of the last hour the exchange ended FILLED (the bot's orders live minutes)."""
        since = int((self.clock.time() - 3600) * 1000)
        for symbol in self.symbols:
            orders = await self._call(self.client.futures_get_all_orders, symbol=symbol, startTime=since, limit=1000)
            for order in orders or []:
                self._filled(order)

    # ------------------------------------------------------------ calls, errors, log

    async def _call(self, call: Any, **params: Any) -> Any:
        """One request; an error the exchange returns is counted by its code and logged (None)."""
        try:
            return await call(**params)
        except BinanceAPIException as exc:
            self.errors[exc.code] += 1
            self.page.errors.labels(str(exc.code)).inc()
            self._log("exchange_error", call=call.__name__, code=exc.code, message=exc.message,
                      params={k: str(v) for k, v in params.items()})
            return None

    async def _report(self) -> None:
        """The account's income since the bot started (every type, read 8 h at a time: fewer rows than a
        page holds), its funding rows, and its PnL as the exchange's wallet states it."""
        rows: list[dict] = []
        start, now = int(self.started_at * 1000), int(self.clock.time() * 1000) + 1
        for window in range(start, now, WINDOW_MS):
            rows += await self.client.futures_income_history(startTime=window, endTime=min(window + WINDOW_MS, now) - 1,
                                                              limit=1000)
        by_type: dict[str, Decimal] = {}
        for row in rows:
            by_type[row["incomeType"]] = by_type.get(row["incomeType"], Decimal(0)) + Decimal(row["income"])
        account = await self.client.futures_account()
        wallet, unrealized = Decimal(account["totalWalletBalance"]), Decimal(account["totalUnrealizedProfit"])
        self._log("report", errors={str(code): count for code, count in self.errors.items()},
                  funding=[{"symbol": r["symbol"], "income": r["income"], "time": r["time"]}
                           for r in rows if r["incomeType"] == "FUNDING_FEE"],
                  income={kind: str(total) for kind, total in by_type.items()}, income_rows=len(rows),
                  capital=str(self.capital), wallet=str(wallet), unrealized=str(unrealized), filled=len(self.filled))

    def _log(self, event: str, **fields: Any) -> None:
        if self.log_path:
            with open(self.log_path, "a", encoding="utf-8") as file:
                file.write(json.dumps({"event": event, "at": self.clock.time(), **fields}) + "\n")

    # ------------------------------------------------------------ /metrics

    async def _serve(self) -> None:
        async def metrics(request: web.Request) -> web.Response:
            return web.Response(body=self.page.render(), content_type="text/plain")

        app = web.Application()
        app.router.add_get("/metrics", metrics)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def _stop_serving(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()
