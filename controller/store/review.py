"""The weekly review of checklist stage E (E3), read from the store: what was recorded in a period.

Per rollout active in the period: its release, the stages it reached and how it ended (or that it
is under way). The exchange-side leverage policies' verdict changes and worst values, and the
bucket-usage policies' worst values. The period's breaches (verdict changes that failed, or that
asked for an action on missing data) and rollbacks (audit ``rollback.*`` events). What the
controller itself raised as alerts (policies with ``on_breach: alert``, waiting deadlines passed):
Prometheus alert firings are not recorded by the controller (Alertmanager keeps them). And the
nightly harness runs (audit ``harness.run``): pass or fail per run, the faults each caught.

Read with plain SQL through a `store.readonly.Reader` in one snapshot, like `canaryctl status`,
so the command imports no SQLAlchemy on SQLite. A period is ``[since, until)``.

Limits of the evidence: verdicts are stored when they change, not at every evaluation, so a
"worst value" is the worst value of a stored change; which policy watches leverage or bucket
usage is read from the policy files as they are now (the store keeps no copy of them), and a
policy they no longer define is listed as unclassified, never dropped silently. Harness runs are
rollouts of their own (pipeline "harness"): they are reported as harness runs, not as rollouts,
and their verdicts (injected faults, on purpose) count as neither breaches nor leverage figures.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from controller.store import TERMINAL
from controller.store.audit_row import AuditRow
from controller.store.readonly import Reader, SqliteReader, when
from controller.store.rollout_record import SELECT_ROLLOUT, RolloutRecord
from controller.store.verdict_evidence import StoredEvidence

JSON_VERSION = 1
HARNESS_PIPELINE = "harness"
"""The pipeline (and environment) `controller.harness.record` stores a harness run under."""
HARNESS_EVENT = "harness.run"
ALERTS_NOT_RECORDED = "not recorded by the controller: see Alertmanager"
LEVERAGE = "leverage"
BUCKET_USAGE = "bucket_usage"


@dataclass(frozen=True)
class PolicyKind:
    """What a policy watches, as its file says: its source and metric."""

    source: str
    metric: str

    @property
    def watches(self) -> str | None:
        """``leverage`` for an exchange-side leverage policy (the exchange's own record judges the
        leverage), ``bucket_usage`` for a bucket-usage policy (bot or exchange), else None."""
        if self.source == "exchange" and "leverage" in self.metric:
            return LEVERAGE
        if "bucket_usage" in self.metric:
            return BUCKET_USAGE
        return None


# ---------------------------------------------------------------- what the review holds

@dataclass(frozen=True)
class StageLine:
    name: str
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "started_at": _iso(self.started_at), "finished_at": _iso(self.finished_at),
                "outcome": self.outcome}


@dataclass(frozen=True)
class RolloutLine:
    """A rollout active in the period: created before its end, not finished before its start."""

    id: int
    release: str
    pipeline: str
    state: str
    """Its state now (`decide.Status`); ``finished`` says whether that is an end."""
    reason: str | None
    created_at: datetime
    updated_at: datetime
    stages: tuple[StageLine, ...]

    @property
    def finished(self) -> bool:
        return self.state in TERMINAL

    @property
    def outcome(self) -> str:
        return self.state if self.finished else f"under way ({self.state})"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "release": self.release, "pipeline": self.pipeline, "state": self.state,
                "finished": self.finished, "outcome": self.outcome, "reason": self.reason,
                "created_at": _iso(self.created_at), "finished_at": _iso(self.updated_at) if self.finished else None,
                "stages": [s.to_json() for s in self.stages]}


@dataclass(frozen=True)
class Change:
    """One stored verdict change of a policy in the period."""

    rollout: int
    release: str
    stage: str | None
    policy: str
    group: dict[str, str]
    verdict: str
    value: float | None
    threshold: str | None
    condition: str
    action: str | None
    reason: str
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"rollout": self.rollout, "release": self.release, "stage": self.stage, "policy": self.policy,
                "group": self.group, "verdict": self.verdict, "value": self.value, "threshold": self.threshold,
                "condition": self.condition, "action": self.action, "reason": self.reason, "at": _iso(self.at)}


@dataclass(frozen=True)
class PolicyFigures:
    """A leverage or bucket-usage policy over the period: its verdict changes and its worst value."""

    policy: str
    source: str
    metric: str
    changes: tuple[Change, ...]

    @property
    def outcomes(self) -> dict[str, int]:
        counted: dict[str, int] = {}
        for change in self.changes:
            counted[change.verdict] = counted.get(change.verdict, 0) + 1
        return dict(sorted(counted.items()))

    @property
    def worst(self) -> Change | None:
        """The change with the worst value: the highest, or the lowest for a policy that wants its
        value above a threshold (``>``, ``>=``). None when no change carried a value."""
        valued = [c for c in self.changes if c.value is not None]
        if not valued:
            return None
        lowest_is_worst = valued[-1].condition.lstrip().startswith(">")
        return (min if lowest_is_worst else max)(valued, key=lambda c: c.value)

    def to_json(self) -> dict[str, Any]:
        worst = self.worst
        return {"policy": self.policy, "source": self.source, "metric": self.metric, "outcomes": self.outcomes,
                "worst": None if worst is None else {
                    "value": worst.value, "threshold": worst.threshold, "condition": worst.condition,
                    "verdict": worst.verdict, "group": worst.group, "rollout": worst.rollout, "at": _iso(worst.at)},
                "changes": [c.to_json() for c in self.changes]}


@dataclass(frozen=True)
class RollbackLine:
    """A rollout's rollback as its audit events in the period tell it."""

    rollout: int | None
    subject: str
    release: str | None
    planned_at: datetime | None
    """None: planned before the period (its steps ran in it)."""
    trigger: str | None
    reason: str | None
    policy: str | None
    steps_done: int
    steps_failed: int
    events: int

    def to_json(self) -> dict[str, Any]:
        return {"rollout": self.rollout, "release": self.release, "planned_at": _iso(self.planned_at),
                "trigger": self.trigger, "reason": self.reason, "policy": self.policy,
                "steps_done": self.steps_done, "steps_failed": self.steps_failed, "events": self.events}


@dataclass(frozen=True)
class ControllerAlert:
    """An alert the controller itself raised: a policy whose breach only alerts, a wait past its deadline."""

    rollout: int | None
    release: str | None
    what: str
    reason: str
    at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"rollout": self.rollout, "release": self.release, "what": self.what, "reason": self.reason,
                "at": _iso(self.at)}


@dataclass(frozen=True)
class FaultLine:
    spec: str
    caught_by: str | None
    ok: bool

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.spec, "caught_by": self.caught_by, "ok": self.ok}


@dataclass(frozen=True)
class HarnessLine:
    """A harness run recorded in the period (`controller.harness.record`)."""

    rollout: int | None
    at: datetime
    release: str | None
    stage: str | None
    ok: bool
    duration_s: float | None
    simulated_s: float | None
    breaches: int
    unexpected_breaches: int
    faults: tuple[FaultLine, ...]
    errors: tuple[str, ...]

    @property
    def caught(self) -> tuple[FaultLine, ...]:
        return tuple(f for f in self.faults if f.caught_by)

    def to_json(self) -> dict[str, Any]:
        return {"rollout": self.rollout, "at": _iso(self.at), "release": self.release, "stage": self.stage,
                "ok": self.ok, "result": "pass" if self.ok else "fail", "duration_s": self.duration_s,
                "simulated_s": self.simulated_s, "breaches": self.breaches,
                "unexpected_breaches": self.unexpected_breaches, "faults": [f.to_json() for f in self.faults],
                "faults_caught": len(self.caught), "errors": list(self.errors)}


@dataclass(frozen=True)
class Review:
    since: datetime
    until: datetime
    generated_at: datetime
    policies_folder: str
    rollouts: tuple[RolloutLine, ...]
    leverage: tuple[PolicyFigures, ...]
    bucket_usage: tuple[PolicyFigures, ...]
    unclassified: tuple[str, ...]
    """Policies with verdict changes in the period that the policy files no longer define."""
    breaches: tuple[Change, ...]
    rollbacks: tuple[RollbackLine, ...]
    controller_alerts: tuple[ControllerAlert, ...]
    harness: tuple[HarnessLine, ...]
    audit: tuple[AuditRow, ...] = field(default=(), repr=False)
    """The period's audit events, read only for an archive."""

    @property
    def empty(self) -> bool:
        """Nothing was recorded in the period: no rollout active, no verdict, rollback or harness run."""
        return not (self.rollouts or self.leverage or self.bucket_usage or self.unclassified or self.breaches
                    or self.rollbacks or self.controller_alerts or self.harness)

    def to_json(self) -> dict[str, Any]:
        """`canaryctl review --json` (schema in `controller/cli/review.py`)."""
        return {
            "version": JSON_VERSION, "kind": "weekly-review",
            "period": {"since": _iso(self.since), "until": _iso(self.until),
                       "seconds": (self.until - self.since).total_seconds()},
            "generated_at": _iso(self.generated_at), "empty": self.empty,
            "rollouts": [r.to_json() for r in self.rollouts],
            "leverage": [p.to_json() for p in self.leverage],
            "bucket_usage": [p.to_json() for p in self.bucket_usage],
            "policies": {"folder": self.policies_folder, "unclassified": list(self.unclassified)},
            "breaches": [b.to_json() for b in self.breaches],
            "rollbacks": [r.to_json() for r in self.rollbacks],
            "alerts": {"recorded": False, "note": ALERTS_NOT_RECORDED,
                       "controller_alerts": [a.to_json() for a in self.controller_alerts]},
            "harness": {"runs": [h.to_json() for h in self.harness], "passed": sum(h.ok for h in self.harness),
                        "failed": sum(not h.ok for h in self.harness)},
        }


# ---------------------------------------------------------------- reading it

def gather(reader: Reader, since: datetime, until: datetime, *, policies: Mapping[str, PolicyKind],
           policies_folder: str, now: datetime, with_audit: bool = False) -> Review:
    """The review of ``[since, until)``, in one consistent read of the store. ``policies``: what each
    policy of the policy files watches (name -> kind)."""
    bounds = {"since": _stored(reader, since), "until": _stored(reader, until)}
    with reader.snapshot():
        records = _rollouts(reader, bounds)
        harness_ids = {r.id for r in records if _is_harness(r)}
        all_harness = harness_ids | _harness_rollouts(reader)
        changes = [c for c in _changes(reader, bounds) if c.rollout not in all_harness]
        events = reader.rows("SELECT seq, ts, actor, kind, subject, release, symbol, payload, prev_hash, hash "
                             "FROM audit_events WHERE ts >= :since AND ts < :until ORDER BY seq", **bounds)
        stages = _stages(reader, [r.id for r in records if r.id not in harness_ids])
    rollouts = tuple(RolloutLine(r.id, r.release, r.pipeline_name, r.status, r.reason, r.created_at, r.updated_at,
                                 stages.get(r.id, ())) for r in records if r.id not in harness_ids)
    figures: dict[str, list[Change]] = {}
    unclassified: set[str] = set()
    for change in changes:
        kind = policies.get(change.policy)
        if kind is None:
            unclassified.add(change.policy)
        elif kind.watches is not None:
            figures.setdefault(change.policy, []).append(change)

    def of(watching: str) -> tuple[PolicyFigures, ...]:
        return tuple(PolicyFigures(name, policies[name].source, policies[name].metric, tuple(found))
                     for name, found in sorted(figures.items()) if policies[name].watches == watching)

    breaches = tuple(c for c in changes if c.verdict == "fail" or c.action is not None)
    return Review(
        since=since, until=until, generated_at=now, policies_folder=policies_folder, rollouts=rollouts,
        leverage=of(LEVERAGE), bucket_usage=of(BUCKET_USAGE), unclassified=tuple(sorted(unclassified)),
        breaches=breaches, rollbacks=_rollbacks(events),
        controller_alerts=_alerts(breaches, events), harness=_harness(events),
        audit=tuple(AuditRow.from_row(e) for e in events) if with_audit else ())


def _stored(reader: Reader, instant: datetime) -> Any:
    """An instant as a query parameter compared with stored times: SQLite keeps them as naive UTC
    text in SQLAlchemy's format (which sorts as the time does), PostgreSQL as timestamptz."""
    instant = instant.astimezone(UTC)
    if isinstance(reader, SqliteReader):
        return instant.strftime("%Y-%m-%d %H:%M:%S.%f")
    return instant


def _is_harness(record: RolloutRecord) -> bool:
    return record.pipeline_name == HARNESS_PIPELINE and all(
        stage.get("environment") == HARNESS_PIPELINE for stage in record.pipeline_document["stages"])


def _harness_rollouts(reader: Reader) -> set[int]:
    """Every rollout a harness run was stored as (its verdicts may fall in a period the rollout's own
    times do not)."""
    rows = reader.rows("SELECT subject FROM audit_events WHERE kind = :kind", kind=HARNESS_EVENT)
    return {n for n in (_rollout_of(r["subject"]) for r in rows) if n is not None}


def _rollouts(reader: Reader, bounds: dict[str, Any]) -> list[RolloutRecord]:
    done = {f"done{n}": state for n, state in enumerate(sorted(TERMINAL))}
    rows = reader.rows(f"{SELECT_ROLLOUT} WHERE r.created_at < :until AND (r.updated_at >= :since OR r.state NOT IN "
                       f"({', '.join(':' + k for k in done)})) ORDER BY r.id", **bounds, **done)
    return [RolloutRecord.from_row(row) for row in rows]


def _stages(reader: Reader, ids: list[int]) -> dict[int, tuple[StageLine, ...]]:
    found: dict[int, list[StageLine]] = {}
    for rollout_id in ids:
        for row in reader.rows("SELECT stage, started_at, finished_at, outcome FROM stage_runs WHERE rollout_id = :id "
                               "ORDER BY id", id=rollout_id):
            found.setdefault(rollout_id, []).append(StageLine(row["stage"], when(row["started_at"]),
                                                              when(row["finished_at"]), row["outcome"]))
    return {k: tuple(v) for k, v in found.items()}


def _changes(reader: Reader, bounds: dict[str, Any]) -> list[Change]:
    rows = reader.rows(
        "SELECT v.rollout_id, rel.version AS release, s.stage, v.policy, v.verdict, v.value, v.threshold, "
        "v.evaluated_at, v.evidence FROM verdicts v JOIN rollouts r ON r.id = v.rollout_id "
        "JOIN releases rel ON rel.id = r.release_id LEFT JOIN stage_runs s ON s.id = v.stage_run_id "
        "WHERE v.evaluated_at >= :since AND v.evaluated_at < :until ORDER BY v.evaluated_at, v.id", **bounds)
    out = []
    for row in rows:
        evidence = StoredEvidence.parse(row["evidence"])
        out.append(Change(row["rollout_id"], row["release"], row["stage"], row["policy"], evidence.labels,
                          row["verdict"], row["value"], row["threshold"], evidence.condition or "", evidence.action,
                          evidence.reason, when(row["evaluated_at"])))
    return out


def _payload(event: Mapping[str, Any]) -> dict[str, Any]:
    try:
        found = json.loads(event["payload"] or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def _rollout_of(subject: str) -> int | None:
    prefix, _, number = subject.partition(":")
    return int(number) if prefix == "rollout" and number.isdigit() else None


def _rollbacks(events: Iterable[Mapping[str, Any]]) -> tuple[RollbackLine, ...]:
    """The ``rollback.*`` events, one line per rollback plan (a plan made before the period whose steps
    ran in it: a line without ``planned_at``)."""
    lines: list[dict[str, Any]] = []
    current: dict[str, dict[str, Any]] = {}
    for event in events:
        if not event["kind"].startswith("rollback."):
            continue
        subject, payload = event["subject"], _payload(event)
        line = current.get(subject)
        if event["kind"] == "rollback.planned" or line is None:
            planned = event["kind"] == "rollback.planned"
            line = {"rollout": _rollout_of(subject), "subject": subject, "release": event["release"],
                    "planned_at": when(event["ts"]) if planned else None,
                    "trigger": payload.get("trigger") if planned else None,
                    "reason": payload.get("reason") if planned else None,
                    "policy": payload.get("policy") if planned else None,
                    "steps_done": 0, "steps_failed": 0, "events": 0}
            current[subject] = line
            lines.append(line)
        line["events"] += 1
        if event["kind"] == "rollback.step.done":
            line["steps_done"] += 1
        elif event["kind"] == "rollback.step.failed":
            line["steps_failed"] += 1
    return tuple(RollbackLine(**line) for line in lines)


def _alerts(breaches: Iterable[Change], events: Iterable[Mapping[str, Any]]) -> tuple[ControllerAlert, ...]:
    found = [ControllerAlert(c.rollout, c.release, f"policy {c.policy} (on_breach: alert)", c.reason, c.at)
             for c in breaches if c.verdict == "fail" and c.action == "alert"]
    for event in events:
        if event["kind"] == "rollout.waiting_overdue":
            payload = _payload(event)
            found.append(ControllerAlert(_rollout_of(event["subject"]), event["release"],
                                         f"stage {payload.get('stage')} waited past its deadline",
                                         str(payload.get("reason", "")), when(event["ts"])))
    return tuple(sorted(found, key=lambda a: a.at))


def _harness(events: Iterable[Mapping[str, Any]]) -> tuple[HarnessLine, ...]:
    runs = []
    for event in events:
        if event["kind"] != HARNESS_EVENT:
            continue
        result = _payload(event)
        breaches = [b for b in result.get("breaches", []) if isinstance(b, dict)]
        faults = tuple(FaultLine(str(f.get("spec")), f.get("caught_by"), f.get("ok") is True)
                       for f in result.get("faults", []) if isinstance(f, dict))
        runs.append(HarnessLine(
            rollout=_rollout_of(event["subject"]), at=when(event["ts"]), release=event["release"],
            stage=result.get("stage"), ok=result.get("ok") is True,  # fail closed: a result without ok failed
            duration_s=result.get("duration_s"), simulated_s=result.get("simulated_s"), breaches=len(breaches),
            unexpected_breaches=sum(b.get("expected") is not True for b in breaches), faults=faults,
            errors=tuple(str(e) for e in result.get("errors", []))))
    return tuple(runs)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
