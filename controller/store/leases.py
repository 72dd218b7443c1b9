"""Rollout leases: which daemon acts on which rollout, until when, and the fence of its writes.

Several daemons may share one PostgreSQL database; each active rollout has one owner at a time.
A daemon claims leases that are unowned or expired (``SELECT ... FOR UPDATE SKIP LOCKED``: two
daemons claiming at once never wait on, nor take, the same row), renews its own every third of
their length, and takes over an expired one by raising its epoch (audited ``lease.taken_over``).
The epoch is copied onto the rollout's row in the claim's transaction, and every write its owner
makes about the rollout begins with the `Fence`: ``UPDATE rollouts ... WHERE id = :id AND epoch =
:mine``. That statement locks the row until commit, so a takeover waits for a write under way, and
a write after it changes nothing: it is refused (`FencingRefused`, audited ``fencing.refused``).

Lease times are the database server's on PostgreSQL (``clock_timestamp()``), so that daemons on hosts
whose clocks disagree read one clock; SQLite has one daemon (`controller.store.daemon_lock`), which
takes every lease it does not hold at once, whoever held it before being dead.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from controller.clock import Clock
from controller.errors import CanaryError, StoreError
from controller.logs import get_logger
from controller.store import TERMINAL, audit
from controller.store.database import Database
from controller.store.models import Rollout, RolloutLease

log = get_logger(__name__)

DEFAULT_LEASE_SECONDS = 9.0
"""A lease's length: renewed every third of it, so two renewals may fail before it expires."""


@dataclass(frozen=True)
class Lease:
    rollout_id: int
    owner: str
    epoch: int
    acquired_at: datetime | None
    """Since when ``owner`` holds the rollout (this epoch)."""
    renewed_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def from_row(cls, row: RolloutLease) -> Lease:
        return cls(row.rollout_id, row.owner, row.epoch, row.acquired_at, row.renewed_at, row.expires_at)


class FencingRefused(CanaryError):
    """A write about a rollout by a daemon whose lease was taken over: nothing was written."""

    def __init__(self, rollout_id: int, epoch: int, current_epoch: int | None, current_owner: str | None) -> None:
        super().__init__(f"rollout {rollout_id}: a write with epoch {epoch} was refused; the rollout is at epoch "
                         f"{current_epoch}, owned by {current_owner or 'nobody'}: this daemon no longer owns it")
        self.rollout_id = rollout_id
        self.epoch = epoch
        self.current_epoch = current_epoch
        self.current_owner = current_owner


@dataclass(frozen=True)
class Fence:
    """One owner's epoch of one rollout: the check that opens each of its write transactions
    (`Database.guarded`), and the audit of a write it refused."""

    rollout_id: int
    epoch: int
    owner: str
    clock: Clock

    async def check(self, session: AsyncSession) -> None:
        # A compare-and-set that changes nothing but takes the row's lock until commit (PostgreSQL):
        # a takeover, which raises the epoch on this row, waits for this transaction or refuses it.
        result = await session.execute(text("UPDATE rollouts SET epoch = :mine WHERE id = :id AND epoch = :mine"),
                                       {"id": self.rollout_id, "mine": self.epoch})
        if result.rowcount == 1:
            return
        now = (await session.execute(text(
            "SELECT r.epoch, l.owner FROM rollouts r LEFT JOIN rollout_leases l ON l.rollout_id = r.id "
            "WHERE r.id = :id"), {"id": self.rollout_id})).one_or_none()
        raise FencingRefused(self.rollout_id, self.epoch, now[0] if now else None, now[1] if now else None)

    async def refused(self, db: Database, error: BaseException) -> None:
        if not isinstance(error, FencingRefused) or error.rollout_id != self.rollout_id:
            return
        log.error("fencing_refused", rollout=self.rollout_id, owner=self.owner, epoch=self.epoch,
                  current_epoch=error.current_epoch, current_owner=error.current_owner)
        # The record outlives its writer: a refused runner is often cancelled at this very moment (its
        # daemon's lease loop finds the lease gone), and a refusal logged but never audited is a lost record.
        recording = asyncio.ensure_future(self._audit(db, error))
        _recording.add(recording)
        recording.add_done_callback(_recording.discard)
        await asyncio.shield(recording)

    async def _audit(self, db: Database, error: FencingRefused) -> None:
        try:
            await audit.record(db, self.clock, actor=audit.CONTROLLER_ACTOR, kind="fencing.refused",
                               subject=f"rollout:{self.rollout_id}",
                               payload={"rollout": self.rollout_id, "owner": self.owner, "epoch": self.epoch,
                                        "current_epoch": error.current_epoch,
                                        "current_owner": error.current_owner})
        except StoreError as unrecorded:  # the refusal stands; only its record is missing
            log.error("fencing_refusal_not_audited", rollout=self.rollout_id, error=str(unrecorded))


_recording: set[asyncio.Task[None]] = set()
"""Refusals being audited, shielded from their writers' cancellation (held here so none is collected)."""


async def refusals_recorded() -> None:
    """Wait until every refusal this process is auditing is written (a daemon stopping, a test)."""
    while _recording:
        await asyncio.gather(*_recording, return_exceptions=True)


async def lease_now(session: AsyncSession, db: Database) -> datetime:
    """The time leases are measured in: the PostgreSQL server's, else this host's."""
    if db.dialect == "postgresql":
        return (await session.execute(text("SELECT clock_timestamp()"))).scalar_one()
    return datetime.now(tz=UTC)


async def add_lease(session: AsyncSession, rollout_id: int) -> None:
    """A new rollout's lease, unowned, inside the caller's transaction."""
    session.add(RolloutLease(rollout_id=rollout_id, owner="", epoch=0))


async def claim(db: Database, clock: Clock, owner: str, *, held: Collection[int] = (), seconds: float,
                exclusive: bool = False) -> list[tuple[Lease, str]]:
    """The leases of active rollouts that ``owner`` takes now, besides those it ``held``: the unowned
    and the expired (with ``exclusive``, the one-daemon SQLite case: every one). Each gets the next
    epoch, copied onto its rollout, which fences off whoever held it before; taking one another
    daemon held is audited ``lease.taken_over``. Returns each lease taken with its previous owner."""
    taken = []
    async with db.write() as session:
        now = await lease_now(session, db)
        query = (select(RolloutLease).join(Rollout, Rollout.id == RolloutLease.rollout_id)
                 .where(Rollout.state.not_in(TERMINAL), RolloutLease.rollout_id.not_in(list(held)))
                 .order_by(RolloutLease.rollout_id).with_for_update(skip_locked=True, of=RolloutLease))
        if not exclusive:
            query = query.where(or_(RolloutLease.owner == "", RolloutLease.expires_at.is_(None),
                                    RolloutLease.expires_at <= now))
        for row in (await session.execute(query)).scalars().all():
            before = Lease.from_row(row)
            row.owner, row.epoch = owner, before.epoch + 1
            row.acquired_at = row.renewed_at = now
            row.expires_at = now + timedelta(seconds=seconds)
            await session.execute(update(Rollout.__table__).where(Rollout.id == row.rollout_id)
                                  .values(epoch=row.epoch))
            if before.owner and before.owner != owner:
                await audit.append(session, clock, actor=audit.CONTROLLER_ACTOR, kind="lease.taken_over",
                                   subject=f"rollout:{row.rollout_id}",
                                   payload={"rollout": row.rollout_id, "owner": owner, "epoch": row.epoch,
                                            "previous_owner": before.owner, "previous_epoch": before.epoch,
                                            "expired_at": before.expires_at.isoformat() if before.expires_at
                                            else None})
            taken.append((Lease.from_row(row), before.owner if before.owner != owner else ""))
    for lease, previous in taken:
        log.info("lease_claimed", rollout=lease.rollout_id, owner=owner, epoch=lease.epoch,
                 previous_owner=previous or None)
    return taken


async def renew(db: Database, owner: str, epochs: dict[int, int], *, seconds: float) -> set[int]:
    """Extend ``owner``'s leases (rollout id -> epoch); returns the rollouts whose lease it no longer
    holds (taken over): their runners must stop at once."""
    lost = set()
    if not epochs:
        return lost
    async with db.write() as session:
        now = await lease_now(session, db)
        for rollout_id, epoch in sorted(epochs.items()):
            result = await session.execute(
                update(RolloutLease.__table__).where(RolloutLease.rollout_id == rollout_id,
                                                     RolloutLease.owner == owner, RolloutLease.epoch == epoch)
                .values(renewed_at=now, expires_at=now + timedelta(seconds=seconds)))
            if result.rowcount != 1:
                lost.add(rollout_id)
    return lost


async def give_up(db: Database, owner: str, epochs: dict[int, int]) -> None:
    """Let ``owner``'s leases expire now (a daemon that stops cleanly): another daemon takes them at
    its next claim instead of after a lease length. The owner's name stays, for the record."""
    if not epochs:
        return
    async with db.write() as session:
        now = await lease_now(session, db)
        for rollout_id, epoch in sorted(epochs.items()):
            await session.execute(update(RolloutLease.__table__).where(
                RolloutLease.rollout_id == rollout_id, RolloutLease.owner == owner, RolloutLease.epoch == epoch)
                .values(expires_at=now))


async def leases(db: Database) -> dict[int, Lease]:
    """Every lease, by rollout id."""
    async with db.read() as session:
        return {row.rollout_id: Lease.from_row(row) for row in (await session.execute(select(RolloutLease))).scalars()}
