"""The bot's Prometheus metrics (the checklist's ``strategy_*`` names) and the server for them.

Each bot has its own registry, so several bots in one test process never share a series.
Ratios are fractions of the account's capital (0.5 is half); timestamps are seconds since the
epoch on the bot's Clock (simulated time when the bot runs accelerated); latencies are the bot's
own work on its `Stopwatch` (wall time, however fast the clock runs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from reference_bot.errors import BotError

OUTCOMES = ("filled", "rejected", "expired", "canceled", "error")
"""How an order ended: filled; refused by the exchange; expired or canceled on the exchange;
error: the request failed (timeout, rate limit, budget) and the order's fate is unknown."""

# Fine around the checklist's thresholds (p50 < 150 ms, p95 < 400 ms), up to a slow 2 s path.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0)


class BotMetrics:
    """Every series the bot exports; label values are created up front so none is missing."""

    def __init__(self, *, symbols: Iterable[str], buckets: Iterable[str],
                 registry: CollectorRegistry | None = None, shadow: bool = False) -> None:
        """``shadow``: orders end on paper, so ``strategy_orders_total`` carries ``mode="shadow"``
        and is never taken for what the exchange did (the controller's witness leaves it out)."""
        self.registry = registry or CollectorRegistry()
        self.mode = {"mode": "shadow"} if shadow else {}
        r = self.registry
        self.leverage_mismatch = Counter(
            "strategy_leverage_mismatch", "Times the leverage read back from the exchange for a symbol "
            "differed from the configured one", registry=r)
        self.signal_latency = Histogram(
            "strategy_signal_latency_seconds", "From a trading signal to the exchange accepting its order",
            buckets=LATENCY_BUCKETS, registry=r)
        self.leverage_configured = Gauge(
            "strategy_leverage_configured", "Leverage the strategy config sets for the symbol", ["symbol"], registry=r)
        self.leverage_applied = Gauge(
            "strategy_leverage_applied", "Leverage the exchange applies to the symbol (GET /fapi/v1/symbolConfig "
            "and ACCOUNT_CONFIG_UPDATE)", ["symbol"], registry=r)
        self.bucket_allocation = Gauge(
            "strategy_bucket_allocation_ratio", "Share of capital the bucket may commit as margin",
            ["bucket"], registry=r)
        self.bucket_usage = Gauge(
            "strategy_bucket_usage_ratio", "Share of capital the bucket's open positions, open and pending "
            "orders commit as margin (notional / configured leverage / capital)", ["bucket"], registry=r)
        self.bucket_locks = Counter(
            "strategy_bucket_locks", "Times a symbol of the bucket started holding margin (first order of a "
            "flat symbol)", ["bucket"], registry=r)
        self.bucket_unlocks = Counter(
            "strategy_bucket_unlocks", "Times a symbol of the bucket stopped holding margin (flat, no open "
            "order)", ["bucket"], registry=r)
        self.margin_fraction = Gauge(
            "strategy_margin_fraction", "Margin the exchange holds for the bucket's positions and open orders "
            "(at the applied leverage), as a fraction of the bucket's allocated margin", ["bucket"], registry=r)
        self.margin_fraction_updated = Gauge(
            "strategy_margin_fraction_updated_timestamp_seconds", "When strategy_margin_fraction was last "
            "computed from the exchange's view", ["bucket"], registry=r)
        self.order_queue_depth = Gauge(
            "strategy_order_queue_depth", "Order commands waiting to be sent", registry=r)
        self.order_queue_latency = Histogram(
            "strategy_order_queue_latency_seconds", "Time an order command waited in the queue before it was sent",
            buckets=LATENCY_BUCKETS, registry=r)
        self.orders = Counter(
            "strategy_orders", "Orders by how they ended" + (" (on paper: shadow mode)" if shadow else ""),
            ["outcome", *self.mode], registry=r)
        self.feature_enabled = Gauge(
            "strategy_feature_enabled", "1 while the feature toggle a controller switches (POST /toggle/NAME "
            "with {\"enabled\": true|false}) is on", ["name"], registry=r)
        for symbol in symbols:
            self.leverage_configured.labels(symbol)
            self.leverage_applied.labels(symbol)
        for bucket in buckets:
            for family in (self.bucket_allocation, self.bucket_usage, self.bucket_locks, self.bucket_unlocks,
                           self.margin_fraction, self.margin_fraction_updated):
                family.labels(bucket)
        for outcome in OUTCOMES:
            self.order_ended(outcome, count=False)

    def order_ended(self, outcome: str, *, count: bool = True) -> None:
        """Count an order's end under ``outcome`` (and ``mode="shadow"`` in shadow mode)."""
        child = self.orders.labels(outcome=outcome, **self.mode)
        if count:
            child.inc()

    def watch_queue(self, depth: Callable[[], int]) -> None:
        """Read the queue's depth at each scrape."""
        self.order_queue_depth.set_function(depth)

    def value(self, name: str, **labels: str) -> float | None:
        """One sample's current value, e.g. ``value("strategy_orders_total", outcome="filled")``."""
        return self.registry.get_sample_value(name, labels)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class MetricsServer:
    """``GET /metrics`` on its own port (aiohttp runner: setup, site, cleanup in reverse), and
    ``POST /toggle/NAME`` with ``{"enabled": true|false}``: a feature toggle the controller switches
    on this address, exported as ``strategy_feature_enabled{name}`` (the reference bot trades the
    same either way; the toggle is there to be switched and seen)."""

    def __init__(self, metrics: BotMetrics) -> None:
        self.metrics = metrics
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the port (the chosen one when ``port`` is 0)."""
        if self._runner is not None:
            raise RuntimeError("the metrics server is already started; call stop() first")
        app = web.Application()
        app.router.add_get("/metrics", self._serve)
        app.router.add_post(r"/toggle/{name:[A-Za-z0-9_-]+}", self._toggle)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            await runner.cleanup()
            raise BotError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}; choose another "
                              "--metrics-port (0 picks a free one)") from None
        self._runner = runner
        self.port = runner.addresses[0][1]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _toggle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        try:
            body = await request.json()
        except ValueError:
            body = None
        enabled = body.get("enabled") if isinstance(body, dict) else None
        if not isinstance(enabled, bool):
            return web.json_response({"error": 'the body must be {"enabled": true} or {"enabled": false}'},
                                     status=400)
        self.metrics.feature_enabled.labels(name).set(1 if enabled else 0)
        return web.json_response({"name": name, "enabled": enabled})
