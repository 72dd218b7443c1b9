"""Is the canary healthy? One rollout's state gathered from the store in one consistent read.

Everything comes from rows the daemon wrote: the rollout with its decision state and pipeline
(a `RolloutRecord`, which a `Summary` is), the stage run, the verdict changes (value, threshold,
condition), the deployments, unanswered commands and the rollback steps. It is read with plain
SQL through a `store.readonly.Reader` so that `canaryctl status` starts in a blink; the JSON
documents (decision state, pipeline, verdict evidence) are read field by field here, and tests
hold these readings to their writers. It lives in the store because it is queries; it knows the
engine's documents only as JSON.

Limits of the evidence: verdicts are stored when they change, not at every evaluation, so a
policy's value is the one of its latest change and its trend runs over changes; time left is
measured on this host's clock (a daemon on an accelerated simulated clock runs ahead of it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from controller import signoffs
from controller.errors import NotFoundError
from controller.store import TERMINAL, anomalies
from controller.store.readonly import Reader, decimal, when
from controller.store.rollout_record import SELECT_ROLLOUT, RolloutRecord
from controller.store.verdict_evidence import StoredEvidence

JUDGED = frozenset({"running", "awaiting_signoff", "paused"})
"""`decide.Status` values in which the stage runs and its verdicts count (`decide.JUDGED`)."""
WAITING = frozenset({"awaiting_signoff", "paused"})
"""`decide.Status` values in which the rollout waits for a person, against a deadline (`decide.WAITING`)."""
OUTCOME_ORDER = {"fail": 0, "nodata": 1, "inconclusive": 2, "pass": 3}
TREND_POINTS = 8
JSON_VERSION = 1


@dataclass(frozen=True)
class StageView:
    name: str
    title: str | None
    index: int
    count: int
    environment: str
    account: str
    duration: float
    progress_deadline: float
    capital_cap: Decimal | None
    baseline_account: str | None
    signoffs: tuple[str, ...]
    signers: int
    """How many distinct operating-system users must sign (2: four eyes)."""
    waiting_deadline: float
    on_waiting_deadline: str
    started_at: datetime | None
    finished_at: datetime | None
    outcome: str | None
    dry_run: bool = False
    """A dry-run stage: judged, acting on no verdict (`rollout.pipeline`)."""

    @property
    def ends_at(self) -> datetime | None:
        return None if self.started_at is None else self.started_at + timedelta(seconds=self.duration)

    @property
    def deadline_at(self) -> datetime | None:
        """When a gate that never opened rolls the rollout back."""
        ends = self.ends_at
        return None if ends is None else ends + timedelta(seconds=self.progress_deadline)


@dataclass(frozen=True)
class PolicyLine:
    """A policy's latest stored verdict, with the values of its recent changes (oldest first).

    A policy judged per group (symbol, bucket) shows its worst group's latest verdict."""

    policy: str
    group: dict[str, str]
    verdict: str
    value: float | None
    threshold: str | None
    condition: str
    action: str | None
    reason: str
    at: datetime
    samples: int
    window: float | None
    trend: tuple[float, ...] = ()
    gate: str | None = None
    """For the stage's gate: ``clean`` (passing, long enough), ``passing`` (clean at ``clean_at``),
    ``spoiled`` (failed during the stage); None when it does not gate the stage or does not pass."""
    clean_at: datetime | None = None
    pending: bool = False
    """A pass whose condition was false, its ``for`` not yet run out, when it was stored: a breach in
    the making (stored on its turn, damped: `store.verdicts.VerdictLog`)."""
    pending_since: datetime | None = None
    """While pending: since when the condition has been false."""
    fails_at: datetime | None = None
    """While pending: when its ``for`` runs out, the breach then a failure if the condition stays false."""

    @property
    def shown(self) -> str:
        """The verdict as a person reads it: ``pending`` rather than a pass about to fail."""
        return "pending" if self.pending else self.verdict

    def fails_in(self, now: datetime) -> float | None:
        """While pending: seconds until its ``for`` runs out (0: run out, the next verdict not stored yet)."""
        return None if self.fails_at is None else max(0.0, (self.fails_at - now).total_seconds())

    def to_json(self, now: datetime | None = None) -> dict[str, Any]:
        return {"policy": self.policy, "group": self.group, "verdict": self.verdict, "pending": self.pending,
                "pending_since": _iso(self.pending_since), "fails_at": _iso(self.fails_at),
                "fails_in_seconds": None if now is None else self.fails_in(now),
                "value": self.value,
                "threshold": self.threshold, "condition": self.condition, "action": self.action,
                "reason": self.reason, "at": self.at.isoformat(), "samples": self.samples,
                "window_seconds": self.window, "trend": list(self.trend), "gate": self.gate,
                "clean_at": _iso(self.clean_at)}


@dataclass(frozen=True)
class StepLine:
    position: int
    name: str
    account: str | None
    state: str
    attempts: int
    error: str | None
    started_at: datetime | None
    finished_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "name": self.name, "account": self.account, "state": self.state,
                "attempts": self.attempts, "error": self.error, "started_at": _iso(self.started_at),
                "finished_at": _iso(self.finished_at)}


@dataclass(frozen=True)
class RollbackView:
    trigger: str | None
    reason: str | None
    planned_at: datetime | None
    steps: tuple[StepLine, ...]

    @property
    def done(self) -> int:
        return sum(1 for s in self.steps if s.state == "done")

    @property
    def current(self) -> StepLine | None:
        """The first step not done: the one running, failed, or next."""
        return next((s for s in self.steps if s.state != "done"), None)

    def to_json(self) -> dict[str, Any]:
        current = self.current
        return {"trigger": self.trigger, "reason": self.reason, "planned_at": _iso(self.planned_at),
                "done": self.done, "total": len(self.steps), "current": current.name if current else None,
                "steps": [s.to_json() for s in self.steps]}


@dataclass(frozen=True)
class CommandLine:
    id: int
    kind: str
    actor: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "actor": self.actor, "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class DryRunLine:
    """A dry-run policy that would have acted: what it would have done, since when, how often."""

    policy: str
    would: str
    reason: str
    first: datetime
    last: datetime
    count: int

    def to_json(self) -> dict[str, Any]:
        return {"policy": self.policy, "would_have": self.would, "reason": self.reason,
                "first": self.first.isoformat(), "last": self.last.isoformat(), "count": self.count}


@dataclass(frozen=True)
class WouldHaveLine:
    """A dry-run stage's decision, never acted on (rollout.decide.WouldHave): what, why, when, and its policy."""

    would: str
    reason: str
    at: datetime
    policy: str | None
    value: float | None
    threshold: float | None

    def to_json(self) -> dict[str, Any]:
        return {"would_have": self.would, "reason": self.reason, "at": self.at.isoformat(), "policy": self.policy,
                "value": self.value, "threshold": self.threshold, "acted_on": False}


@dataclass(frozen=True)
class WebhookLine:
    """A webhook's last delivery of the rollout's events (`store.webhook_deliveries`): ``delivered``,
    ``sending`` or ``failed``, after how many attempts, and since when it has been failing."""

    webhook: str
    """``scheme://host/path``: never the query, which may carry a credential."""
    environment: str
    event: str
    state: str
    attempts: int
    status: int | None
    error: str | None
    last_attempt_at: datetime | None
    delivered_at: datetime | None
    failing_since: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {"webhook": self.webhook, "environment": self.environment, "event": self.event, "state": self.state,
                "ok": self.state == "delivered", "attempts": self.attempts, "last_status": self.status,
                "last_error": self.error, "last_attempt_at": _iso(self.last_attempt_at),
                "delivered_at": _iso(self.delivered_at), "failing_since": _iso(self.failing_since)}


@dataclass(frozen=True)
class OwnerLine:
    """The daemon that owns the rollout (its lease, `store.leases`), since when, and until when unrenewed."""

    owner: str
    epoch: int
    since: datetime | None
    expires_at: datetime | None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {"owner": self.owner, "epoch": self.epoch, "since": _iso(self.since),
                "expires_at": _iso(self.expires_at), "expired": self.expired(now)}


@dataclass(frozen=True)
class Summary(RolloutRecord):
    """A rollout as `canaryctl status` shows it: its record, its stage now, and what the store says of it."""

    now: datetime
    stage: StageView
    baseline_live: bool
    """True: the stage has a baseline account, ``live_baseline`` is the release live on it (None:
    none); False: the release compared with is ``baseline``, the one this rollout replaced."""
    live_baseline: str | None
    capital_share: PolicyLine | None
    policies: tuple[PolicyLine, ...]
    signed: dict[str, str]
    pending_signoffs: tuple[str, ...]
    pending_commands: tuple[CommandLine, ...]
    last_breach: PolicyLine | None
    last_rollback: RollbackView | None
    last_verdict_at: datetime | None = None
    dry_run: tuple[DryRunLine, ...] = ()
    """Dry-run policies that would have acted (never acted on), from the decision state."""
    would_have: WouldHaveLine | None = None
    """A dry-run stage's decision (never acted on), from the decision state."""
    signer_os_users: dict[str, str] = field(default_factory=dict)
    """Claimed name -> the operating-system user that ran its accepted ``signoff`` (where recorded)."""
    overdue_signoffs: tuple[str, ...] = ()
    """Items of a recurring sign-off whose period ended unsigned and that are still unsigned (``standup-review/day-3``)."""
    open_anomalies: tuple[anomalies.Anomaly, ...] = ()
    """Anomalies noted on the rollout (`canaryctl note`) and not resolved yet, oldest first."""
    webhooks: tuple[WebhookLine, ...] = ()
    """Each webhook's last delivery of this rollout's events."""
    owner: OwnerLine | None = None
    """The daemon that owns the rollout; None while no daemon has claimed it."""

    @property
    def waiting_since(self) -> datetime | None:
        """When the rollout began to wait (paused or awaiting sign-off), None while it does not. A
        state written before waits were timed counts from the stage's start, as `decide.waiting_from`."""
        if self.status not in WAITING:
            return None
        since = self.decision_document.get("waiting_since")
        return _epoch(since) if since is not None else self.stage.started_at

    @property
    def waiting_deadline_at(self) -> datetime | None:
        """When the wait passes its deadline: an alert, or a rollback where the stage says so."""
        since = self.waiting_since
        return None if since is None else since + timedelta(seconds=self.stage.waiting_deadline)

    @property
    def waiting_left(self) -> float | None:
        """Seconds before the wait's deadline (0: overdue), while the rollout waits."""
        deadline = self.waiting_deadline_at
        if deadline is None:
            return None
        left = (deadline - self.now).total_seconds()
        return min(max(0.0, left), self.stage.waiting_deadline)  # a daemon clock ahead: at most all of it

    @property
    def anomalies_block(self) -> bool:
        """An open anomaly keeps this stage from being promoted (`Pipeline.blocks_on_anomalies`)."""
        setting = self.stage_document.get("anomalies")
        return setting == "block" or (setting is None and self.stage.index == self.stage.count - 1)

    @property
    def remaining(self) -> float | None:
        """Seconds of the stage left, while it runs."""
        if self.status not in JUDGED or self.stage.ends_at is None:
            return None
        left = (self.stage.ends_at - self.now).total_seconds()
        return min(max(0.0, left), self.stage.duration)  # a daemon clock ahead of this host's: at most all of it

    def to_json(self) -> dict[str, Any]:
        stage = self.stage
        return {
            "id": self.id, "release": self.release, "state": self.status, "reason": self.reason,
            "pipeline": self.pipeline_name, "updated_at": self.updated_at.isoformat(),
            "owner": self.owner.to_json(self.now) if self.owner else None,
            "baseline": {"release": self.live_baseline if self.baseline_live else self.baseline,
                         "live": self.baseline_live,
                         "environment": stage.environment if self.baseline_live else None,
                         "account": stage.baseline_account if self.baseline_live else None},
            "stage": {"name": stage.name, "title": stage.title, "index": stage.index, "count": stage.count,
                      "environment": stage.environment, "account": stage.account,
                      "duration_seconds": stage.duration, "started_at": _iso(stage.started_at),
                      "ends_at": _iso(stage.ends_at), "remaining_seconds": self.remaining,
                      "deadline_at": _iso(stage.deadline_at), "finished_at": _iso(stage.finished_at),
                      "outcome": stage.outcome, "dry_run": stage.dry_run},
            "capital_share": {"cap": None if stage.capital_cap is None else str(stage.capital_cap),
                              "measured": self.capital_share.value if self.capital_share else None,
                              "policy": self.capital_share.policy if self.capital_share else None,
                              "at": self.capital_share.at.isoformat() if self.capital_share else None},
            "policies": [p.to_json(self.now) for p in self.policies],
            "signoffs": {"required": list(stage.signoffs), "pending": list(self.pending_signoffs),
                         "overdue": list(self.overdue_signoffs),
                         "signed": dict(self.signed), "os_users": dict(self.signer_os_users)},
            "pending_commands": [c.to_json() for c in self.pending_commands],
            "last_breach": self.last_breach.to_json() if self.last_breach else None,
            "last_rollback": self.last_rollback.to_json() if self.last_rollback else None,
            "last_verdict_at": _iso(self.last_verdict_at),
            "dry_run": [d.to_json() for d in self.dry_run],
            "would_have": self.would_have.to_json() if self.would_have else None,
            "open_anomalies": [a.to_json() for a in self.open_anomalies],
            "anomalies_block_promotion": self.anomalies_block,
            "waiting": None if self.waiting_since is None else {
                "since": _iso(self.waiting_since), "deadline_at": _iso(self.waiting_deadline_at),
                "deadline_seconds": stage.waiting_deadline, "on_deadline": stage.on_waiting_deadline,
                "remaining_seconds": self.waiting_left,
                "overdue": bool(self.decision_document.get("waiting_overdue")) or self.waiting_left == 0.0},
            "webhooks": [w.to_json() for w in self.webhooks],
        }


def document(summaries: list[Summary], now: datetime) -> dict[str, Any]:
    """What ``canaryctl status --json`` prints: versioned, one object per refresh."""
    return {"version": JSON_VERSION, "now": now.isoformat(), "rollouts": [s.to_json() for s in summaries]}


# ---------------------------------------------------------------- which rollouts

def resolve(reader: Reader, ref: str) -> int:
    """A rollout id from an id or a release version (its latest rollout), as `store.rollouts.get_rollout`."""
    if ref.isdigit() and reader.rows("SELECT id FROM rollouts WHERE id = :id", id=int(ref)):
        return int(ref)
    found = reader.rows("SELECT r.id FROM rollouts r JOIN releases rel ON rel.id = r.release_id "
                        "WHERE rel.version = :version ORDER BY r.id DESC LIMIT 1", version=ref)
    if not found:
        raise NotFoundError(f"no rollout {ref!r} (give a rollout id or a release version; "
                            "`canaryctl rollout list` shows them)")
    return found[0]["id"]


def current_ids(reader: Reader) -> list[int]:
    """The rollouts under way, else the latest one (empty when there is none)."""
    done = {f"done{n}": state for n, state in enumerate(sorted(TERMINAL))}
    active = reader.rows(f"SELECT id FROM rollouts WHERE state NOT IN ({', '.join(':' + k for k in done)}) ORDER BY id",
                         **done)
    if active:
        return [r["id"] for r in active]
    return [r["id"] for r in reader.rows("SELECT id FROM rollouts ORDER BY id DESC LIMIT 1")]


# ---------------------------------------------------------------- one rollout

def gather(reader: Reader, rollout_id: int, now: datetime, *, trend: int = TREND_POINTS) -> Summary:
    row = reader.rows(f"{SELECT_ROLLOUT} WHERE r.id = :id", id=rollout_id)
    if not row:
        raise NotFoundError(f"no rollout {rollout_id}; `canaryctl rollout list` shows them")
    record = RolloutRecord.from_row(row[0])
    decision, spec = record.decision_document, record.stage_document
    run = _stage_run(reader, rollout_id, record.stage_name)
    started = decision.get("stage_started")
    stage = StageView(
        name=record.stage_name, title=spec.get("title"), index=record.stage_index,
        count=len(record.pipeline_document["stages"]), environment=spec["environment"], account=spec["account"],
        duration=float(spec["duration"]), progress_deadline=float(spec.get("progress_deadline", 3600.0)),
        capital_cap=decimal(spec.get("capital_cap")), baseline_account=spec.get("baseline"),
        signoffs=tuple(signoffs.items(signoffs.entries_of(spec.get("signoffs", ())), float(spec["duration"]))),
        signers=int(spec.get("signers", 1)),
        waiting_deadline=float(spec.get("waiting_deadline", 86400.0)),
        on_waiting_deadline=str(spec.get("on_waiting_deadline", "alert")),
        started_at=_epoch(started) if started is not None else (when(run["started_at"]) if run else None),
        finished_at=when(run["finished_at"]) if run else None, outcome=run["outcome"] if run else None,
        dry_run=bool(spec.get("dry_run", False)))

    policies = _policies(reader, rollout_id, run["id"], decision, now, trend) if run else []
    signed = dict(decision.get("signoffs", {}))
    live = None
    if stage.baseline_account:
        found = reader.rows("SELECT rel.version FROM deployments d JOIN releases rel ON rel.id = d.release_id "
                            "WHERE d.environment = :env AND d.account = :account AND d.stopped_at IS NULL",
                            env=stage.environment, account=stage.baseline_account)
        live = found[0]["version"] if found else None
    last = reader.rows("SELECT MAX(evaluated_at) AS at FROM verdicts WHERE rollout_id = :id", id=rollout_id)
    return Summary.of(
        record, now=now, stage=stage, baseline_live=bool(stage.baseline_account), live_baseline=live,
        capital_share=next((p for p in policies if "capital_cap" in p.condition), None),
        policies=tuple(policies), signed=signed, signer_os_users=_signer_os_users(reader, rollout_id),
        pending_signoffs=tuple(signoffs.pending(stage.name, stage.signoffs, stage.signers, signed,
                                                decision.get("signers", {}).get(stage.name, ()))),
        overdue_signoffs=tuple(key.split("/", 1)[1] for key in decision.get("overdue_signoffs", ())
                               if key.startswith(f"{stage.name}/") and key not in signed),
        pending_commands=tuple(CommandLine(r["id"], r["kind"], r["actor"], when(r["created_at"])) for r in reader.rows(
            "SELECT id, kind, actor, created_at FROM operator_commands WHERE rollout_id = :id AND acked_at IS NULL "
            "ORDER BY id", id=rollout_id)),
        last_breach=_last_breach(reader, rollout_id),
        last_rollback=_rollback(reader, rollout_id),
        last_verdict_at=when(last[0]["at"]) if last else None,
        dry_run=_dry_run(decision), would_have=_would_have(decision), webhooks=_webhooks(reader, rollout_id),
        open_anomalies=_open_anomalies(reader, rollout_id), owner=_owner(reader, rollout_id))


def _owner(reader: Reader, rollout_id: int) -> OwnerLine | None:
    rows = reader.rows("SELECT owner, epoch, acquired_at, expires_at FROM rollout_leases WHERE rollout_id = :id "
                       "AND owner <> ''", id=rollout_id)
    if not rows:
        return None
    row = rows[0]
    return OwnerLine(row["owner"], int(row["epoch"]), when(row["acquired_at"]), when(row["expires_at"]))


def _webhooks(reader: Reader, rollout_id: int) -> tuple[WebhookLine, ...]:
    """Each webhook's newest delivery row of the rollout's events."""
    rows = reader.rows(
        "SELECT environment, webhook, event, state, attempts, last_status, last_error, last_attempt_at, delivered_at, "
        "failing_since FROM webhook_deliveries WHERE id IN (SELECT MAX(id) FROM webhook_deliveries "
        "WHERE rollout_id = :id GROUP BY environment, webhook) ORDER BY environment, webhook", id=rollout_id)
    return tuple(WebhookLine(r["webhook"], r["environment"], r["event"], r["state"], int(r["attempts"]),
                             r["last_status"], r["last_error"], when(r["last_attempt_at"]), when(r["delivered_at"]),
                             when(r["failing_since"])) for r in rows)


def _would_have(decision: Mapping[str, Any]) -> WouldHaveLine | None:
    """The decision state's ``would_have`` (rollout.decide.WouldHave.to_json), if a dry-run stage decided."""
    found = decision.get("would_have")
    if not found:
        return None
    return WouldHaveLine(str(found["would"]), str(found.get("reason", "")), _epoch(float(found["at"])),
                         found.get("policy"), found.get("value"), found.get("threshold"))


def _open_anomalies(reader: Reader, rollout_id: int) -> tuple[anomalies.Anomaly, ...]:
    """The rollout's anomaly log as its audit events hold it (`store.anomalies`), the open ones."""
    rows = reader.rows("SELECT seq, ts, actor, kind, payload FROM audit_events WHERE subject = :subject "
                       "AND kind IN (:noted, :resolved) ORDER BY seq", subject=f"rollout:{rollout_id}",
                       noted=anomalies.NOTED, resolved=anomalies.RESOLVED)
    events = ((r["seq"], when(r["ts"]), r["actor"], r["kind"], json.loads(r["payload"])) for r in rows)
    return tuple(a for a in anomalies.fold(rollout_id, events) if a.open)


def _dry_run(decision: Mapping[str, Any]) -> tuple[DryRunLine, ...]:
    """The decision state's ``dry_run`` (rollout.decide.DryRun.to_json), policy by policy."""
    return tuple(DryRunLine(name, str(d["would"]), str(d.get("reason", "")), _epoch(float(d["first"])),
                            _epoch(float(d["last"])), int(d.get("count", 1)))
                 for name, d in sorted(decision.get("dry_run", {}).items()))


def _stage_run(reader: Reader, rollout_id: int, stage: str) -> dict[str, Any] | None:
    runs = reader.rows("SELECT id, started_at, finished_at, outcome FROM stage_runs "
                       "WHERE rollout_id = :id AND stage = :stage ORDER BY id DESC LIMIT 1", id=rollout_id, stage=stage)
    return runs[0] if runs else None


_VERDICT_COLUMNS = "id, policy, group_key, verdict, value, threshold, window_seconds, samples, evaluated_at, evidence"


def _policies(reader: Reader, rollout_id: int, run_id: int, decision: Mapping[str, Any], now: datetime,
              points: int) -> list[PolicyLine]:
    rows = reader.rows(
        f"SELECT {_VERDICT_COLUMNS} FROM (SELECT {_VERDICT_COLUMNS}, ROW_NUMBER() OVER "
        "(PARTITION BY policy, group_key ORDER BY id DESC) AS newest FROM verdicts "
        "WHERE rollout_id = :id AND stage_run_id = :run) AS recent WHERE newest <= :points ORDER BY policy, id",
        id=rollout_id, run=run_id, points=points)
    by_group: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by_group.setdefault((row["policy"], row["group_key"]), []).append(row)
    by_policy: dict[str, list[dict[str, Any]]] = {}
    for (policy, _), history in by_group.items():  # the worst group speaks; of equals, the newest
        current = by_policy.get(policy)
        if current is None or ((OUTCOME_ORDER.get(history[-1]["verdict"], 9), -history[-1]["id"])
                               < (OUTCOME_ORDER.get(current[-1]["verdict"], 9), -current[-1]["id"])):
            by_policy[policy] = history
    passing = decision.get("passing", {})
    if isinstance(passing, list):  # decision rows written before clean runs were timed: clean already
        passing = dict.fromkeys(passing)
    spoiled = decision.get("spoiled", {})
    lines = []
    for name, history in by_policy.items():
        line = _line(history[-1], tuple(r["value"] for r in history if r["value"] is not None))
        clean_at = _epoch(passing[name]) if passing.get(name) else None
        if name in spoiled:
            line = replace(line, gate="spoiled")
        elif name in passing:
            line = replace(line, gate="clean" if clean_at is None or clean_at <= now else "passing", clean_at=clean_at)
        lines.append(line)
    lines.sort(key=lambda p: (OUTCOME_ORDER.get(p.verdict, 9), p.policy))
    return lines


def _line(row: dict[str, Any], trend: tuple[float, ...] = ()) -> PolicyLine:
    evidence = StoredEvidence.parse(row["evidence"])
    pending = evidence.pending and row["verdict"] == "pass"
    return PolicyLine(policy=row["policy"], group=evidence.labels,
                      verdict=row["verdict"], value=row["value"], threshold=row["threshold"],
                      condition=evidence.condition or "", action=evidence.action,
                      reason=evidence.reason, at=when(row["evaluated_at"]), samples=row["samples"] or 0,
                      window=row["window_seconds"], trend=trend,
                      pending=pending, pending_since=_epoch(evidence.breaching_since) if pending else None,
                      fails_at=_epoch(evidence.fails_at) if pending and evidence.fails_at is not None else None)


def _signer_os_users(reader: Reader, rollout_id: int) -> dict[str, str]:
    """Who ran each accepted sign-off, by the name it claimed (the latest where a name signed twice)."""
    found: dict[str, str] = {}
    for row in reader.rows("SELECT actor, args FROM operator_commands WHERE rollout_id = :id AND kind = 'signoff' "
                           "AND outcome = 'accepted' ORDER BY id", id=rollout_id):
        os_user = json.loads(row["args"] or "{}").get("os_user")
        if isinstance(os_user, str):
            found[row["actor"]] = os_user
    return found


def _last_breach(reader: Reader, rollout_id: int) -> PolicyLine | None:
    rows = reader.rows(f"SELECT {_VERDICT_COLUMNS} FROM verdicts WHERE rollout_id = :id AND verdict = 'fail' "
                       "ORDER BY id DESC LIMIT 1", id=rollout_id)
    return _line(rows[0]) if rows else None


def rollback_steps(reader: Reader, rollout_id: int) -> tuple[StepLine, ...]:
    """The rollout's rollback plan in order (empty when it was never rolled back), as `rollback.load_plan`."""
    return tuple(StepLine(s["position"], s["name"], json.loads(s["detail"] or "{}").get("account"), s["state"],
                          s["attempts"] or 0, s["error"], when(s["started_at"]), when(s["finished_at"]))
                 for s in reader.rows("SELECT position, name, state, attempts, started_at, finished_at, detail, "
                                      "error FROM rollback_steps WHERE rollout_id = :id ORDER BY position",
                                      id=rollout_id))


def _rollback(reader: Reader, rollout_id: int) -> RollbackView | None:
    steps = rollback_steps(reader, rollout_id)
    if not steps:
        return None
    planned = reader.rows("SELECT ts, payload FROM audit_events WHERE kind = 'rollback.planned' AND subject = :subject "
                          "ORDER BY seq DESC LIMIT 1", subject=f"rollout:{rollout_id}")
    intent = json.loads(planned[0]["payload"]) if planned else {}
    return RollbackView(
        trigger=intent.get("trigger"), reason=intent.get("reason"),
        planned_at=when(planned[0]["ts"]) if planned else None, steps=steps)


def _epoch(seconds: float) -> datetime:
    """A Clock time (seconds since the epoch, as the decision state keeps them) as a datetime."""
    return datetime.fromtimestamp(float(seconds), tz=UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
