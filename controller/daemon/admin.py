"""The daemon's local admin HTTP server: Prometheus metrics, liveness, readiness and status.

    GET /metrics   the controller's canary_* metrics (Prometheus text exposition)
    GET /healthz   liveness: 200 {"ok": true, "reason": ...}, or 503 {"ok": false, "reason": ...}
    GET /readyz    readiness (database, policies, runners): 200 or 503 likewise
    GET /status    the daemon's status() as JSON

Every answer is JSON except /metrics, errors included (404, 405, 500): the CLI and probes parse
them, and a traceback page helps no one. It binds 127.0.0.1 unless the config allows otherwise
(`controller.config.daemon.AdminConfig`); there is no authentication.
"""

from __future__ import annotations

import functools
import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from controller.logs import get_logger, redact_text
from controller.metrics import ControllerMetrics

log = get_logger(__name__)

Check = Callable[[], tuple[bool, str]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Status may hold Decimals and datetimes; their str() is what an operator wants to read.
_dumps = functools.partial(json.dumps, default=str)


class AdminServer:
    """Serves the routes above on an aiohttp runner the daemon starts and stops; the loop stays the daemon's."""

    def __init__(self, *, metrics: ControllerMetrics, status: Callable[[], dict[str, Any]],
                 ready: Check, healthy: Check, token: str | None = None) -> None:
        """``token``: every request must carry ``Authorization: Bearer TOKEN`` (None: none is asked,
        for an API on loopback only)."""
        self._expected = f"Bearer {token}".encode() if token else None
        self._metrics = metrics
        self._status = status
        self._ready = ready
        self._healthy = healthy
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on ``host``:``port`` (0 picks a free port) and return the port bound."""
        if self._runner is not None:
            raise RuntimeError("the admin server is already started; call stop() before starting it again")
        app = web.Application(middlewares=[_json_errors, self._authorized])
        app.add_routes([web.get("/metrics", self._get_metrics), web.get("/healthz", self._get_healthz),
                        web.get("/readyz", self._get_readyz), web.get("/status", self._get_status)])
        # No access log: Prometheus scrapes and probes would fill the journal with noise.
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0][1]
        log.info("admin_server_started", host=host, port=bound)
        return bound

    async def stop(self) -> None:
        """Stop listening and finish open requests (bounded); a no-op when not started."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("admin_server_stopped")

    @web.middleware
    async def _authorized(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """401 unless the request carries the token (compared in constant time)."""
        if self._expected is not None:
            given = request.headers.get("Authorization", "").encode()
            if not hmac.compare_digest(given, self._expected):
                return web.json_response({"ok": False, "reason": "a bearer token is needed"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
        return await handler(request)

    async def _get_metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _get_healthz(self, request: web.Request) -> web.Response:
        return _probe("liveness", self._healthy)

    async def _get_readyz(self, request: web.Request) -> web.Response:
        return _probe("readiness", self._ready)

    async def _get_status(self, request: web.Request) -> web.Response:
        return web.json_response(self._status(), dumps=_dumps)  # a raise becomes a JSON 500 in _json_errors


def _probe(name: str, check: Check) -> web.Response:
    """200 when ``check`` passes, 503 when it fails or raises (a broken check must not pass a
    probe); either way the body says why."""
    try:
        ok, reason = check()
    except Exception as error:
        log.exception("admin_check_failed", check=name)
        ok, reason = False, f"the {name} check raised {_describe(error)}"
    return web.json_response({"ok": bool(ok), "reason": reason}, status=200 if ok else 503)


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's 404/405 pages and any handler's exception, as JSON bodies."""
    try:
        return await handler(request)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None
        return web.json_response({"error": error.reason, "path": request.path}, status=error.status, headers=headers)
    except Exception as error:
        log.exception("admin_request_failed", path=request.path)
        return web.json_response({"error": f"{request.path} failed: {_describe(error)}"}, status=500)


def _describe(error: Exception) -> str:
    # The body bypasses the log redaction, so redact here: an exception may quote a credential.
    return redact_text(f"{type(error).__name__}: {error}")
