"""A release that misbehaves on the exchange while its /metrics look healthy: the test bot of the
exchange-side policies. Written against python-binance alone, as a user's bot would be (not the
controller's client, not the reference bot), and run by the daemon's process deployer as a
release: ``python -I rogue_bot.py --config C --metrics-port P --exchange E --misdeed M`` (isolated:
its folder, tests/support, holds an http.py that would hide the standard library's).

Misdeeds:

- ``foreign``: buys a symbol its config does not name (DOGEUSDT), once.
- ``liquidated``: opens a long on its config's first isolated symbol and waits (the test moves the
  simulator's price through its liquidation price).
- ``lying``: sends an order the exchange refuses every clock second, and reports each as filled.
- ``modes``: switches the account to multi-assets margin as it starts (before the controller's
  verification has read the account).

Whatever it does, its page says: every configured leverage applied, no mismatch, a modest bucket
usage, no failed order, and as many filled orders as it claims.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from decimal import Decimal
from typing import Any

from aiohttp import web
from binance import AsyncClient
from binance.exceptions import BinanceAPIException

FOREIGN_SYMBOL = "DOGEUSDT"


class SimClockClient(AsyncClient):
    """python-binance stamping signed requests with the exchange's clock, which may run faster than
    real time (``speed``): it is read once, then extrapolated."""

    def __init__(self, api_key: str, api_secret: str, rest_url: str, speed: float) -> None:
        super().__init__(api_key, api_secret)
        self.FUTURES_URL = rest_url.rstrip("/")
        self.speed = speed
        self._server_ms = time.time() * 1000
        self._synced_at = time.monotonic()

    async def sync(self) -> None:
        self._server_ms = (await self.futures_time())["serverTime"]
        self._synced_at = time.monotonic()

    def now_ms(self) -> float:
        return self._server_ms + (time.monotonic() - self._synced_at) * 1000 * self.speed

    def _get_request_kwargs(self, method, signed: bool, force_params: bool = False, **kwargs):
        self.timestamp_offset = self.now_ms() - time.time() * 1000
        return super()._get_request_kwargs(method, signed, force_params, **kwargs)


class Page:
    """The /metrics page: what the bot claims."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.filled = 0

    def render(self) -> str:
        lines = [f'strategy_orders_total{{outcome="{outcome}"}} {self.filled if outcome == "filled" else 0}'
                 for outcome in ("filled", "canceled", "expired", "rejected", "error")]
        lines.append("strategy_leverage_mismatch_total 0")
        for symbol, settings in self.config["symbols"].items():
            lines.append(f'strategy_leverage_configured{{symbol="{symbol}"}} {settings["leverage"]}')
            lines.append(f'strategy_leverage_applied{{symbol="{symbol}"}} {settings["leverage"]}')
        for bucket, settings in self.config["buckets"].items():
            lines.append(f'strategy_bucket_usage_ratio{{bucket="{bucket}"}} {min(0.1, float(settings["allocation"]))}')
        return "\n".join(lines) + "\n"


async def serve(page: Page, port: int) -> web.AppRunner:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=page.render(), content_type="text/plain")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def market(client: SimClockClient, symbol: str, side: str, quantity: str) -> dict:
    return await client.futures_create_order(symbol=symbol, side=side, type="MARKET", quantity=quantity,
                                             newOrderRespType="RESULT")


async def misbehave(misdeed: str, client: SimClockClient, page: Page) -> None:
    if misdeed == "foreign":
        if (await market(client, FOREIGN_SYMBOL, "BUY", "100"))["status"] == "FILLED":
            page.filled += 1
    elif misdeed == "liquidated":
        symbol = next(s for s, c in page.config["symbols"].items() if c.get("margin_type") == "ISOLATED")
        price = Decimal((await client.futures_mark_price(symbol=symbol))["markPrice"])
        allocation = next(Decimal(b["allocation"]) for b in page.config["buckets"].values() if symbol in b["symbols"])
        balance = Decimal((await client.futures_account())["totalWalletBalance"])
        leverage = page.config["symbols"][symbol]["leverage"]
        notional = allocation * balance * leverage * Decimal(page.config["sizing"]["order_fraction"])
        quantity = (notional / price).quantize(Decimal("0.001"))
        if (await market(client, symbol, "BUY", str(quantity)))["status"] == "FILLED":
            page.filled += 1
    elif misdeed == "lying":
        symbol = next(iter(page.config["symbols"]))
        while True:
            try:
                await market(client, symbol, "BUY", "0.0000001")  # not a quantity the exchange takes
            except BinanceAPIException:
                pass
            page.filled += 1  # ... reported as filled all the same
            await asyncio.sleep(1 / client.speed)
    elif misdeed == "modes":
        await client.futures_change_multi_assets_mode(multiAssetsMargin=True)
    else:
        raise SystemExit(f"unknown misdeed {misdeed!r}")


async def main(args: argparse.Namespace) -> None:
    with open(args.config, encoding="utf-8") as file:
        config = json.load(file)
    with open(args.exchange, encoding="utf-8") as file:
        exchange = json.load(file)
    speed = float(os.environ.get("CANARY_SIM_SPEED") or 1)
    page = Page(config)
    runner = await serve(page, args.metrics_port)
    client = SimClockClient(exchange["api_key"], exchange["api_secret"], exchange["rest_url"], speed)
    try:
        await client.sync()
        await misbehave(args.misdeed, client, page)
        await asyncio.Event().wait()  # its page stays up, healthy-looking, until it is stopped
    finally:
        await client.close_connection()
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--exchange", required=True)
    parser.add_argument("--misdeed", choices=("foreign", "liquidated", "lying", "modes"), required=True)
    asyncio.run(main(parser.parse_args()))
