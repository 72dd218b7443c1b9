"""Operator commands in the store: rows the daemon picks up, so they are durable, audited and work from any host.

A command is acknowledged by writing its row (accepted or rejected, with a message); the engine
acknowledges the commands of a rollout in the transaction of the decision they caused, fenced by the
rollout's lease. A command no rollout lease covers (a baseline placement) is first claimed
compare-and-set (`claim_command`): with several daemons, one carries it out.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update

from controller.canonical import canonical_json
from controller.clock import Clock, RealClock
from controller.errors import InputError, NotFoundError
from controller.store import audit
from controller.store.database import Database
from controller.store.leases import lease_now
from controller.store.models import OperatorCommand


@dataclass(frozen=True)
class CommandInfo:
    id: int
    rollout_id: int | None
    kind: str
    actor: str
    reason: str | None
    args: dict[str, Any]
    created_at: datetime
    acked_at: datetime | None
    outcome: str | None
    message: str | None

    @classmethod
    def from_row(cls, row: OperatorCommand) -> CommandInfo:
        return cls(row.id, row.rollout_id, row.kind, row.actor, row.reason, json.loads(row.args), row.created_at,
                   row.acked_at, row.outcome, row.message)

    def given_on(self, clock: Clock, wall: Clock = RealClock()) -> float:
        """When the command was given, in ``clock``'s seconds. `canaryctl` stamps its commands on the
        wall clock (``args.clock == "wall"``) while a daemon may run an accelerated simulated clock
        (``--speed``, the demo): their age is measured on the wall clock, so a command given a minute
        ago is a minute old whatever the daemon's speed. Other writers stamp on the clock they share
        with the daemon."""
        if self.args.get("clock") != "wall":
            return self.created_at.timestamp()
        return clock.time() - max(0.0, wall.time() - self.created_at.timestamp())

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "rollout": self.rollout_id, "kind": self.kind, "actor": self.actor,
                "reason": self.reason, "args": self.args, "created_at": self.created_at.isoformat(),
                "acked_at": self.acked_at.isoformat() if self.acked_at else None, "outcome": self.outcome,
                "message": self.message}


async def submit_command(db: Database, clock: Clock, *, rollout_id: int | None, kind: str, actor: str,
                         reason: str | None = None, args: dict[str, Any] | None = None) -> CommandInfo:
    if not actor.strip():
        raise InputError("a command needs an actor (who gives it)")
    async with db.write() as session:
        role = await audit.db_role(session)  # who gave it, as PostgreSQL knows them
        args = {**({"db_role": role} if role else {}), **(args or {})}
        row = OperatorCommand(rollout_id=rollout_id, kind=kind, actor=actor, reason=reason,
                              args=canonical_json(args), created_at=clock.now())
        session.add(row)
        await session.flush()
        return CommandInfo.from_row(row)


async def pending_commands(db: Database, rollout_ids: Sequence[int] | None = None) -> list[CommandInfo]:
    """Commands not yet acknowledged, oldest first (for the given rollouts; None: all)."""
    async with db.read() as session:
        query = select(OperatorCommand).where(OperatorCommand.acked_at.is_(None)).order_by(OperatorCommand.id)
        if rollout_ids is not None:
            query = query.where(or_(OperatorCommand.rollout_id.in_(rollout_ids), OperatorCommand.rollout_id.is_(None)))
        return [CommandInfo.from_row(r) for r in (await session.execute(query)).scalars()]


async def get_command(db: Database, command_id: int) -> CommandInfo:
    async with db.read() as session:
        row = await session.get(OperatorCommand, command_id)
        if row is None:
            raise NotFoundError(f"no command {command_id}")
        return CommandInfo.from_row(row)


async def await_ack(db: Database, command_id: int, *, timeout: float, poll: float = 0.1) -> CommandInfo:
    """The command once the daemon acknowledged it, or as it stands after ``timeout`` wall seconds.

    The daemon acknowledges by writing the row; SQLite has no notifications, so this reads it
    every ``poll`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        command = await get_command(db, command_id)
        if command.acked_at is not None or time.monotonic() >= deadline:
            return command
        await asyncio.sleep(poll)


async def ack_command(db: Database, clock: Clock, command_id: int, *, accepted: bool, message: str,
                      audit_kind: str | None = None) -> bool:
    """Acknowledge a command handled outside a rollout's decision (e.g. placing a baseline); a
    compare-and-set: False, and nothing written, when it was acknowledged already."""
    async with db.write() as session:
        answered = await session.execute(update(OperatorCommand).where(
            OperatorCommand.id == command_id, OperatorCommand.acked_at.is_(None)).values(
            acked_at=clock.now(), outcome="accepted" if accepted else "rejected", message=message))
        if answered.rowcount != 1:
            return False
        row = await session.get(OperatorCommand, command_id)
        if audit_kind:
            await audit.append(session, clock, actor=row.actor, kind=audit_kind, subject=f"command:{row.id}",
                               payload={"command": row.id, "accepted": accepted, "message": message,
                                        "args": json.loads(row.args), "reason": row.reason})
        return True


async def claim_command(db: Database, command_id: int, owner: str, *, seconds: float,
                        exclusive: bool = False) -> bool:
    """Take an unanswered command for ``owner`` to carry out, for ``seconds``: True for the one daemon
    whose ``UPDATE ... WHERE claimed_by IS NULL`` changed the row. Its claimer may claim it again (an
    answer that could not be written); a claim whose time ran out without an answer (its daemon died)
    may be taken by another: carrying a command out must be idempotent. ``exclusive``: the one daemon
    the store allows (SQLite's file lock), so a claim any other owner left is a dead daemon's."""
    async with db.write() as session:
        now = await lease_now(session, db)
        free = or_(OperatorCommand.claimed_by.is_(None), OperatorCommand.claimed_by == owner,
                   OperatorCommand.claimed_until <= now)
        claimed = await session.execute(update(OperatorCommand).where(
            OperatorCommand.id == command_id, OperatorCommand.acked_at.is_(None),
            *(() if exclusive else (free,))).values(
            claimed_by=owner, claimed_until=now + timedelta(seconds=seconds)))
        return claimed.rowcount == 1
