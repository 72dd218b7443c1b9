"""A rollout as the engine sees it: its pipeline and decision state as the engine's types.

The store keeps both documents as JSON and reads its row into a `RolloutRecord`
(`controller.store.rollout_record`); a `RolloutInfo` is that record with the documents read
into a `Pipeline` and a `State`, once, when first asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from controller.clock import Clock
from controller.rollout.decide import Ack, Audit, State, Status
from controller.rollout.pipeline import Pipeline, Stage, pipeline_from_document
from controller.store import rollouts
from controller.store.database import Database
from controller.store.rollout_record import RolloutRecord


@dataclass(frozen=True)
class RolloutInfo(RolloutRecord):
    # Frozen, yet cached_property may fill it: it writes to the instance's __dict__, not through setattr.
    @cached_property
    def pipeline(self) -> Pipeline:
        return pipeline_from_document(self.pipeline_document, f"rollout {self.id}")

    @cached_property
    def state(self) -> State:
        return State.from_json(self.decision_document)

    @property
    def status(self) -> Status:
        return self.state.status

    @property
    def stage(self) -> Stage:
        return self.pipeline.stages[self.state.stage]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "release": self.release, "baseline": self.baseline, "state": self.status.value,
                "stage": self.stage.name, "pipeline": self.pipeline.name, "decision": self.state.to_json(),
                "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat()}


async def create_rollout(db: Database, clock: Clock, *, version: str, pipeline: Pipeline, actor: str) -> RolloutInfo:
    """A pending rollout of ``version``; refused while another rollout is under way."""
    return RolloutInfo.of(await rollouts.create_rollout(
        db, clock, version=version, pipeline=pipeline.model_dump(mode="json"), decision=State().to_json(), actor=actor))


async def get_rollout(db: Database, ref: str | int) -> RolloutInfo:
    """A rollout by id, or a release version meaning that release's latest rollout."""
    return RolloutInfo.of(await rollouts.get_rollout(db, ref))


async def list_rollouts(db: Database, *, active_only: bool = False) -> list[RolloutInfo]:
    return [RolloutInfo.of(r) for r in await rollouts.list_rollouts(db, active_only=active_only)]


async def save_decision(db: Database, clock: Clock, info: RolloutInfo, state: State, *,
                        audits: Iterable[Audit] = (), acks: Iterable[Ack] = ()) -> RolloutInfo:
    """Store the new state with its audit events and command acks, all or nothing."""
    return RolloutInfo.of(await rollouts.save_decision(
        db, clock, info.id, stage=info.pipeline.stages[state.stage].name,
        decision=state.to_json(), audits=audits, acks=acks))


async def start_stage_run(db: Database, info: RolloutInfo, stage_index: int, started: float) -> int:
    """A stage run of the rollout's stage ``stage_index`` starting at ``started`` (Clock seconds)."""
    stage = info.pipeline.stages[stage_index]
    return await rollouts.start_stage_run(db, info.id, stage=stage.name, environment=stage.environment,
                                          account=stage.account, capital_cap=stage.capital_cap, started=started,
                                          duration=stage.duration)
