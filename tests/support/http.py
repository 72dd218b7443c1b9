"""Real HTTP peers for the sources' tests: an app answering one path, a port nothing listens on."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable

from aiohttp import web


def app_answering(handler: Callable[[web.Request], Awaitable[web.StreamResponse]], path: str) -> web.Application:
    app = web.Application()
    app.router.add_get(path, handler)
    return app


def free_port() -> int:
    """A port nothing listens on (it was free a moment ago): a dead endpoint."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
