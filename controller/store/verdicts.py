"""Verdict changes, stored with their evidence: what a report and an audit need, not every tick."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import func, select

from controller.analysis.verdict import Outcome, Verdict
from controller.canonical import canonical_json
from controller.clock import to_datetime
from controller.store.database import Database
from controller.store.models import VerdictChange


PENDING_CALM = 60.0
"""Clock seconds a policy stored as pending must pass plainly before that return is stored: a
policy near its threshold turns pending and back every few scrapes, and each turn is not a row."""


@dataclass(frozen=True)
class _Pending:
    """The pending verdict last stored for a policy: which group, since when, stored when."""

    group_key: str
    since: float | None
    fails_at: float | None
    stored_at: float


class VerdictLog:
    """Keeps the last stored verdict per (policy, group) of one rollout; stores only changes.

    Keyed on the group, not the policy: a policy judged per symbol gives each symbol's verdict in
    turn, and keyed on the policy alone every alternation would be a "change" (thousands of rows
    an hour for a 20-symbol policy).

    A pass turning pending (a breach in the making) is stored too, so that the status shows it,
    but damped: per policy (its verdict speaks for its worst group, and a pending group comes
    before a plain pass), entering pending is stored at once; a new breach while one is stored
    only once the stored one's ``for`` has run out and `PENDING_CALM` has passed since it (the
    stored countdown would be wrong); the return to a plain pass once it has held `PENDING_CALM`.
    A flapping policy therefore stays shown as pending, which it is, for a row or two."""

    def __init__(self, db: Database, rollout_id: int, stage_run_id: int | None = None) -> None:
        self.db = db
        self.rollout_id = rollout_id
        self.stage_run_id = stage_run_id
        self._last: dict[tuple[str, str], tuple] = {}
        self._pending: dict[str, _Pending] = {}  # per policy: the pending verdict stored last, until a plain pass is
        self._calm_since: dict[str, float] = {}  # per policy stored as pending: since when it has passed plainly

    async def resume(self) -> None:
        """Rebuild what was last stored (after a restart) so that an unchanged verdict stays unstored."""
        async with self.db.read() as session:
            newest = (select(func.max(VerdictChange.id).label("id"))
                      .where(VerdictChange.rollout_id == self.rollout_id)
                      .group_by(VerdictChange.policy, VerdictChange.group_key).subquery())
            rows = (await session.execute(select(VerdictChange).join(newest, VerdictChange.id == newest.c.id)
                                          .order_by(VerdictChange.id))).scalars()
            for row in rows:
                evidence = json.loads(row.evidence)
                self._last[(row.policy, row.group_key)] = (
                    Outcome(row.verdict), tuple(map(tuple, evidence.get("group", []))), evidence.get("action"))
                if row.verdict == Outcome.PASS.value:  # the newest pass of a policy says whether it is pending
                    since = evidence.get("breaching_since")
                    if since is None:
                        self._pending.pop(row.policy, None)
                    else:
                        self._pending[row.policy] = _Pending(row.group_key, since, evidence.get("fails_at"),
                                                             row.evaluated_at.timestamp())

    def changes(self, verdicts: Iterable[Verdict]) -> list[Verdict]:
        changed = []
        for verdict in verdicts:
            where = (verdict.policy, verdict.group_key)
            if self._last.get(where) != verdict.key or self._turned(verdict):
                self._last[where] = verdict.key
                changed.append(verdict)
                if verdict.pending:
                    self._pending[verdict.policy] = _Pending(verdict.group_key, verdict.breaching_since,
                                                             verdict.fails_at, verdict.at)
                    self._calm_since.pop(verdict.policy, None)
                elif verdict.outcome is Outcome.PASS:
                    self._pending.pop(verdict.policy, None)
                    self._calm_since.pop(verdict.policy, None)
        return changed

    def _turned(self, verdict: Verdict) -> bool:
        """Whether a pass turned pending, or back, in a way worth a row though its outcome is the same."""
        stored = self._pending.get(verdict.policy)
        if verdict.pending:
            self._calm_since.pop(verdict.policy, None)
            if stored is None:
                return True
            if (stored.group_key, stored.since) == (verdict.group_key, verdict.breaching_since):
                return False
            ran_out = stored.fails_at is None or verdict.at >= stored.fails_at
            return ran_out and verdict.at - stored.stored_at >= PENDING_CALM
        if verdict.outcome is not Outcome.PASS:
            self._calm_since.pop(verdict.policy, None)  # a calm is a run of plain passes
            return False
        if stored is None:
            return False
        calm = self._calm_since.setdefault(verdict.policy, verdict.at)
        return verdict.at - calm >= PENDING_CALM

    async def record(self, verdicts: Iterable[Verdict]) -> list[Verdict]:
        """Store the verdicts that differ from the last stored one of their policy's group; returns them."""
        changed = self.changes(verdicts)
        if changed:
            async with self.db.write() as session:
                session.add_all(_row(self.rollout_id, self.stage_run_id, v) for v in changed)
        return changed


def _row(rollout_id: int, stage_run_id: int | None, verdict: Verdict) -> VerdictChange:
    evidence = {"group": [list(pair) for pair in verdict.group], "reason": verdict.reason, "action": verdict.action,
                "condition": verdict.condition, "breaching_since": verdict.breaching_since, "fails_at": verdict.fails_at, **verdict.evidence}
    return VerdictChange(rollout_id=rollout_id, stage_run_id=stage_run_id, policy=verdict.policy,
                         group_key=verdict.group_key, verdict=verdict.outcome.value, value=verdict.value,
                         threshold=None if verdict.threshold is None else f"{verdict.threshold:g}",
                         window_seconds=verdict.window, samples=verdict.samples,
                         evaluated_at=to_datetime(verdict.at), evidence=canonical_json(evidence))
