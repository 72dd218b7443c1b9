"""Rollout events as signed webhooks: a queue the engine drops events into, drained by a task of its own.

The engine never waits on an endpoint: `Webhooks.emit` only queues (a full queue drops the oldest
event, logged), and one drain task per webhook posts each event, retrying with backoff (tenacity),
so a dead or hanging endpoint slows neither verdicts nor rollbacks, nor the other webhooks. The body
is JSON; ``X-Canary-Signature: sha256=HEX`` is the HMAC-SHA256 of the body with the webhook's
secret, read from its reference when the daemon starts and never logged or stored. Each webhook's
last delivery (ok, failing since, attempts) is kept for the admin ``/status``, and every delivery is
stored (`controller.store.webhook_deliveries`) for ``canaryctl status``. A URL's query may carry a
credential (``?token=``): logs, the store and ``status`` name a webhook by ``scheme://host/path`` only.
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
from datetime import UTC, datetime
from typing import Any

import aiohttp
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from controller.config.daemon import WebhookConfig
from controller.logs import get_logger, scrubbed, shown_url
from controller.store.database import Database
from controller.store.webhook_deliveries import delivery_attempted, delivery_queued

log = get_logger(__name__)

SIGNATURE_HEADER = "X-Canary-Signature"
QUEUE_LIMIT = 1000
"""Events a webhook may have waiting; past it the oldest is dropped (logged), never the engine slowed."""


def signature(secret: str, body: bytes) -> str:
    """The header's value: ``sha256=`` and the HMAC-SHA256 of ``body`` with ``secret``, in hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class DeliveryFailed(Exception):
    """An endpoint answered other than 2xx (``status``), or not at all in time (``status`` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


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
    status: int | None = None
    """The HTTP status of the last attempt (None: no answer)."""
    dropped: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "ok": self.ok, "event": self.event, "at": self.at, "attempts": self.attempts,
                "failing_since": self.failing_since, "error": self.error, "status": self.status,
                "dropped": self.dropped}


class _Hook:
    """One webhook: its settings, its secret (resolved once), its queue and its last delivery."""

    def __init__(self, environment: str, config: WebhookConfig) -> None:
        self.environment = environment
        self.config = config
        self.secret = config.secret.resolve()
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self.shown = shown_url(config.url)
        self.delivery = Delivery(self.shown)


class Webhooks:
    """Every environment's webhooks; ``attempts`` per event, backing off from ``backoff`` seconds up to
    ``backoff_max``; ``timeout``: wall seconds an endpoint has to answer one attempt. With ``db``, every
    delivery is stored as it goes (a store that fails is logged: the delivery goes on)."""

    def __init__(self, hooks: Mapping[str, Sequence[WebhookConfig]], *, attempts: int = 5, backoff: float = 1.0,
                 backoff_max: float = 60.0, timeout: float = 10.0, db: Database | None = None) -> None:
        self.hooks = [_Hook(environment, config) for environment, configs in hooks.items() for config in configs]
        self.db = db
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
                log.warning("webhook_event_dropped", url=hook.shown, reason="queue full")
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
                log.error("webhook_delivery_failed", url=hook.shown, event=event["event"],
                          error=scrubbed(str(exc), hook.config.url))

    async def _deliver(self, hook: _Hook, event: dict[str, Any]) -> None:
        body = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: signature(hook.secret, body)}
        delivery = hook.delivery
        delivery.event, delivery.attempts = event["event"], 0
        row = await self._stored_queued(hook, event)
        retrying = AsyncRetrying(stop=stop_after_attempt(self.attempts), reraise=True,
                                 wait=wait_exponential(multiplier=self.backoff, max=self.backoff_max),
                                 retry=retry_if_exception_type(DeliveryFailed))
        try:
            async for attempt in retrying:
                with attempt:
                    delivery.attempts += 1
                    delivery.at = time.time()
                    try:
                        delivery.status = await self._post(hook, body, headers)
                    except DeliveryFailed as exc:
                        delivery.error, delivery.status = str(exc), exc.status
                        delivery.failing_since = delivery.failing_since or delivery.at
                        if delivery.attempts < self.attempts:
                            await self._store_attempt(hook, row, "sending")
                        raise
        except DeliveryFailed as exc:
            delivery.ok = False
            log.error("webhook_undelivered", url=hook.shown, event=event["event"], attempts=delivery.attempts,
                      error=str(exc))
            await self._store_attempt(hook, row, "failed")
            return
        delivery.ok, delivery.error, delivery.failing_since = True, None, None
        await self._store_attempt(hook, row, "delivered")

    async def _post(self, hook: _Hook, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body``; the endpoint's 2xx status, else `DeliveryFailed` (its message names no credential)."""
        assert self._session is not None, "start() first"
        try:
            async with self._session.post(hook.config.url, data=body, headers=headers) as response:
                if not 200 <= response.status < 300:
                    raise DeliveryFailed(f"answered {response.status}", response.status)
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise DeliveryFailed(scrubbed(text, hook.config.url)) from None

    async def _stored_queued(self, hook: _Hook, event: dict[str, Any]) -> int | None:
        """The store's row for this delivery (None: no store, or it failed, logged)."""
        if self.db is None:
            return None
        rollout = event.get("rollout")
        try:
            return await delivery_queued(self.db, environment=hook.environment, webhook=hook.shown,
                                         rollout_id=rollout if isinstance(rollout, int) else None,
                                         event=event["event"], stage=event.get("stage"), at=datetime.now(tz=UTC))
        except Exception as exc:  # noqa: BLE001 - the delivery matters more than its record
            log.error("webhook_delivery_not_stored", url=hook.shown, event=event["event"], error=str(exc))
            return None

    async def _store_attempt(self, hook: _Hook, row: int | None, state: str) -> None:
        if self.db is None or row is None:
            return
        delivery = hook.delivery

        def instant(seconds: float | None) -> datetime | None:
            return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)

        try:
            await delivery_attempted(self.db, row, state=state, attempts=delivery.attempts, status=delivery.status,
                                     error=None if state == "delivered" else delivery.error,
                                     at=instant(delivery.at), delivered_at=instant(delivery.at)
                                     if state == "delivered" else None,
                                     failing_since=instant(delivery.failing_since))
        except Exception as exc:  # noqa: BLE001 - the delivery matters more than its record
            log.error("webhook_delivery_not_stored", url=hook.shown, event=delivery.event, error=str(exc))


TRANSITION_EVENTS = {"running": "stage_started", "rolling_back": "rollback_planned", "rolled_back": "rollback_done",
                     "failed": "rollback_failed", "promoted": "promoted", "awaiting_signoff": "waiting_for_signoff"}
"""A rollout transition's ``to`` state -> the webhook event it is."""
