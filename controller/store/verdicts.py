"""Verdict changes, stored with their evidence: what a report and an audit need, not every tick;
and a stage's verdict digests (``stage.digest`` audit events), written from them on a schedule."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, insert, select

from controller.analysis.verdict import SEVERITY_ORDER, Outcome, Verdict
from controller.canonical import canonical_json
from controller.clock import Clock, to_datetime
from controller.store import audit
from controller.store.database import Database
from controller.store.models import AuditEvent, VerdictChange
from controller.store.verdict_evidence import StoredEvidence

DIGEST = "stage.digest"
"""The audit event of one period's verdict digest."""
BREACHES_LISTED = 20
"""The breaches a digest lists one by one (all are counted)."""


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
                evidence = StoredEvidence.parse(row.evidence)
                self._last[(row.policy, row.group_key)] = (Outcome(row.verdict), evidence.group, evidence.action)
                if row.verdict == Outcome.PASS.value:  # the newest pass of a policy says whether it is pending
                    if not evidence.pending:
                        self._pending.pop(row.policy, None)
                    else:
                        self._pending[row.policy] = _Pending(row.group_key, evidence.breaching_since,
                                                             evidence.fails_at, row.evaluated_at.timestamp())

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
            # One INSERT of every row, nothing read back: a breach's verdict is on the detection's
            # critical path, and each statement is a round trip to the driver's thread (an ORM
            # add per row is an INSERT ... RETURNING and a fetch each).
            async with self.db.write() as session:
                await session.execute(insert(VerdictChange),
                                      [_row(self.rollout_id, self.stage_run_id, v) for v in changed])
        return changed


def _row(rollout_id: int, stage_run_id: int | None, verdict: Verdict) -> dict[str, Any]:
    """The `VerdictChange` row of ``verdict``, as the columns' values."""
    evidence = StoredEvidence(verdict.group, verdict.condition, verdict.reason, verdict.action,
                              verdict.breaching_since, verdict.fails_at).to_json(verdict.evidence)
    return {"rollout_id": rollout_id, "stage_run_id": stage_run_id, "policy": verdict.policy,
            "group_key": verdict.group_key, "verdict": verdict.outcome.value, "value": verdict.value,
            "threshold": None if verdict.threshold is None else f"{verdict.threshold:g}",
            "window_seconds": verdict.window, "samples": verdict.samples,
            "evaluated_at": to_datetime(verdict.at), "evidence": canonical_json(evidence)}


async def digests_written(db: Database, rollout_id: int, stage: str) -> int:
    """How many digests of ``stage`` of the rollout the audit chain holds."""
    async with db.read() as session:
        return len(await _digest_numbers(session, rollout_id, stage))


async def _digest_numbers(session, rollout_id: int, stage: str) -> set[int]:
    payloads = (await session.execute(select(AuditEvent.payload).where(
        AuditEvent.kind == DIGEST, AuditEvent.subject == f"rollout:{rollout_id}"))).scalars()
    return {int(p["number"]) for p in map(json.loads, payloads) if p.get("stage") == stage}


async def write_digest(db: Database, clock: Clock, *, rollout_id: int, release: str, stage: str,
                       stage_run_id: int | None, number: int, start: float, end: float,
                       policies: Sequence[str]) -> dict[str, Any] | None:
    """Digest the stage run's verdicts over [start, end) (Clock seconds) and audit it as ``stage.digest``;
    returns its payload, or None when digest ``number`` of the stage was written already.

    Verdicts are stored when they change, so the counts are of changes into each outcome; each policy
    also says the outcome it had when the period began. A policy of ``policies`` with no verdict at all
    by the period's end is ``nodata`` (fail closed): a digest never reads silence as a pass."""
    since, until = to_datetime(start), to_datetime(end)
    async with db.write() as session:
        if number in await _digest_numbers(session, rollout_id, stage):
            return None
        rows = (await session.execute(select(VerdictChange).where(
            VerdictChange.rollout_id == rollout_id, VerdictChange.stage_run_id == stage_run_id,
            VerdictChange.evaluated_at < until).order_by(VerdictChange.id))).scalars().all()
        digest = {name: _policy_digest([r for r in rows if r.policy == name], since) for name in sorted(
            {*policies, *(r.policy for r in rows)})}
        payload = {"stage": stage, "number": number, "start": start, "end": end,
                   "from": since.isoformat(), "until": until.isoformat(), "stage_run": stage_run_id,
                   "breaches": sum(p["breaches"] for p in digest.values()),
                   "worst": max((p["worst"]["outcome"] for p in digest.values()),
                                key=lambda o: SEVERITY_ORDER[Outcome(o)], default=Outcome.NODATA.value),
                   "policies": digest}
        await audit.append(session, clock, actor="controller", kind=DIGEST, subject=f"rollout:{rollout_id}",
                           release=release, payload=payload)
    return payload


def _policy_digest(rows: Sequence[VerdictChange], since) -> dict[str, Any]:
    """One policy's digest from its verdict changes up to the period's end (those before ``since`` give
    the outcome each group had when the period began)."""
    held: dict[str, VerdictChange] = {}
    counts = {outcome.value: 0 for outcome in Outcome}
    breaches: list[dict[str, Any]] = []
    worst: VerdictChange | None = None
    for row in rows:
        if row.evaluated_at < since:
            held[row.group_key] = row
            continue
        counts[row.verdict] += 1
        if row.verdict == Outcome.FAIL.value:
            breaches.append({"at": row.evaluated_at.isoformat(), "group": row.group_key, "value": row.value,
                             "threshold": row.threshold})
        if worst is None or _rank(row) >= _rank(worst):
            worst = row
    for row in held.values():  # what was held over the period's start counts as seen in it
        if worst is None or _rank(row) > _rank(worst):
            worst = row
    return {"outcomes": counts, "at_start": {group: row.verdict for group, row in sorted(held.items())},
            "breaches": len(breaches), "breaches_listed": breaches[:BREACHES_LISTED],
            "worst": {"outcome": Outcome.NODATA.value, "value": None, "threshold": None, "at": None} if worst is None
            else {"outcome": worst.verdict, "value": worst.value, "threshold": worst.threshold, "group": worst.group_key,
                  "at": worst.evaluated_at.isoformat()}}


def _rank(row: VerdictChange) -> int:
    return SEVERITY_ORDER[Outcome(row.verdict)]
