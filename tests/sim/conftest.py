"""A started simulator on an ephemeral port and the REAL python-binance client pointed at it."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager

import pytest
from binance import AsyncClient, BinanceSocketManager

from controller.clock import SimulatedClock
from controller.sim import Simulator

@pytest.fixture
def clock(sim_clock) -> SimulatedClock:
    """In these tests the clock is the simulator's."""
    return sim_clock

async def sync_time(client: AsyncClient) -> None:
    """What AsyncClient.create does against Binance: align request timestamps to server time."""
    server = await client.futures_time()
    client.timestamp_offset = server["serverTime"] - int(time.time() * 1000)

@asynccontextmanager
async def connect(sim: Simulator, account: str = "canary", *, api_key: str | None = None,
                  api_secret: str | None = None):
    acct = sim.accounts[account]
    client = AsyncClient(api_key or acct.api_key, api_secret or acct.api_secret)
    client.FUTURES_URL = sim.rest_url
    client.MARGIN_API_URL = sim.sapi_url
    client.API_URL = sim.api_url
    try:
        await sync_time(client)
        yield client
    finally:
        await client.close_connection()

@pytest.fixture
async def canary(sim):
    async with connect(sim, "canary") as client:
        yield client

@pytest.fixture
async def master(sim):
    async with connect(sim, "master") as client:
        yield client

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
async def user_stream(sim: Simulator, client: AsyncClient, *, reconnect: bool = True):
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
