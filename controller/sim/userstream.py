"""User-data streams: listenKeys and the websockets that push each account's events.

Binance's rules, on the simulator's clock: a listenKey lives 60 minutes after its creation or
last keep-alive; creating one while the account has a live key returns that key and extends it;
when a key expires, `listenKeyExpired` is pushed and that connection gets nothing more (it stays
open: "this event is not related to the websocket disconnection"); every connection is closed
24 hours after it opened. Clients connect to `/private/ws?listenKey=KEY` (what python-binance's
`futures_user_socket()` builds from its FSTREAM_URL) or the classic `/ws/KEY`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import WSCloseCode, web

from controller.clock import Clock
from controller.sim import codes, wire
from controller.sim.accounts import Account

LISTEN_KEY_TTL = 60 * 60.0
CONNECTION_TTL = 24 * 60 * 60.0
_ALPHABET = string.ascii_letters + string.digits


@dataclass
class ListenKey:
    key: str
    account: str
    expires_at: float
    expired: bool = False


@dataclass(eq=False)
class _Connection:
    ws: web.WebSocketResponse
    transport: asyncio.BaseTransport | None
    account: str
    key: str
    opened_at: float
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    flowing: asyncio.Event = field(default_factory=asyncio.Event)
    muted: bool = False  # its listenKey expired: Binance sends nothing more on it
    sender: asyncio.Task | None = None


class UserStreams:
    """ListenKeys and open user-data websockets, per account."""

    def __init__(self, clock: Clock, *, seed: int = 0) -> None:
        self.clock = clock
        self.shape: Callable[[str, list[dict]], list[dict]] = lambda account, payloads: payloads
        self._rng = random.Random(f"listen-keys-{seed}")
        self._keys: dict[str, ListenKey] = {}
        self._current: dict[str, str] = {}      # account -> its live key
        self._conns: set[_Connection] = set()
        self._stalled: set[str] = set()
        self._tasks: set[asyncio.Task] = set()
        self._changed = asyncio.Event()  # replaced at each (dis)connection: wakes `connected()`

    # -- REST: POST/PUT/DELETE /fapi/v1/listenKey ----------------------------------------------

    def create(self, account: Account) -> str:
        live = self._live(account.name)
        if live is None:
            live = ListenKey("".join(self._rng.choice(_ALPHABET) for _ in range(64)), account.name, 0.0)
            self._keys[live.key] = live
            self._current[account.name] = live.key
        live.expires_at = self.clock.time() + LISTEN_KEY_TTL
        return live.key

    def keepalive(self, account: Account, key: str | None) -> str:
        live = self._live(account.name)
        if live is None or (key and key != live.key):
            raise codes.bad_listen_key()
        live.expires_at = self.clock.time() + LISTEN_KEY_TTL
        return live.key

    def close(self, account: Account, key: str | None) -> None:
        live = self._live(account.name)
        if live is None or (key and key != live.key):
            raise codes.bad_listen_key()
        live.expired = True
        del self._current[account.name]
        for conn in self._connections(account.name):
            self._spawn(conn.ws.close(code=WSCloseCode.GOING_AWAY, message=b"listenKey closed"))

    # -- events --------------------------------------------------------------------------------

    def publish(self, account: str, payloads: list[dict]) -> None:
        """Queue one exchange action's payloads to every live connection of `account`."""
        if not payloads:
            return
        texts = [json.dumps(p, separators=(",", ":")) for p in self.shape(account, payloads)]
        for conn in self._connections(account):
            if not conn.muted:
                for text in texts:
                    conn.queue.put_nowait(text)

    def connections(self, account: str) -> int:
        return len(self._connections(account))

    async def connected(self, account: str, count: int = 1) -> None:
        """Wait until `account` has `count` open user-data websockets (bound it with a timeout)."""
        while self.connections(account) != count:
            await self._changed.wait()

    # -- fault actions (StreamControl) ---------------------------------------------------------

    def drop(self, account: str) -> int:
        dropped = 0
        for conn in self._connections(account):
            if conn.transport is not None:
                conn.transport.abort()
                dropped += 1
        return dropped

    def set_stalled(self, account: str, stalled: bool) -> None:
        if stalled:
            self._stalled.add(account)
        else:
            self._stalled.discard(account)
        for conn in self._connections(account):
            if stalled:
                conn.flowing.clear()
            else:
                conn.flowing.set()

    def expire(self, account: str) -> bool:
        live = self._live(account)
        if live is None:
            return False
        self._expire(live)
        return True

    # -- time ----------------------------------------------------------------------------------

    def on_tick(self) -> None:
        now = self.clock.time()
        for live in [k for k in self._keys.values() if not k.expired and k.expires_at <= now]:
            self._expire(live)
        for conn in [c for c in self._conns if now - c.opened_at >= CONNECTION_TTL]:
            self._conns.discard(conn)
            self._notify()
            self._spawn(conn.ws.close(code=WSCloseCode.OK, message=b"24h connection limit"))

    # -- websocket -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = request.match_info.get("listen_key") or request.query.get("listenKey", "")
        live = self._keys.get(key)
        if live is None or live.expired:
            # Guessed: Binance refuses the upgrade; the body is what its REST API says of such a key.
            return web.json_response(codes.bad_listen_key().body(), status=400)
        ws = web.WebSocketResponse()
        conn = _Connection(ws, request.transport, live.account, key, self.clock.time())
        if live.account not in self._stalled:
            conn.flowing.set()
        self._conns.add(conn)  # before the handshake ends, so no event can slip past it
        try:
            await ws.prepare(request)
            self._notify()
            conn.sender = asyncio.create_task(self._send(conn), name=f"sim-userstream-{live.account}")
            async for _ in ws:  # Binance ignores what a client sends on a user-data stream
                pass
        finally:
            self._conns.discard(conn)
            self._notify()
            if conn.sender is not None:
                conn.sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await conn.sender
        return ws

    async def close_all(self, timeout: float = 2.0) -> None:
        conns = list(self._conns)
        self._conns.clear()
        closing = [c.ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for c in conns]
        if closing:
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), timeout)
        for task in list(self._tasks):
            task.cancel()

    # -- internals -----------------------------------------------------------------------------

    async def _send(self, conn: _Connection) -> None:
        while True:
            text = await conn.queue.get()
            await conn.flowing.wait()
            try:
                await conn.ws.send_str(text)
            except ConnectionError:  # the client went away mid-send: its handler cleans up
                return

    def _expire(self, live: ListenKey) -> None:
        live.expired = True
        self._current.pop(live.account, None)
        text = json.dumps(wire.listen_key_expired(live.key, int(self.clock.time() * 1000)))
        for conn in self._conns:
            if conn.key == live.key and not conn.muted:
                conn.queue.put_nowait(text)
                conn.muted = True

    def _live(self, account: str) -> ListenKey | None:
        key = self._current.get(account)
        live = self._keys.get(key) if key else None
        if live is not None and not live.expired and live.expires_at <= self.clock.time():
            self._expire(live)
        return live if live is not None and not live.expired else None

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _connections(self, account: str) -> list[_Connection]:
        return [c for c in self._conns if c.account == account]

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
