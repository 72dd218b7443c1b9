"""Everything a report states about one rollout, read from the store (and the bots' log files).

Read-only: nothing here writes to the database or the state folder. The store keeps a policy's
verdict when it changes (with the value measured then), not every evaluation, and no raw
metric scrapes: what is not stored is said so in the report, never reconstructed.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from controller.canonical import sha256_hex
from controller.deploy.process import OUTPUT_LOG, instance_folder
from controller.errors import StoreError
from controller.rollout.info import RolloutInfo, get_rollout
from controller.store.audit_row import AuditRow
from controller.store.commands import CommandInfo
from controller.store.database import Database
from controller.store.deployments import DeploymentInfo, rollout_deployments
from controller.store.models import AuditEvent, ConfigSnapshot, OperatorCommand, RollbackStep, StageRun, VerdictChange
from controller.store.release_record import ReleaseInfo
from controller.store.releases import get_release
from controller.store.verdict_evidence import StoredEvidence

CREDENTIAL_FILES = ("exchange.json",)
"""What a placement's folder holds that must never leave it: the account's API key (0600)."""


@dataclass(frozen=True)
class PolicyDef:
    """What a policy file says of a policy (None when the files at hand no longer hold it)."""

    name: str
    checklist: str
    source: str
    metric: str
    aggregate: str
    condition: str
    window: float
    per: tuple[str, ...]
    on_breach: str
    severity: str


@dataclass(frozen=True)
class PolicyFile:
    stage: str
    name: str
    path: str
    sha256: str | None
    error: str | None = None


@dataclass(frozen=True)
class VerdictRow:
    id: int
    policy: str
    stage: str | None
    group: tuple[tuple[str, str], ...]
    outcome: str
    value: float | None
    threshold: str | None
    condition: str | None
    window: float | None
    samples: int
    at: datetime
    reason: str
    action: str | None


@dataclass(frozen=True)
class StageRunRow:
    stage: str
    environment: str
    account: str
    capital_cap: str | None
    started_at: datetime
    ends_at: datetime
    finished_at: datetime | None
    outcome: str | None


@dataclass(frozen=True)
class StepRow:
    position: int
    name: str
    state: str
    attempts: int
    started_at: datetime | None
    finished_at: datetime | None
    detail: dict[str, Any]
    error: str | None


@dataclass(frozen=True)
class ReleaseRow:
    info: ReleaseInfo
    roles: tuple[str, ...]
    config_text: str
    """The config snapshot exactly as stored (canonical JSON): its SHA-256 is ``info.config_sha256``."""


@dataclass(frozen=True)
class LogFile:
    instance: str
    path: Path
    size: int | None
    """Bytes to archive (the file may grow while a bot runs); None: not readable."""
    note: str | None = None


@dataclass(frozen=True)
class Evidence(RolloutInfo):
    """The rollout, read as the engine reads it, with everything the store keeps about it."""

    releases: tuple[ReleaseRow, ...]
    stage_runs: tuple[StageRunRow, ...]
    verdicts: tuple[VerdictRow, ...]
    commands: tuple[CommandInfo, ...]
    steps: tuple[StepRow, ...]
    audit: tuple[AuditRow, ...]
    """A contiguous stretch of the chain: the rollout's first event to its last, and all between."""
    deployments: tuple[DeploymentInfo, ...]
    logs: tuple[LogFile, ...]
    policies: dict[str, PolicyDef]
    policy_files: tuple[PolicyFile, ...]

    @property
    def as_of(self) -> datetime:
        """The newest instant the evidence speaks of (a report of the same evidence says the same)."""
        times = [self.updated_at, *(a.ts for a in self.audit), *(v.at for v in self.verdicts),
                 *(s.finished_at for s in self.steps if s.finished_at)]
        return max(times)


async def gather(db: Database, ref: str, *, policies_dir: Path | None, state_dir: Path | None) -> Evidence:
    """Read the rollout named by ``ref`` (an id or a release version) and everything about it."""
    info = await get_rollout(db, ref)
    deployments = tuple(await rollout_deployments(db, info.id))
    async with db.read() as session:
        runs = (await session.execute(select(StageRun).where(StageRun.rollout_id == info.id)
                                      .order_by(StageRun.id))).scalars().all()
        stage_of_run = {r.id: r.stage for r in runs}
        verdict_rows = (await session.execute(select(VerdictChange).where(VerdictChange.rollout_id == info.id)
                                              .order_by(VerdictChange.id))).scalars().all()
        command_rows = (await session.execute(select(OperatorCommand).where(OperatorCommand.rollout_id == info.id)
                                              .order_by(OperatorCommand.id))).scalars().all()
        step_rows = (await session.execute(select(RollbackStep).where(RollbackStep.rollout_id == info.id)
                                           .order_by(RollbackStep.position))).scalars().all()
        audit_rows = await _audit_excerpt(session, info.id)
    steps = tuple(StepRow(r.position, r.name, r.state, r.attempts, r.started_at, r.finished_at, json.loads(r.detail),
                          r.error) for r in step_rows)
    return Evidence.of(
        info,
        releases=await _releases(db, info, steps, deployments),
        stage_runs=tuple(StageRunRow(r.stage, r.environment, r.account, None if r.capital_cap is None
                                     else str(r.capital_cap), r.started_at, r.ends_at, r.finished_at, r.outcome)
                         for r in runs),
        verdicts=tuple(_verdict(r, stage_of_run.get(r.stage_run_id)) for r in verdict_rows),
        commands=tuple(CommandInfo.from_row(r) for r in command_rows),
        steps=steps,
        audit=audit_rows,
        deployments=deployments,
        logs=_logs(state_dir, deployments),
        **_policies(info, policies_dir),
    )


def _verdict(row: VerdictChange, stage: str | None) -> VerdictRow:
    evidence = StoredEvidence.parse(row.evidence)
    return VerdictRow(row.id, row.policy, stage, evidence.group, row.verdict, row.value, row.threshold,
                      evidence.condition, row.window_seconds, row.samples, row.evaluated_at, evidence.reason,
                      evidence.action)


async def _audit_excerpt(session, rollout_id: int) -> tuple[AuditRow, ...]:
    subject = f"rollout:{rollout_id}"
    first, last = (await session.execute(select(func.min(AuditEvent.seq), func.max(AuditEvent.seq))
                                         .where(AuditEvent.subject == subject))).one()
    if first is None:
        return ()
    rows = (await session.execute(select(AuditEvent).where(AuditEvent.seq.between(first, last))
                                  .order_by(AuditEvent.seq))).scalars().all()
    return tuple(AuditRow.from_row(r) for r in rows)


async def _releases(db: Database, info: RolloutInfo, steps: tuple[StepRow, ...],
                    deployments: tuple[DeploymentInfo, ...]) -> tuple[ReleaseRow, ...]:
    roles: dict[str, list[str]] = {info.release: ["candidate"]}
    if info.baseline:
        roles.setdefault(info.baseline, []).append("baseline")
    for step in steps:
        if step.name == "start_previous" and step.detail.get("release"):
            roles.setdefault(step.detail["release"], []).append("restored by the rollback")
    for deployment in deployments:
        roles.setdefault(deployment.release, []).append("deployed")
    out = []
    for version, its_roles in roles.items():
        release = await get_release(db, version)
        async with db.read() as session:
            snapshot = await session.get(ConfigSnapshot, release.config_sha256)
        if snapshot is None or sha256_hex(snapshot.content) != snapshot.sha256:
            raise StoreError(f"config snapshot {release.config_sha256} of release {version} is missing or does "
                             "not match its hash: the row was edited")
        out.append(ReleaseRow(release, tuple(dict.fromkeys(its_roles)), snapshot.content))
    return tuple(out)


def _logs(state_dir: Path | None, deployments: tuple[DeploymentInfo, ...]) -> tuple[LogFile, ...]:
    """The output of each instance the rollout placed a release on (a rollback restores the previous
    release on the same instance, whose log holds both runs)."""
    instances = sorted({d.instance for d in deployments})
    if state_dir is None:
        return tuple(LogFile(i, Path(), None, "no state folder given (--state-dir)") for i in instances)
    out = []
    for instance in instances:
        path = instance_folder(state_dir, instance) / OUTPUT_LOG
        try:
            size = os.stat(path).st_size
            with open(path, "rb"):
                pass
        except FileNotFoundError:
            out.append(LogFile(instance, path, None, f"no log file at {path} (a systemd placement logs to the "
                                                     f"journal: journalctl -u canary-strategy@{instance})"))
            continue
        except OSError as exc:
            out.append(LogFile(instance, path, None, f"{path} is not readable: {exc.strerror}"))
            continue
        out.append(LogFile(instance, path, size))
    return tuple(out)


def _policies(info: RolloutInfo, folder: Path | None) -> dict[str, Any]:
    """The policy files the rollout's stages name, as they are now (the store keeps no copy of them)."""
    from controller.analysis.policy import load_policy_file
    from controller.errors import CanaryError

    policies: dict[str, PolicyDef] = {}
    files = []
    for stage in info.pipeline.stages:
        if folder is None:
            files.append(PolicyFile(stage.name, stage.policies, "", None, "no policy folder known"))
            continue
        path = folder / stage.policies
        try:
            text = path.read_bytes()
            loaded = load_policy_file(path)
        except FileNotFoundError:
            files.append(PolicyFile(stage.name, stage.policies, str(path), None, "missing"))
            continue
        except (OSError, CanaryError) as exc:
            files.append(PolicyFile(stage.name, stage.policies, str(path), None, str(exc)))
            continue
        files.append(PolicyFile(stage.name, stage.policies, str(path), sha256_hex(text)))
        for p in loaded.policies:
            policies[p.name] = PolicyDef(p.name, p.checklist, p.source, p.metric, p.aggregate, p.condition, p.window,
                                         tuple(p.per), p.on_breach, p.severity)
    return {"policies": policies, "policy_files": tuple(files)}
