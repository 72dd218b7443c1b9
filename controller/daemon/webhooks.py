"""Rollout events as signed webhooks: a queue the engine drops events into, drained by a task of its own.

The engine never waits on an endpoint: `Webhooks.emit` only queues (a full queue drops the oldest
event, logged), and one drain task per webhook posts each event, retrying with backoff (tenacity),
so a dead or hanging endpoint slows neither verdicts nor rollbacks, nor the other webhooks. The body
is JSON; ``X-Canary-Signature: sha256=HEX`` is the HMAC-SHA256 of the body with the webhook's
secret, read from its reference when the daemon starts and never logged or stored. Each webhook's
last delivery (ok, failing since, attempts) is kept for ``status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from controller.config.daemon import WebhookConfig
from controller.logs import get_logger

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Canary-Signature"
QUEUE_LIMIT = 1000
"""Events a webhook may have waiting; past it the oldest is dropped (logged), never the engine slowed."""


def signature(secret: str, body: bytes) -> str:
    """The header's value: ``sha256=`` and the HMAC-SHA256 of ``body`` with ``secret``, in hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class DeliveryFailed(Exception):
    """An endpoint answered other than 2xx, or not at all in time."""


@dataclass
class Delivery:
    """A webhook's last delivery, as ``status`` shows it (wall seconds)."""

    url: str
    ok: bool | None = None
    """None: nothing delivered yet."""
    event: str | None = None
    at: float | None = None
    attempts: int = 0
    failing_since: float | None = None
    error: str | None = None
    dropped: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "event": self.event, "at": self.at, "attempts": self.attempts,
                "failing_since": self.failing_since, "error": self.error, "dropped": self.dropped}


class _Hook:
    """One webhook: its settings, its secret (resolved once), its queue and its last delivery."""

    def __init__(self, environment: str, config: WebhookConfig) -> None:
        self.environment = environment
        self.config = config
        self.secret = config.secret.resolve()
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self.delivery = Delivery(config.url)


class Webhooks:
    """Every environment's webhooks; ``attempts`` per event, backing off from ``backoff`` seconds up to
    ``backoff_max``; ``timeout``: wall seconds an endpoint has to answer one attempt."""

    def __init__(self, hooks: Mapping[str, Sequence[WebhookConfig]], *, attempts: int = 5, backoff: float = 1.0,
                 backoff_max: float = 60.0, timeout: float = 10.0) -> None:
        self.hooks = [_Hook(environment, config) for environment, configs in hooks.items() for config in configs]
        self.attempts, self.backoff, self.backoff_max, self.timeout = attempts, backoff, backoff_max, timeout
        self._tasks: list[asyncio.Task] = []
        self._session: aiohttp.ClientSession | None = None

    def deliveries(self) -> list[dict[str, Any]]:
        return [hook.delivery.to_json() for hook in self.hooks]

    def emit(self, environment: str, event: str, body: Mapping[str, Any]) -> None:
        """Queue ``event`` for every webhook of ``environment`` that asks for it; never waits."""
        for hook in self.hooks:
            if hook.environment != environment or event not in hook.config.events:
                continue
            if hook.queue.full():
                hook.queue.get_nowait()
                hook.delivery.dropped += 1
                log.warning("webhook_event_dropped", url=hook.config.url, reason="queue full")
            hook.queue.put_nowait({"event": event, **body})

    async def start(self) -> None:
        """Start one drain task per webhook."""
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._tasks = [asyncio.create_task(self._drain(hook), name=f"webhook-{n}") for n, hook in enumerate(self.hooks)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _drain(self, hook: _Hook) -> None:
        while True:
            event = await hook.queue.get()
            try:
                await self._deliver(hook, event)
            except Exception as exc:  # noqa: BLE001 - one event's failure never stops the webhook
                log.error("webhook_delivery_failed", url=hook.config.url, event=event["event"], error=str(exc))

    async def _deliver(self, hook: _Hook, event: dict[str, Any]) -> None:
        body = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(hook.secret, body)}
        delivery = hook.delivery
        delivery.event, delivery.attempts = event["event"], 0
        retrying = AsyncRetrying(stop=stop_after_attempt(self.attempts), reraise=True,
                                 wait=wait_exponential(multiplier=self.backoff, max=self.backoff_max),
                                 retry=retry_if_exception_type(DeliveryFailed))
        try:
            async for attempt in retrying:
                with attempt:
                    delivery.attempts += 1
                    delivery.at = time.time()
                    await self._post(hook, body, headers)
        except DeliveryFailed as exc:
            delivery.ok, delivery.error = False, str(exc)
            delivery.failing_since = delivery.failing_since or delivery.at
            log.error("webhook_undelivered", url=hook.config.url, event=event["event"], attempts=delivery.attempts,
                      error=str(exc))
            return
        delivery.ok, delivery.error, delivery.failing_since = True, None, None

    async def _post(self, hook: _Hook, body: bytes, headers: dict[str, str]) -> None:
        assert self._session is not None, "start() first"
        try:
            async with self._session.post(hook.config.url, data=body, headers=headers) as response:
                if not 200 <= response.status < 300:
                    raise DeliveryFailed(f"answered {response.status}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryFailed(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None


TRANSITION_EVENTS = {"running": "stage_started", "rolling_back": "rollback_planned", "rolled_back": "rollback_done",
                     "failed": "rollback_failed", "promoted": "promoted", "awaiting_signoff": "waiting_for_signoff"}
"""A rollout transition's ``to`` state -> the webhook event it is."""
