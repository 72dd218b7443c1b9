"""python-binance's futures user socket on a simulator, with bounded waits for tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from binance import AsyncClient, BinanceSocketManager

from controller.sim import Simulator


class Stream:
    """python-binance's futures user socket, with bounded waits for tests."""

    def __init__(self, socket) -> None:
        self.socket = socket

    async def next(self, timeout: float = 5.0) -> dict:
        return await asyncio.wait_for(self.socket.recv(), timeout)

    async def next_of(self, event: str, timeout: float = 5.0) -> dict:
        """The next message of type `event`, skipping others."""
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.socket.recv()
                if msg.get("e") == event:
                    return msg

    async def take(self, n: int, timeout: float = 5.0) -> list[dict]:
        return [await self.next(timeout) for _ in range(n)]

    async def silent_for(self, seconds: float) -> bool:
        """True if nothing arrives within `seconds` (the only wait that must run out)."""
        try:
            await asyncio.wait_for(self.socket.recv(), seconds)
        except TimeoutError:
            return True
        return False


@asynccontextmanager
async def user_stream(sim: Simulator, client: AsyncClient, *, reconnect: bool = True) -> AsyncIterator[Stream]:
    manager = BinanceSocketManager(client)
    manager.FSTREAM_URL = sim.ws_url
    socket = manager.futures_user_socket()
    # python-binance polls its read loop with this timeout, and closing waits for the poll to
    # end: its default (10 s) would make every test's exit take 10 s.
    socket.TIMEOUT = 0.05
    if not reconnect:
        # Leaving the context while python-binance is reconnecting hangs it (its reconnect
        # overwrites the EXITING state): tests whose server closes the socket opt out.
        socket.MAX_RECONNECTS = 0
    async with socket:
        yield Stream(socket)
