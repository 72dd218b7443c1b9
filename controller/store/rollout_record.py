"""A rollout as the store keeps it: the one reading of its row that every view of a rollout builds on.

The engine's `rollout.info.RolloutInfo`, `canaryctl status`'s `store.summary.Summary` and the
report's `report.evidence.Evidence` are all a `RolloutRecord` with more: its row is selected by
`SELECT_ROLLOUT` and its JSON documents (pipeline, decision state) parsed by `from_row`, here and
nowhere else. This module imports no SQLAlchemy, so that `canaryctl status` can use it and still
start in a blink; the store's async writers run the same query through their session.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any, Self

from controller.errors import StoreError
from controller.store.readonly import when

SELECT_ROLLOUT = (
    "SELECT r.id, rel.version AS release, r.release_id, base.version AS baseline, r.state, r.pipeline, r.decision, "
    "r.created_at, r.updated_at FROM rollouts r JOIN releases rel ON rel.id = r.release_id "
    "LEFT JOIN releases base ON base.id = r.baseline_release_id")
"""The columns `RolloutRecord.from_row` reads; add ``WHERE r.id = :id`` (or another condition)."""


@dataclass(frozen=True)
class RolloutRecord:
    """A rollout's identity, releases and times, with its pipeline and decision state as the
    canonical JSON documents the engine wrote (read field by field by views that cannot load the
    engine's types)."""

    id: int
    release: str
    release_id: int
    baseline: str | None
    """The release this rollout replaced: live where the pipeline keeps its baseline when it was created."""
    pipeline_document: Mapping[str, Any]
    decision_document: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> RolloutRecord:
        """A row of `SELECT_ROLLOUT`; a row whose documents cannot be read is damaged: a `StoreError`."""
        rollout_id = row["id"]
        pipeline = _document(row["pipeline"], rollout_id, "pipeline")
        decision = _document(row["decision"], rollout_id, "decision state")
        stages = pipeline.get("stages")
        if not isinstance(pipeline.get("name"), str) or not isinstance(stages, list) or not stages:
            raise StoreError(f"rollout {rollout_id}: its stored pipeline has no name or no stages (a damaged row)")
        stage = decision.get("stage", 0)
        if not isinstance(stage, int) or not 0 <= stage < len(stages):
            raise StoreError(f"rollout {rollout_id}: its decision state names stage {stage!r} of a pipeline of "
                             f"{len(stages)} stages (a damaged row)")
        if decision.get("status") != row["state"]:
            # Both are written in one transaction from one state: a difference is an edited row.
            raise StoreError(f"rollout {rollout_id}: its state column says {row['state']!r} and its decision state "
                             f"{decision.get('status')!r} (a damaged row)")
        return RolloutRecord(rollout_id, row["release"], row["release_id"], row["baseline"], pipeline, decision,
                             when(row["created_at"]), when(row["updated_at"]))

    @classmethod
    def of(cls, record: RolloutRecord, **more: Any) -> Self:
        """``record`` as this view of it, with the fields the view adds."""
        return cls(**{f.name: getattr(record, f.name) for f in fields(RolloutRecord)}, **more)

    @property
    def status(self) -> str:
        """A `decide.Status` value."""
        return self.decision_document["status"]

    @property
    def reason(self) -> str | None:
        """Why the rollout is where it is (a breach, an operator's reason), when the engine said."""
        return self.decision_document.get("reason")

    @property
    def pipeline_name(self) -> str:
        return self.pipeline_document["name"]

    @property
    def stage_index(self) -> int:
        return self.decision_document.get("stage", 0)

    @property
    def stage_document(self) -> Mapping[str, Any]:
        """The current stage of the pipeline document."""
        return self.pipeline_document["stages"][self.stage_index]

    @property
    def stage_name(self) -> str:
        return self.stage_document["name"]


def _document(text: str, rollout_id: int, what: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except (TypeError, ValueError):  # every rollout's documents are stored as canonical JSON: this row is damaged
        raise StoreError(f"rollout {rollout_id}: its stored {what} is not JSON (a damaged row)") from None
    if not isinstance(document, dict):
        raise StoreError(f"rollout {rollout_id}: its stored {what} is not a JSON object (a damaged row)")
    return document
