"""Rollouts, operator commands and deployments in the store: the daemon's memory across restarts.

Every change the engine makes lands in one transaction with its audit events and the acks of
the commands that caused it, so a crash leaves either all of a decision on record or none.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update

from controller.canonical import canonical_json
from controller.clock import Clock, to_datetime
from controller.errors import ConflictError, InputError, NotFoundError
from controller.rollout.decide import TERMINAL, Ack, Audit, Command, State, Status
from controller.rollout.pipeline import Pipeline, pipeline_from_json
from controller.store import audit
from controller.store.database import Database
from controller.store.models import Deployment, OperatorCommand, Release, Rollout, StageRun

DONE = frozenset(s.value for s in TERMINAL)


@dataclass(frozen=True)
class RolloutInfo:
    id: int
    release: str
    release_id: int
    baseline: str | None
    pipeline: Pipeline
    state: State
    created_at: datetime
    updated_at: datetime

    @property
    def status(self) -> Status:
        return self.state.status

    @property
    def stage(self):
        return self.pipeline.stages[self.state.stage]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "release": self.release, "baseline": self.baseline, "state": self.status.value,
                "stage": self.stage.name, "pipeline": self.pipeline.name, "decision": self.state.to_json(),
                "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat()}


async def _info(session, row: Rollout) -> RolloutInfo:
    release = await session.get(Release, row.release_id)
    baseline = await session.get(Release, row.baseline_release_id) if row.baseline_release_id else None
    return RolloutInfo(row.id, release.version, row.release_id, baseline.version if baseline else None,
                       pipeline_from_json(row.pipeline, f"rollout {row.id}"), State.from_json(json.loads(row.decision)),
                       row.created_at, row.updated_at)


async def create_rollout(db: Database, clock: Clock, *, version: str, pipeline: Pipeline, actor: str) -> RolloutInfo:
    """A pending rollout of ``version``; refused while another rollout is under way."""
    async with db.write() as session:
        release = (await session.execute(select(Release).where(Release.version == version))).scalar_one_or_none()
        if release is None:
            raise NotFoundError(f"no release {version!r}; record it first with `canaryctl release add`")
        busy = (await session.execute(select(Rollout).where(Rollout.state.not_in(DONE)))).scalars().first()
        if busy is not None:
            other = await session.get(Release, busy.release_id)
            raise ConflictError(f"rollout {busy.id} of {other.version} is {busy.state}; one rollout at a time: "
                                f"wait for it, or `canaryctl rollback {busy.id} --reason TEXT`")
        first = pipeline.stages[0]
        baseline_account = next((s.baseline for s in pipeline.stages if s.baseline), first.account)
        baseline = await _live(session, first.environment, baseline_account)
        now = clock.now()
        row = Rollout(release_id=release.id, baseline_release_id=baseline.release_id if baseline else None,
                      pipeline=canonical_json(pipeline.model_dump(mode="json")), state=Status.PENDING.value,
                      stage=first.name, created_at=now, updated_at=now, decision=canonical_json(State().to_json()))
        session.add(row)
        await session.flush()
        await audit.append(session, clock, actor=actor, kind="rollout.created", subject=f"rollout:{row.id}",
                           release=version, payload={"rollout": row.id, "pipeline": pipeline.name,
                                                     "stages": [s.name for s in pipeline.stages]})
        return await _info(session, row)


async def get_rollout(db: Database, ref: str | int) -> RolloutInfo:
    """A rollout by id, or a release version meaning that release's latest rollout."""
    async with db.read() as session:
        row = None
        if isinstance(ref, int) or str(ref).isdigit():
            row = await session.get(Rollout, int(ref))
        if row is None:
            row = (await session.execute(select(Rollout).join(Release, Rollout.release_id == Release.id)
                                         .where(Release.version == str(ref)).order_by(Rollout.id.desc()))
                   ).scalars().first()
        if row is None:
            raise NotFoundError(f"no rollout {ref!r} (give a rollout id or a release version; "
                                "`canaryctl rollout list` shows them)")
        return await _info(session, row)


async def list_rollouts(db: Database, *, active_only: bool = False) -> list[RolloutInfo]:
    async with db.read() as session:
        query = select(Rollout).order_by(Rollout.id)
        if active_only:
            query = query.where(Rollout.state.not_in(DONE))
        return [await _info(session, row) for row in (await session.execute(query)).scalars()]


async def save_decision(db: Database, clock: Clock, info: RolloutInfo, state: State, *,
                        audits: Iterable[Audit] = (), acks: Iterable[Ack] = ()) -> RolloutInfo:
    """Store the new state with its audit events and command acks, all or nothing."""
    async with db.write() as session:
        row = await session.get(Rollout, info.id)
        row.state = state.status.value
        row.stage = info.pipeline.stages[state.stage].name
        row.decision = canonical_json(state.to_json())
        row.updated_at = clock.now()
        for event in audits:
            await audit.append(session, clock, actor=event.actor, kind=event.kind, subject=f"rollout:{info.id}",
                               release=info.release, payload=dict(event.payload))
        for ack in acks:
            await session.execute(update(OperatorCommand).where(OperatorCommand.id == ack.command_id).values(
                acked_at=clock.now(), outcome="accepted" if ack.accepted else "rejected", message=ack.message))
        await session.flush()
        return await _info(session, row)


# ---------------------------------------------------------------- operator commands

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

    def as_command(self) -> Command:
        return Command(self.id, self.kind, self.actor, self.reason, bool(self.args.get("force")),
                       self.args.get("stage"), tuple(self.args.get("items", ())))

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
        row = OperatorCommand(rollout_id=rollout_id, kind=kind, actor=actor, reason=reason,
                              args=canonical_json(args or {}), created_at=clock.now())
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
                      audit_kind: str | None = None) -> None:
    """Acknowledge a command handled outside a rollout's decision (e.g. placing a baseline)."""
    async with db.write() as session:
        row = await session.get(OperatorCommand, command_id)
        row.acked_at, row.outcome, row.message = clock.now(), "accepted" if accepted else "rejected", message
        if audit_kind:
            await audit.append(session, clock, actor=row.actor, kind=audit_kind, subject=f"command:{row.id}",
                               payload={"command": row.id, "accepted": accepted, "message": message,
                                        "args": json.loads(row.args), "reason": row.reason})


# ---------------------------------------------------------------- deployments and stage runs

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


async def _live(session, environment: str, account: str) -> Deployment | None:
    return (await session.execute(select(Deployment).where(
        Deployment.environment == environment, Deployment.account == account,
        Deployment.stopped_at.is_(None)))).scalar_one_or_none()


async def _deployment_info(session, row: Deployment) -> DeploymentInfo:
    release = await session.get(Release, row.release_id)
    return DeploymentInfo(row.id, row.rollout_id, row.environment, row.account, row.instance, row.release_id,
                          release.version, row.config_sha256, row.previous_id, row.started_at, row.stopped_at)


async def live_deployment(db: Database, environment: str, account: str) -> DeploymentInfo | None:
    async with db.read() as session:
        row = await _live(session, environment, account)
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


async def record_placement(db: Database, clock: Clock, *, rollout_id: int | None, environment: str, account: str,
                           instance: str, release: str, actor: str = "controller",
                           previous_id: int | None = None) -> DeploymentInfo:
    """The release now runs on the account: the old live row (if any) is closed in the same transaction."""
    async with db.write() as session:
        rel = (await session.execute(select(Release).where(Release.version == release))).scalar_one()
        old = await _live(session, environment, account)
        now = clock.now()
        if old is not None:
            old.stopped_at = now
            await session.flush()
        row = Deployment(rollout_id=rollout_id, environment=environment, account=account, instance=instance,
                         release_id=rel.id, config_sha256=rel.config_sha256,
                         previous_id=previous_id if previous_id is not None else (old.id if old else None),
                         started_at=now)
        session.add(row)
        await session.flush()
        await audit.append(session, clock, actor=actor, kind="deploy.placed", subject=f"account:{environment}/{account}",
                           release=release, payload={"rollout": rollout_id, "deployment": row.id, "instance": instance,
                                                     "config_sha256": rel.config_sha256,
                                                     "replaced": old.id if old else None})
        return await _deployment_info(session, row)


async def record_stopped(db: Database, clock: Clock, deployment_id: int, *, actor: str = "controller",
                         reason: str = "") -> None:
    async with db.write() as session:
        row = await session.get(Deployment, deployment_id)
        if row.stopped_at is not None:
            return
        row.stopped_at = clock.now()
        release = await session.get(Release, row.release_id)
        await audit.append(session, clock, actor=actor, kind="deploy.stopped",
                           subject=f"account:{row.environment}/{row.account}", release=release.version,
                           payload={"deployment": row.id, "instance": row.instance, "reason": reason})


async def start_stage_run(db: Database, clock: Clock, info: RolloutInfo, stage_index: int, started: float) -> int:
    stage = info.pipeline.stages[stage_index]
    async with db.write() as session:
        row = StageRun(rollout_id=info.id, stage=stage.name, environment=stage.environment, account=stage.account,
                       capital_cap=stage.capital_cap, started_at=to_datetime(started),
                       ends_at=to_datetime(started + stage.duration))
        session.add(row)
        await session.flush()
        return row.id


async def current_stage_run(db: Database, rollout_id: int, stage: str) -> int | None:
    async with db.read() as session:
        return (await session.execute(select(StageRun.id).where(
            StageRun.rollout_id == rollout_id, StageRun.stage == stage).order_by(StageRun.id.desc()))).scalars().first()


async def finish_stage_run(db: Database, clock: Clock, rollout_id: int, stage: str, outcome: str) -> None:
    async with db.write() as session:
        row = (await session.execute(select(StageRun).where(
            StageRun.rollout_id == rollout_id, StageRun.stage == stage, StageRun.finished_at.is_(None))
            .order_by(StageRun.id.desc()))).scalars().first()
        if row is not None:
            row.finished_at, row.outcome = clock.now(), outcome
