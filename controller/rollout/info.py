"""A rollout as the engine sees it: its pipeline and decision state, read from the store's JSON.

The store keeps both documents as JSON (`controller.store.rollouts`); these functions hand it
the engine's types serialized and give back a `RolloutInfo`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from controller.clock import Clock
from controller.rollout.decide import Ack, Audit, State, Status
from controller.rollout.pipeline import Pipeline, pipeline_from_json
from controller.store import rollouts
from controller.store.database import Database


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

    @classmethod
    def from_record(cls, record: rollouts.RolloutRecord) -> RolloutInfo:
        return cls(record.id, record.release, record.release_id, record.baseline,
                   pipeline_from_json(record.pipeline, f"rollout {record.id}"),
                   State.from_json(json.loads(record.decision)), record.created_at, record.updated_at)

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


async def create_rollout(db: Database, clock: Clock, *, version: str, pipeline: Pipeline, actor: str) -> RolloutInfo:
    """A pending rollout of ``version``; refused while another rollout is under way."""
    return RolloutInfo.from_record(await rollouts.create_rollout(
        db, clock, version=version, pipeline=pipeline.model_dump(mode="json"), state=Status.PENDING.value,
        decision=State().to_json(), actor=actor))


async def get_rollout(db: Database, ref: str | int) -> RolloutInfo:
    """A rollout by id, or a release version meaning that release's latest rollout."""
    return RolloutInfo.from_record(await rollouts.get_rollout(db, ref))


async def list_rollouts(db: Database, *, active_only: bool = False) -> list[RolloutInfo]:
    return [RolloutInfo.from_record(r) for r in await rollouts.list_rollouts(db, active_only=active_only)]


async def save_decision(db: Database, clock: Clock, info: RolloutInfo, state: State, *,
                        audits: Iterable[Audit] = (), acks: Iterable[Ack] = ()) -> RolloutInfo:
    """Store the new state with its audit events and command acks, all or nothing."""
    return RolloutInfo.from_record(await rollouts.save_decision(
        db, clock, info.id, state=state.status.value, stage=info.pipeline.stages[state.stage].name,
        decision=state.to_json(), audits=audits, acks=acks))


async def start_stage_run(db: Database, info: RolloutInfo, stage_index: int, started: float) -> int:
    """A stage run of the rollout's stage ``stage_index`` starting at ``started`` (Clock seconds)."""
    stage = info.pipeline.stages[stage_index]
    return await rollouts.start_stage_run(db, info.id, stage=stage.name, environment=stage.environment,
                                          account=stage.account, capital_cap=stage.capital_cap, started=started,
                                          duration=stage.duration)
