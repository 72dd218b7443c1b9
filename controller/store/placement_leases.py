"""Placement leases: the row each bot's supervisor holds on its instance, so that a bot can be fenced too.

A daemon on another host cannot kill a process it did not start. So every bot runs under a supervisor
(`controller.deploy.supervisor`) that claims its instance's lease when it starts the bot, raising the
epoch, and renews it every third of its length with ``UPDATE ... WHERE instance = :i AND epoch = :mine``.
A renewal that changes no row means the epoch moved on: another placement of the instance, or a stop
(`supersede`) from any host. Then, or when it could not renew for a lease length (the database out of
reach counts), the supervisor kills its bot. Lease times are the database server's on PostgreSQL, as
for rollout leases (`controller.store.leases`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from controller.store.database import Database
from controller.store.leases import lease_now
from controller.store.models import PlacementLease


@dataclass(frozen=True)
class PlacementHolder:
    instance: str
    epoch: int
    owner: str
    """The supervisor (``HOST:PID``); empty when released or superseded by a stop."""
    renewed_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def from_row(cls, row: PlacementLease) -> PlacementHolder:
        return cls(row.instance, row.epoch, row.owner, row.renewed_at, row.expires_at)


async def claim(db: Database, instance: str, owner: str, *, seconds: float) -> tuple[int, PlacementHolder | None]:
    """Take the instance's lease for ``owner`` at the next epoch, whoever held it: the supervisor of the
    bot placed before (here or on another host) sees the new epoch at its next renewal and kills its bot.
    Returns the epoch taken and the lease as it was (None: never claimed)."""
    for attempt in (1, 2):
        try:
            async with db.write() as session:
                now = await lease_now(session, db)
                row = (await session.execute(select(PlacementLease).where(PlacementLease.instance == instance)
                                             .with_for_update())).scalar_one_or_none()
                before = PlacementHolder.from_row(row) if row is not None else None
                if row is None:
                    row = PlacementLease(instance=instance, epoch=0)
                    session.add(row)
                row.epoch, row.owner = (before.epoch if before else 0) + 1, owner
                row.acquired_at = row.renewed_at = now
                row.expires_at = now + timedelta(seconds=seconds)
                await session.flush()
                return row.epoch, before
        except IntegrityError:  # two first claims at once (PostgreSQL): the row exists now, take it
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


async def renew(db: Database, instance: str, epoch: int, *, seconds: float) -> bool:
    """Extend the lease held at ``epoch``; False when the epoch moved on (the bot must die now)."""
    async with db.write() as session:
        now = await lease_now(session, db)
        result = await session.execute(update(PlacementLease).where(
            PlacementLease.instance == instance, PlacementLease.epoch == epoch).values(
            renewed_at=now, expires_at=now + timedelta(seconds=seconds)))
        return result.rowcount == 1


async def release(db: Database, instance: str, epoch: int) -> None:
    """The bot held at ``epoch`` has ended: the lease is let go (nobody's, expired), its epoch kept."""
    async with db.write() as session:
        now = await lease_now(session, db)
        await session.execute(update(PlacementLease).where(
            PlacementLease.instance == instance, PlacementLease.epoch == epoch).values(owner="", expires_at=now))


async def supersede(db: Database, instance: str) -> tuple[int, str] | None:
    """Stop the instance's bot from any host: the epoch moves on, held by nobody, and its supervisor,
    wherever it runs, kills the bot within a lease length. The new epoch and the supervisor whose
    lease was live until now ("" when none was: nothing to wait for); None when never claimed."""
    async with db.write() as session:
        now = await lease_now(session, db)
        row = (await session.execute(select(PlacementLease).where(PlacementLease.instance == instance)
                                     .with_for_update())).scalar_one_or_none()
        if row is None:
            return None
        live = row.owner if row.owner and row.expires_at is not None and row.expires_at > now else ""
        row.epoch, row.owner, row.expires_at = row.epoch + 1, "", now
        return row.epoch, live


async def holder(db: Database, instance: str) -> PlacementHolder | None:
    async with db.read() as session:
        row = await session.get(PlacementLease, instance)
        return PlacementHolder.from_row(row) if row is not None else None
