"""The simulator as a server: Binance's USD-M REST API, user-data and market-data websockets, /sim/ admin.

    sim = Simulator(clock=SimulatedClock(speed=1), seed=7)
    await sim.start("127.0.0.1", 0)          # an ephemeral port
    client = AsyncClient(sim.accounts["canary"].api_key, sim.accounts["canary"].api_secret)
    client.FUTURES_URL = sim.rest_url        # http://127.0.0.1:PORT/fapi
    ...
    await sim.stop()

One request runs at a time through the synchronous matching engine (no awaits inside it); a
background ticker moves prices every `tick_seconds` of clock time, fills resting orders, expires
listenKeys and pushes margin calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl

from aiohttp import web

from controller.clock import Clock, RealClock
from controller.logs import get_logger
from controller.sim import admin, codes
from controller.sim.accounts import DEFAULT_ACCOUNTS, AccountBook, AccountSpec
from controller.sim.auth import authenticate, authorize
from controller.sim.faults import Faults
from controller.sim.funding import FundingBook
from controller.sim.market import BOOK_DEPTH, SYMBOLS, Market, PriceReplay, SymbolSpec
from controller.sim.marketstreams import MarketStreams
from controller.sim.matching import MatchingEngine
from controller.sim.rest import Call, Endpoint, RestApi
from controller.sim.userstream import UserStreams
from controller.sim.weights import OrderCounter, WeightLimiter

log = get_logger("controller.sim")


@dataclass(frozen=True)
class Addresses:
    """Where a started simulator listens, in the forms python-binance's URL attributes take."""

    host: str
    port: int
    rest_url: str    # AsyncClient.FUTURES_URL
    ws_url: str      # BinanceSocketManager.FSTREAM_URL
    sapi_url: str    # AsyncClient.MARGIN_API_URL (sub-account endpoints)
    api_url: str     # AsyncClient.API_URL (spot ping/time, used by AsyncClient.create)
    admin_url: str


UNRECORDED = frozenset({"signature", "timestamp", "recvWindow"})
"""Request parameters the request log leaves out."""


@dataclass(frozen=True)
class RequestRecord:
    """One REST request as the simulator saw it (for tests: what was sent, and when)."""

    time: float
    ip: str
    method: str
    path: str
    status: int
    code: int | None
    account: str | None
    key: str | None = None
    """Which of the account's keys signed it: ``trading`` or ``read-only`` (None: no key)."""
    agent: str = ""
    """The request's User-Agent: tells the controller's requests from its bots', which share an account's key."""
    weight: int = 0
    """The request weight it was charged (0 when refused before the rate limiter counted it)."""
    params: Mapping[str, str] = field(default_factory=dict)
    """What the request asked (symbol, side, newClientOrderId, leverage...), without its signature and
    timestamps: which bot placed an order, which symbol a cancel or a leverage change was for."""

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time, "ip": self.ip, "method": self.method, "path": self.path, "status": self.status,
                "code": self.code, "account": self.account, "key": self.key, "agent": self.agent,
                "weight": self.weight, "params": dict(self.params)}

    @property
    def changes_state(self) -> bool:
        """It may change the account (an order, a cancel, leverage, margin, a transfer): any method but GET,
        except keeping a user-data stream's listen key, which changes nothing of the account."""
        return self.method != "GET" and not self.path.endswith("/listenKey")


class Simulator:
    """A Binance USD-M futures exchange on a local port, driven by a Clock."""

    def __init__(self, *, clock: Clock | None = None, seed: int = 0,
                 accounts: tuple[AccountSpec, ...] = DEFAULT_ACCOUNTS, volatility: float = 1.0,
                 prices: Path | None = None, weight_limit: int = 2400, tick_seconds: float = 1.0,
                 ban_after: int = 5, book_depth: Decimal = BOOK_DEPTH,
                 symbols: tuple[SymbolSpec, ...] = SYMBOLS) -> None:
        self.clock: Clock = clock or RealClock()
        self.seed = seed
        self.tick_seconds = tick_seconds
        self.accounts = AccountBook(accounts, seed=seed)
        replay = PriceReplay.from_csv(prices) if prices else None
        self.market = Market(seed=seed, start=self.clock.time(), volatility=volatility, replay=replay,
                             depth_notional=book_depth, symbols=symbols)
        self.engine = MatchingEngine(self.market, self.accounts, self._now_ms)
        self.streams = UserStreams(self.clock, seed=seed)
        self.funding = FundingBook(self.market, self.accounts, self.engine.ledger, start=self.clock.time())
        self.market_streams = MarketStreams(self.clock, self.market, self.funding.state, seed=seed)
        self.faults = Faults(streams=self.streams, market=self.market_streams, seed=seed, now=self.clock.time)
        self.streams.shape = self.faults.shape
        self.limiters = {
            "fapi": WeightLimiter(weight_limit, ban_after=ban_after),
            "sapi": WeightLimiter(12000, header="X-SAPI-USED-IP-WEIGHT-1M", ban_after=ban_after),
            "api": WeightLimiter(6000, ban_after=ban_after),
        }
        self.orders = OrderCounter()
        self.api = RestApi(engine=self.engine, market=self.market, book=self.accounts,
                           streams=self.streams, faults=self.faults, funding=self.funding, now_ms=self._now_ms,
                           weight_limit=weight_limit)
        self.requests: deque[RequestRecord] = deque(maxlen=10_000)
        self.requests_total = 0
        """Requests ever recorded: the log keeps the last 10 000."""
        self.held = 0
        """Requests being held on the clock by an injected latency, now (a stepped clock moves
        while only these are out: see `controller.harness.stepping`)."""
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task | None = None
        self._addresses: Addresses | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> Addresses:
        if self._runner is not None:
            raise RuntimeError("the simulator is already started; call stop() before starting it again")
        app = web.Application()
        app.add_routes([self._route(e) for e in self.api.endpoints()])
        app.add_routes(admin.routes(self))
        for path in ("/private/ws", "/private/ws/{listen_key}"):
            app.router.add_get(path, self.streams.handle)
        for prefix in ("", "/market", "/public"):
            app.router.add_get(f"{prefix}/ws", self._raw_socket)
            app.router.add_get(prefix + "/ws/{listen_key}", self._raw_socket)
            app.router.add_get(f"{prefix}/stream", self._combined_socket)
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        self._addresses = _addresses(host or bound_host, bound_port)
        self._ticker = asyncio.create_task(self._run_ticker(), name="sim-ticker")
        log.info("sim_started", rest_url=self._addresses.rest_url, ws_url=self._addresses.ws_url)
        return self._addresses

    async def stop(self) -> None:
        """Stop ticking, close websockets, then the HTTP server (reverse order of start)."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        with contextlib.suppress(asyncio.TimeoutError):
            await self.streams.close_all()
        with contextlib.suppress(asyncio.TimeoutError):
            await self.market_streams.close_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._addresses = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    # -- where it listens ----------------------------------------------------------------------

    @property
    def addresses(self) -> Addresses:
        if self._addresses is None:
            raise RuntimeError("the simulator has no address yet; call `await sim.start()` first")
        return self._addresses

    @property
    def rest_url(self) -> str:
        return self.addresses.rest_url

    @property
    def ws_url(self) -> str:
        return self.addresses.ws_url

    @property
    def sapi_url(self) -> str:
        return self.addresses.sapi_url

    @property
    def api_url(self) -> str:
        return self.addresses.api_url

    # -- driving it ----------------------------------------------------------------------------

    def set_price(self, symbol: str, price: Decimal) -> None:
        """Pin a symbol's mark price and match what it reaches, now."""
        self.market.set_price(symbol, price)
        self.api.publish(self.engine.on_tick())

    def auto_deleverage(self, account: str, symbol: str) -> None:
        """ADL now: the exchange closes ``account``'s position in ``symbol`` at the mark price."""
        self.api.publish(self.engine.auto_deleverage(self.accounts[account], symbol))

    def set_api_rights(self, account: str, key: str = "trading", **rights: bool) -> dict[str, bool]:
        """Change what one of ``account``'s keys may do (GET /sapi/v1/account/apiRestrictions'
        booleans): its ``trading`` key (least privilege at the start,
        `controller.sim.accounts.LEAST_PRIVILEGE`) or its ``read-only`` one (`READ_ONLY`)."""
        return self.accounts[account].set_api_rights(key, **rights)

    def tick(self) -> None:
        """Move prices to the clock's time, settle funding, fill, expire, warn and push market data:
        what the ticker does each tick."""
        now = self.clock.time()
        self.market.advance(now)
        self.api.publish(self.funding.advance(now))
        self.api.publish(self.engine.on_tick())
        self.streams.on_tick()
        self.market_streams.on_tick()

    def state(self) -> dict:
        return {
            "time": self.clock.time(),
            "accounts": {a.name: {"api_key": a.api_key, "api_secret": a.api_secret, "master": a.master,
                                  "email": a.email, "api_rights": dict(a.api_rights),
                                  "read_only": {"api_key": a.key("read-only").key, "api_secret": a.key("read-only").secret,
                                                "api_rights": dict(a.key("read-only").rights)}}
                         for a in self.accounts},
            "prices": {s: str(self.market.price(s)) for s in self.market.specs},
            "faults": self.faults.snapshot(),
        }

    async def _run_ticker(self) -> None:
        while True:
            await self.clock.sleep(self.tick_seconds)
            try:
                self.tick()
            except Exception:  # a bug in one tick must not stop the market
                log.exception("sim_tick_failed")

    # -- websockets ----------------------------------------------------------------------------

    async def _raw_socket(self, request: web.Request) -> web.StreamResponse:
        """`/ws/<name>`: a market-data stream when the name is one (`btcusdt@aggTrade`,
        `!markPrice@arr`), else a user-data stream's listenKey, as on Binance's legacy host;
        `/ws` alone with no `listenKey` is a market-data connection awaiting SUBSCRIBE."""
        name = request.match_info.get("listen_key", "")
        if "@" in name or name.startswith("!") or (not name and "listenKey" not in request.query):
            return await self.market_streams.handle(request, [name] if name else [], combined=False)
        if request.path.startswith(("/market/", "/public/")):
            return web.json_response({"code": -1121, "msg": f"Invalid stream: {name!r}"}, status=400)
        return await self.streams.handle(request)

    async def _combined_socket(self, request: web.Request) -> web.StreamResponse:
        """`/stream?streams=a/b`: market-data streams, each payload wrapped with its stream's name."""
        names = request.query.get("streams", "")
        return await self.market_streams.handle(request, names.split("/") if names else [], combined=True)

    # -- HTTP ----------------------------------------------------------------------------------

    def _route(self, endpoint: Endpoint) -> web.RouteDef:
        async def handler(request: web.Request) -> web.Response:
            return await self._serve(request, endpoint)

        return web.route(endpoint.method, endpoint.path, handler)

    async def _serve(self, request: web.Request, endpoint: Endpoint) -> web.Response:
        """Binance's request pipeline: latency, rate limits, security, faults, handler."""
        method, path = endpoint.method, endpoint.path
        ip = request.remote or "0.0.0.0"
        raw_query = request.raw_path.partition("?")[2]
        raw_body = (await request.read()).decode("utf-8", "replace") if request.can_read_body else ""
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        params.update(parse_qsl(raw_body, keep_blank_values=True))
        limiter = self.limiters[endpoint.family]
        account = key = None
        headers: dict[str, str] = {}
        delay = self.faults.latency_for(method, path)
        if delay:
            self.held += 1
            try:
                await self.clock.sleep(delay)
            finally:
                self.held -= 1
        now = self.clock.time()
        weight = 0
        try:
            storm = self.faults.storm(now)
            if storm is not None:
                raise storm
            charged = endpoint.weight(params)
            limiter.admit(ip, charged, now)
            weight = charged
            found = authenticate(endpoint.security, api_key=request.headers.get("X-MBX-APIKEY"),
                                 raw_query=raw_query, raw_body=raw_body, params=params,
                                 book=self.accounts, now_ms=int(now * 1000), ip=ip)
            account, key = found if found else (None, None)
            if key is not None:
                authorize(key, trade=endpoint.trade, ip=ip)
            if endpoint.new_order and account is not None:
                self.orders.admit(account.name, now)
            injected = self.faults.error_for(method, path, after=False)
            if injected is not None:
                raise injected
            body = endpoint.handler(Call(account, params, key, ip))
            injected = self.faults.error_for(method, path, after=True)
            if injected is not None:
                raise injected
            status = 200
        except codes.BinanceError as exc:
            status, body = exc.status, exc.body()
            headers.update(exc.headers)
        except Exception:
            log.exception("sim_request_failed", method=method, path=path)
            status, body = 500, {"code": -1000,
                                 "msg": "An unknown error occurred while processing the request."}
        headers.update(limiter.headers(ip, now))
        if endpoint.new_order and account is not None:
            headers.update(self.orders.headers(account.name, now))
        code = body.get("code") if status != 200 and isinstance(body, dict) else None
        self.requests.append(RequestRecord(now, ip, method, path, status, code,
                                           account.name if account else None, key.kind if key else None,
                                           request.headers.get("User-Agent", ""), weight,
                                           {k: v for k, v in params.items() if k not in UNRECORDED}))
        self.requests_total += 1
        return web.json_response(body, status=status, headers=headers)

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)


def _addresses(host: str, port: int) -> Addresses:
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return Addresses(
        host=host, port=port,
        rest_url=f"http://{netloc}/fapi",
        ws_url=f"ws://{netloc}/",
        sapi_url=f"http://{netloc}/sapi",
        api_url=f"http://{netloc}/api",
        admin_url=f"http://{netloc}/sim",
    )
