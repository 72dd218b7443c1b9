"""Market-data websockets of a simulator through a plain aiohttp client, with bounded waits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from controller.sim import Simulator


class MarketSocket:
    """One plain websocket to the simulator's market-data host."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def next(self, timeout: float = 5.0) -> dict | list:
        message = await asyncio.wait_for(self.ws.receive(), timeout)
        assert message.type == aiohttp.WSMsgType.TEXT, f"expected a text frame, got {message!r}"
        return json.loads(message.data)

    async def next_of(self, stream: str, timeout: float = 5.0) -> dict | list:
        """The next combined-stream payload of ``stream`` (unwrapped), skipping the others."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next(timeout)
                if isinstance(message, dict) and message.get("stream") == stream:
                    return message["data"]

    async def send(self, request: dict) -> None:
        await self.ws.send_str(json.dumps(request))

    async def silent_for(self, seconds: float) -> bool:
        """True if nothing arrives within ``seconds`` (the only wait that must run out)."""
        try:
            await asyncio.wait_for(self.ws.receive(), seconds)
        except TimeoutError:
            return True
        return False


@asynccontextmanager
async def market_socket(sim: Simulator, path: str) -> AsyncIterator[MarketSocket]:
    """A plain websocket to ``path`` (e.g. ``ws/btcusdt@aggTrade``) on the simulator's stream host."""
    async with aiohttp.ClientSession() as session, session.ws_connect(sim.ws_url + path) as ws:
        yield MarketSocket(ws)
