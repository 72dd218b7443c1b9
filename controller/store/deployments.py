"""Deployments in the store: which release runs on which account, since when, and what it replaced.

At most one deployment of an account is live (not stopped). A placement first writes its intent,
a row in state "starting" with the account's exchange settings as they were, and closes the old
live row in the same transaction, so the store never shows two bots on one account; the row says
"running" once the release started.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select

from controller.canonical import canonical_json
from controller.clock import Clock
from controller.store import audit
from controller.store.database import Database
from controller.store.models import Deployment, Release


@dataclass(frozen=True)
class DeploymentInfo:
    id: int
    rollout_id: int | None
    environment: str
    account: str
    instance: str
    release_id: int
    release: str
    config_sha256: str
    previous_id: int | None
    started_at: datetime
    stopped_at: datetime | None
    state: str
    """"starting" (the intent: the release has not started yet) or "running"."""
    settings_before: dict[str, Any] | None
    """The account's exchange settings read before the placement (`placing.read_settings`), or None."""


async def live_row(session, environment: str, account: str) -> Deployment | None:
    """The account's live deployment row, inside the caller's transaction."""
    return (await session.execute(select(Deployment).where(
        Deployment.environment == environment, Deployment.account == account,
        Deployment.stopped_at.is_(None)))).scalar_one_or_none()


async def _deployment_info(session, row: Deployment) -> DeploymentInfo:
    release = await session.get(Release, row.release_id)
    return DeploymentInfo(row.id, row.rollout_id, row.environment, row.account, row.instance, row.release_id,
                          release.version, row.config_sha256, row.previous_id, row.started_at, row.stopped_at,
                          row.state, json.loads(row.settings_before) if row.settings_before else None)


async def live_deployment(db: Database, environment: str, account: str) -> DeploymentInfo | None:
    async with db.read() as session:
        row = await live_row(session, environment, account)
        return await _deployment_info(session, row) if row else None


async def get_deployment(db: Database, deployment_id: int) -> DeploymentInfo:
    async with db.read() as session:
        return await _deployment_info(session, await session.get(Deployment, deployment_id))


async def rollout_deployments(db: Database, rollout_id: int) -> list[DeploymentInfo]:
    """Every placement a rollout made, in order."""
    async with db.read() as session:
        rows = (await session.execute(select(Deployment).where(Deployment.rollout_id == rollout_id)
                                      .order_by(Deployment.id))).scalars()
        return [await _deployment_info(session, r) for r in rows]


async def record_intent(db: Database, clock: Clock, *, rollout_id: int | None, environment: str, account: str,
                        instance: str, release: str, settings_before: dict[str, Any] | None,
                        actor: str = "controller", previous_id: int | None = None,
                        config_sha256: str | None = None) -> DeploymentInfo:
    """The release is about to be placed on the account: its row, "starting", written before anything
    on the account is stopped or changed. The old live row (if any) is closed in the same transaction:
    its release is stopped next, and this row holds the account from now on. ``config_sha256``: the
    snapshot placed when it is not the release's own (a stage's toggle turned on)."""
    async with db.write(durable=True) as session:
        rel = (await session.execute(select(Release).where(Release.version == release))).scalar_one()
        old = await live_row(session, environment, account)
        placed = config_sha256 or rel.config_sha256
        now = clock.now()
        if old is not None:
            old.stopped_at = now
            await session.flush()
        row = Deployment(rollout_id=rollout_id, environment=environment, account=account, instance=instance,
                         release_id=rel.id, config_sha256=placed,
                         previous_id=previous_id if previous_id is not None else (old.id if old else None),
                         started_at=now, state="starting",
                         settings_before=canonical_json(settings_before) if settings_before is not None else None)
        session.add(row)
        await session.flush()
        await audit.append(session, clock, actor=actor, kind="deploy.intent", subject=f"account:{environment}/{account}",
                           release=release, payload={"rollout": rollout_id, "deployment": row.id, "instance": instance,
                                                     "config_sha256": placed, "previous": row.previous_id,
                                                     "replaced": old.id if old else None,
                                                     "settings_before": settings_before})
        return await _deployment_info(session, row)


async def record_running(db: Database, clock: Clock, deployment_id: int, *, actor: str = "controller") -> DeploymentInfo:
    """The deployment's release started: its intent becomes the running deployment (said once)."""
    async with db.write() as session:
        row = await session.get(Deployment, deployment_id)
        if row.state != "running":
            row.state = "running"
            release = await session.get(Release, row.release_id)
            await audit.append(session, clock, actor=actor, kind="deploy.placed",
                               subject=f"account:{row.environment}/{row.account}", release=release.version,
                               payload={"rollout": row.rollout_id, "deployment": row.id, "instance": row.instance,
                                        "config_sha256": row.config_sha256, "previous": row.previous_id})
        return await _deployment_info(session, row)


async def record_placement(db: Database, clock: Clock, *, rollout_id: int | None, environment: str, account: str,
                           instance: str, release: str, actor: str = "controller",
                           previous_id: int | None = None) -> DeploymentInfo:
    """A placement made elsewhere, recorded at once: its intent (no settings read) and its start."""
    intent = await record_intent(db, clock, rollout_id=rollout_id, environment=environment, account=account,
                                 instance=instance, release=release, settings_before=None, actor=actor,
                                 previous_id=previous_id)
    return await record_running(db, clock, intent.id, actor=actor)


async def record_stopped(db: Database, clock: Clock, deployment_id: int, *, actor: str = "controller",
                         reason: str = "") -> None:
    async with db.write() as session:
        await mark_stopped(session, clock, deployment_id, actor=actor, reason=reason)


async def mark_stopped(session, clock: Clock, deployment_id: int, *, actor: str = "controller",
                       reason: str = "") -> None:
    """`record_stopped` inside the caller's write transaction (a no-op for a row already stopped)."""
    row = await session.get(Deployment, deployment_id)
    if row.stopped_at is not None:
        return
    row.stopped_at = clock.now()
    release = await session.get(Release, row.release_id)
    await audit.append(session, clock, actor=actor, kind="deploy.stopped",
                       subject=f"account:{row.environment}/{row.account}", release=release.version,
                       payload={"deployment": row.id, "instance": row.instance, "reason": reason})
