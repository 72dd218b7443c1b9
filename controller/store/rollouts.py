"""Rollouts and their stage runs in the store: the daemon's memory across restarts.

The store keeps a rollout's pipeline and decision state as the canonical JSON the engine hands
it and gives them back as a `RolloutRecord` (`controller.store.rollout_record`, which reads the
row for every view of a rollout); `controller.rollout.info` reads them into the engine's types.
Every change the engine makes lands in one transaction with its audit events and the acks of
the commands that caused it, so a crash leaves either all of a decision on record or none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError

from controller.canonical import canonical_json
from controller.clock import Clock, to_datetime
from controller.errors import ConflictError, NotFoundError
from controller.store import TERMINAL, audit
from controller.store.database import Database
from controller.store.deployments import live_row
from controller.store.leases import add_lease
from controller.store.models import AccountClaim, OperatorCommand, Release, Rollout, StageRun
from controller.store.rollout_record import SELECT_ROLLOUT, RolloutRecord


class AuditEntry(Protocol):
    """An audit event a decision carries (the engine's `decide.Audit`)."""

    @property
    def kind(self) -> str: ...
    @property
    def actor(self) -> str: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...


class CommandAck(Protocol):
    """A command a decision answers (the engine's `decide.Ack`)."""

    @property
    def command_id(self) -> int: ...
    @property
    def accepted(self) -> bool: ...
    @property
    def message(self) -> str: ...


async def _record(session, rollout_id: int) -> RolloutRecord:
    row = (await session.execute(text(f"{SELECT_ROLLOUT} WHERE r.id = :id"), {"id": rollout_id})).one()
    return RolloutRecord.from_row(row._mapping)


async def create_rollout(db: Database, clock: Clock, *, version: str, pipeline: Mapping[str, Any],
                         decision: Mapping[str, Any], actor: str) -> RolloutRecord:
    """A rollout of ``version`` through ``pipeline`` (a pipeline as JSON data), refused while another
    rollout is under way. Its baseline is the release live where the pipeline keeps its baseline.
    It gets an unowned lease, and claims every account it places on or compares with: the claims'
    primary key refuses a second active rollout on an account even when two writers race."""
    async with db.write() as session:
        release = (await session.execute(select(Release).where(Release.version == version))).scalar_one_or_none()
        if release is None:
            raise NotFoundError(f"no release {version!r}; record it first with `canaryctl release add`")
        busy = (await session.execute(select(Rollout).where(Rollout.state.not_in(TERMINAL)))).scalars().first()
        if busy is not None:
            other = await session.get(Release, busy.release_id)
            raise ConflictError(f"rollout {busy.id} of {other.version} is {busy.state}; one rollout at a time: "
                                f"wait for it, or `canaryctl rollback {busy.id} --reason TEXT`")
        stages = pipeline["stages"]
        first = stages[0]
        baseline_account = next((s["baseline"] for s in stages if s.get("baseline")), first["account"])
        baseline = await live_row(session, first["environment"], baseline_account)
        now = clock.now()
        row = Rollout(release_id=release.id, baseline_release_id=baseline.release_id if baseline else None,
                      pipeline=canonical_json(pipeline), state=decision["status"], stage=first["name"], created_at=now,
                      updated_at=now, decision=canonical_json(decision))
        session.add(row)
        await session.flush()
        await add_lease(session, row.id)
        held = {(s["environment"], s["account"]) for s in stages} | {
            (s["environment"], s["baseline"]) for s in stages if s.get("baseline")}
        session.add_all(AccountClaim(environment=environment, account=account, rollout_id=row.id)
                        for environment, account in sorted(held))
        try:
            await session.flush()
        except IntegrityError:
            raise ConflictError(f"another rollout under way holds one of {', '.join(f'{e}/{a}' for e, a in sorted(held))} "
                                "(it was started just now): one active rollout per account") from None
        await audit.append(session, clock, actor=actor, kind="rollout.created", subject=f"rollout:{row.id}",
                           release=version, payload={"rollout": row.id, "pipeline": pipeline["name"],
                                                     "stages": [s["name"] for s in stages]})
        return await _record(session, row.id)


async def get_rollout(db: Database, ref: str | int) -> RolloutRecord:
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
        return await _record(session, row.id)


async def list_rollouts(db: Database, *, active_only: bool = False) -> list[RolloutRecord]:
    async with db.read() as session:
        query = select(Rollout).order_by(Rollout.id)
        if active_only:
            query = query.where(Rollout.state.not_in(TERMINAL))
        return [await _record(session, row.id) for row in (await session.execute(query)).scalars()]


async def save_decision(db: Database, clock: Clock, rollout_id: int, *, stage: str,
                        decision: Mapping[str, Any], audits: Iterable[AuditEntry] = (),
                        acks: Iterable[CommandAck] = ()) -> RolloutRecord:
    """Store the new decision state with its audit events and command acks, all or nothing. An ack is
    a compare-and-set (the command still unacknowledged): a command answered already refuses the
    decision. A finished rollout gives its accounts back."""
    async with db.write() as session:
        row = await session.get(Rollout, rollout_id)
        row.state = decision["status"]  # the column that queries filter on
        if row.state in TERMINAL:
            await session.execute(delete(AccountClaim).where(AccountClaim.rollout_id == rollout_id))
        row.stage = stage
        row.decision = canonical_json(decision)
        row.updated_at = clock.now()
        release = await session.get(Release, row.release_id)
        for event in audits:
            await audit.append(session, clock, actor=event.actor, kind=event.kind, subject=f"rollout:{rollout_id}",
                               release=release.version, payload=dict(event.payload))
        for ack in acks:
            answered = await session.execute(update(OperatorCommand).where(
                OperatorCommand.id == ack.command_id, OperatorCommand.acked_at.is_(None)).values(
                acked_at=clock.now(), outcome="accepted" if ack.accepted else "rejected", message=ack.message))
            if answered.rowcount != 1:
                raise ConflictError(f"command {ack.command_id} was answered already: rollout {rollout_id}'s "
                                    "decision that answers it again is not stored")
        await session.flush()
        return await _record(session, row.id)


# ---------------------------------------------------------------- stage runs

async def start_stage_run(db: Database, rollout_id: int, *, stage: str, environment: str, account: str,
                          capital_cap: Decimal | None, started: float, duration: float) -> int:
    """The stage's run, starting at ``started``: one row per stage run, so a placement resumed after
    a crash reuses the open row, its clock restarted (the release ran unwatched in between)."""
    async with db.write() as session:
        row = (await session.execute(select(StageRun).where(
            StageRun.rollout_id == rollout_id, StageRun.stage == stage, StageRun.finished_at.is_(None))
            .order_by(StageRun.id.desc()))).scalars().first()
        if row is None:
            row = StageRun(rollout_id=rollout_id, stage=stage, environment=environment, account=account,
                           capital_cap=capital_cap)
            session.add(row)
        row.started_at, row.ends_at = to_datetime(started), to_datetime(started + duration)
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
