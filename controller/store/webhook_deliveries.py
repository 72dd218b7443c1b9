"""Webhook deliveries in the store: a row per (webhook, event), written by the webhook's drain task as
its attempts go, so that `canaryctl status` shows whether the endpoints heard the rollout's events."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import update

from controller.store.database import Database
from controller.store.models import WebhookDelivery


async def delivery_queued(db: Database, *, environment: str, webhook: str, rollout_id: int | None, event: str,
                          stage: str | None, at: datetime) -> int:
    """A row for an event the webhook starts delivering (state ``sending``); its id."""
    async with db.write() as session:
        row = WebhookDelivery(environment=environment, webhook=webhook, rollout_id=rollout_id, event=event,
                              stage=stage, state="sending", attempts=0, queued_at=at)
        session.add(row)
        await session.flush()
        return row.id


async def delivery_attempted(db: Database, delivery_id: int, *, state: str, attempts: int, status: int | None,
                             error: str | None, at: datetime, delivered_at: datetime | None,
                             failing_since: datetime | None) -> None:
    """The delivery after an attempt: ``sending`` (to be tried again), ``delivered`` or ``failed``."""
    async with db.write() as session:
        await session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id).values(
            state=state, attempts=attempts, last_status=status, last_error=error, last_attempt_at=at,
            delivered_at=delivered_at, failing_since=failing_since))
