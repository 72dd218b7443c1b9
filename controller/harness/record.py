"""A finished harness run in the store, as a rollout that `canaryctl report` renders like any other.

The run becomes a rollout of its release through a one-stage pipeline ("harness": the stage it
ran, on the simulator), with one stage run, every verdict change, and an audit event carrying
the result. It is written in one transaction already finished (promoted when the run met
expectation, rolled back otherwise), not through `rollout.info.create_rollout`: a synthetic run
never holds an account, so it must neither wait for the live rollout under way (one at a time)
nor ever look pending to a daemon that would try to place it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from controller import shipped
from controller.analysis.verdict import Verdict
from controller.artifact import artifact_sha256
from controller.canonical import canonical_json, sha256_hex
from controller.clock import Clock, to_datetime
from controller.config.manifest import ReleaseManifest
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model
from controller.harness.result import HarnessResult
from controller.rollout.decide import State, Status
from controller.rollout.pipeline import Pipeline
from controller.store import audit
from controller.store.database import Database
from controller.store.models import Release, Rollout, StageRun
from controller.store.releases import NewRelease, add_release
from controller.store.verdicts import VerdictLog

ACTOR = "harness"
ENVIRONMENT = "harness"  # the embedded simulator of a harness run, not an environment of the daemon

def harness_release(strategy: StrategyConfig) -> NewRelease:
    """The reference bot trading ``strategy``, as a release whose version names its content: the
    shipped manifest (its artifact is the installed ``reference_bot`` package) and the strategy."""
    manifest_file = shipped.reference_bot_file("manifest.yaml")
    manifest = load_model(ReleaseManifest, manifest_file)
    digest = artifact_sha256(manifest.artifact_path(manifest_file))
    recorded = manifest.model_dump(mode="json")
    recorded["artifact"] = {**recorded["artifact"], "sha256": digest}
    config = strategy.model_dump(mode="json")
    version = "harness-" + sha256_hex(canonical_json({"config": config, "artifact": digest}))[:12]
    return NewRelease(version=version, manifest=recorded, artifact_sha256=digest, config=config,
                      notes="the reference bot as the synthetic harness runs it")


async def record_run(db: Database, clock: Clock, result: HarnessResult, changes: list[Verdict], *, version: str,
                     policies_file: str, started: float, new_release: NewRelease | None = None) -> int:
    """Store the run; returns the rollout's id. ``started``: the simulated clock's start."""
    if new_release is not None:
        await add_release(db, clock, new_release, actor=ACTOR)
    pipeline = Pipeline.model_validate({"name": "harness", "stages": [{
        "name": result.stage, "title": f"Synthetic harness run of stage {result.stage}", "environment": ENVIRONMENT,
        "account": "canary", "duration": result.duration_s, "policies": policies_file}]})
    status = Status.PROMOTED if result.ok else Status.ROLLED_BACK
    reason = ("harness run met expectation" if result.ok else
              f"harness run not as expected: {len(result.unexpected_breaches)} unexpected breach(es), "
              f"{sum(not f.ok for f in result.faults)} fault(s) not as expected")
    state = State(status=status, stage=0, stage_started=started, reason=reason)
    async with db.write() as session:
        release = (await session.execute(select(Release).where(Release.version == version))).scalar_one()
        now = clock.now()
        row = Rollout(release_id=release.id, baseline_release_id=None,
                      pipeline=canonical_json(pipeline.model_dump(mode="json")), state=status.value,
                      stage=result.stage, created_at=now, updated_at=now, decision=canonical_json(state.to_json()))
        session.add(row)
        await session.flush()
        run = StageRun(rollout_id=row.id, stage=result.stage, environment=ENVIRONMENT, account="canary",
                       capital_cap=None, started_at=to_datetime(started),
                       ends_at=to_datetime(started + result.duration_s),
                       finished_at=to_datetime(started + result.simulated_s),
                       outcome="passed" if result.ok else "rolled_back")
        session.add(run)
        await session.flush()
        await audit.append(session, clock, actor=ACTOR, kind="harness.run", subject=f"rollout:{row.id}",
                           release=version, payload=_payload(result))
        rollout_id, run_id = row.id, run.id
    await VerdictLog(db, rollout_id, run_id).record(changes)
    return rollout_id


def _payload(result: HarnessResult) -> dict[str, Any]:
    summary = result.to_json()
    summary.pop("rollout", None)
    return summary
