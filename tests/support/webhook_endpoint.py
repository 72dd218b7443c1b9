"""A webhook endpoint on a real HTTP server, for the notification and confirm-promotion tests."""

from __future__ import annotations

import asyncio
import json

from aiohttp import web

from controller.daemon.webhooks import SIGNATURE_HEADER


class Endpoint:
    """A webhook endpoint on a real server: answers each POST with the next of ``statuses`` (then 200),
    or never (``hang``), and keeps what it received."""

    def __init__(self, statuses=(), *, hang: bool = False) -> None:
        self.statuses = list(statuses)
        self.hang = hang
        self.received: list[tuple[bytes, str]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append((await request.read(), request.headers.get(SIGNATURE_HEADER, "")))
        self.arrived.set()
        if self.hang:
            await asyncio.Event().wait()
        return web.Response(status=self.statuses.pop(0) if self.statuses else 200)

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()

    def events(self) -> list[dict]:
        return [json.loads(body) for body, _ in self.received]
