"""Verdict changes, stored with their evidence: what a report and an audit need, not every tick."""

from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy import func, select

from controller.analysis.verdict import Outcome, Verdict
from controller.canonical import canonical_json
from controller.clock import to_datetime
from controller.store.database import Database
from controller.store.models import VerdictChange


class VerdictLog:
    """Keeps the last stored verdict per (policy, group) of one rollout; stores only changes.

    Keyed on the group, not the policy: a policy judged per symbol gives each symbol's verdict in
    turn, and keyed on the policy alone every alternation would be a "change" (thousands of rows
    an hour for a 20-symbol policy)."""

    def __init__(self, db: Database, rollout_id: int, stage_run_id: int | None = None) -> None:
        self.db = db
        self.rollout_id = rollout_id
        self.stage_run_id = stage_run_id
        self._last: dict[tuple[str, str], tuple] = {}

    async def resume(self) -> None:
        """Rebuild what was last stored (after a restart) so that an unchanged verdict stays unstored."""
        async with self.db.read() as session:
            newest = (select(func.max(VerdictChange.id).label("id"))
                      .where(VerdictChange.rollout_id == self.rollout_id)
                      .group_by(VerdictChange.policy, VerdictChange.group_key).subquery())
            rows = (await session.execute(select(VerdictChange).join(newest, VerdictChange.id == newest.c.id))).scalars()
            for row in rows:
                evidence = json.loads(row.evidence)
                self._last[(row.policy, row.group_key)] = (
                    Outcome(row.verdict), tuple(map(tuple, evidence.get("group", []))), evidence.get("action"))

    def changes(self, verdicts: Iterable[Verdict]) -> list[Verdict]:
        changed = []
        for verdict in verdicts:
            where = (verdict.policy, verdict.group_key)
            if self._last.get(where) != verdict.key:
                self._last[where] = verdict.key
                changed.append(verdict)
        return changed

    async def record(self, verdicts: Iterable[Verdict]) -> list[Verdict]:
        """Store the verdicts that differ from the last stored one of their policy's group; returns them."""
        changed = self.changes(verdicts)
        if changed:
            async with self.db.write() as session:
                session.add_all(_row(self.rollout_id, self.stage_run_id, v) for v in changed)
        return changed


def _row(rollout_id: int, stage_run_id: int | None, verdict: Verdict) -> VerdictChange:
    evidence = {"group": [list(pair) for pair in verdict.group], "reason": verdict.reason, "action": verdict.action,
                "condition": verdict.condition, "breaching_since": verdict.breaching_since, **verdict.evidence}
    return VerdictChange(rollout_id=rollout_id, stage_run_id=stage_run_id, policy=verdict.policy,
                         group_key=verdict.group_key, verdict=verdict.outcome.value, value=verdict.value,
                         threshold=None if verdict.threshold is None else f"{verdict.threshold:g}",
                         window_seconds=verdict.window, samples=verdict.samples,
                         evaluated_at=to_datetime(verdict.at), evidence=canonical_json(evidence))
