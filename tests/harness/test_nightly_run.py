"""The done-when of the synthetic harness: 48 simulated hours of the healthy reference release
through stage B, run as the nightly unit runs it, finish in CI time with zero breaches.

    canaryctl --config /etc/canary-controller/controller.yaml harness run --duration 48h --json

By 48 h every stage B policy can judge (b-bucket-locks-released needs 1000 scrapes in its 6 h
window, b-signal-latency-p95 50 orders in its hour), so each must pass: none is left inconclusive.
"""

from __future__ import annotations

import json
import time

from sqlalchemy import func, select

from controller.analysis.policy import load_policy_file
from controller.rollout.info import get_rollout
from controller.store.database import Database, resolve_url
from controller.store.models import AuditEvent, StageRun, VerdictChange
from tests.support.canaryctl import canaryctl
from tests.support.checkout import REPO

STAGE_B = [p.name for p in load_policy_file(REPO / "policies" / "stage-b.yaml").policies]
HOURS_48 = 48 * 3600


async def test_48_simulated_hours_of_the_healthy_release_end_with_every_stage_b_policy_passing(tmp_path):
    db_url = f"sqlite:///{tmp_path / 'canary.db'}"
    config = tmp_path / "controller.yaml"
    config.write_text(f"database: {{url: '{db_url}'}}\nenvironments: {{sim: {{kind: sim}}}}\n"
                      f"policies_dir: {REPO / 'policies'}\n")
    assert canaryctl("--config", str(config), "db", "upgrade").code == 0

    started = time.monotonic()
    result = canaryctl("--config", str(config), "harness", "run", "--duration", "48h", "--json", timeout=280)
    wall = time.monotonic() - started
    print(f"48 h harness run: {wall:.1f} s wall for the process")

    assert result.code == 0, (result.code, result.err[-2000:], result.out[-2000:])
    report = json.loads(result.out.strip().splitlines()[-1])
    assert report["ok"] is True and report["breaches"] == [] and report["faults"] == []
    assert report["duration_s"] == report["simulated_s"] == HOURS_48
    assert report["verdicts"] == dict.fromkeys(STAGE_B, "pass") and report["not_judged"] == {}
    assert report["releases_placed"] == 1  # no breach, so no rollback and no second placement
    assert report["wall_s"] < wall
    progress = [line for line in result.err.splitlines() if line.startswith("harness:")]
    assert progress and "48.0 of 48 h simulated (100 %), 0 breaches" in progress[-1]
    assert len(progress) <= wall / 2 + 2, "progress at most every couple of seconds"

    db = Database(resolve_url(db_url))
    try:
        rollout = await get_rollout(db, report["rollout"])
        assert rollout.status.value == "promoted" and rollout.pipeline.name == "harness"
        assert [s.name for s in rollout.pipeline.stages] == ["B"] and rollout.release.startswith("harness-")
        async with db.read() as session:
            run = (await session.execute(select(StageRun).where(StageRun.rollout_id == rollout.id))).scalar_one()
            policies = set((await session.execute(select(VerdictChange.policy).where(
                VerdictChange.rollout_id == rollout.id))).scalars())
            changes = (await session.execute(select(func.count()).select_from(VerdictChange))).scalar_one()
            events = (await session.execute(select(AuditEvent.kind).where(
                AuditEvent.subject == f"rollout:{rollout.id}"))).scalars().all()
    finally:
        await db.close()
    assert run.outcome == "passed" and (run.finished_at - run.started_at).total_seconds() == HOURS_48
    assert policies == set(STAGE_B)
    assert changes < 1000, "verdict changes, not every evaluation"
    assert events == ["harness.run"]
