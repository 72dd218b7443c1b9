"""Hand-built evidence of a small rolled-back rollout: input for the report's pure parts.

The audit excerpt is a real hash chain (``event_hash``), the log a real file; nothing stands in
for the database: these are the values `evidence.gather` would have read from it.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from controller.canonical import canonical_json, sha256_hex
from controller.config.yamlfile import load_model_text
from controller.report.evidence import (Evidence, LogFile, PolicyDef, PolicyFile, ReleaseRow, StageRunRow, StepRow,
                                        VerdictRow)
from controller.rollout.decide import State
from controller.rollout.info import RolloutInfo
from controller.store.audit_row import AuditRow
from controller.rollout.pipeline import Pipeline
from controller.store.audit import event_hash
from controller.store.release_record import ReleaseInfo

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PIPELINE = """
name: canary
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master, signoffs: [owner-review]}
"""
CHECKLIST_C4 = "C: Ensure alerting (mismatch, bucket overuse, error spikes) is active and quiet"
CHECKLIST_C5 = "C: Compare realized vs expected PnL exposure and queue latency"
POLICIES = {
    "c-leverage-mismatch-zero": PolicyDef("c-leverage-mismatch-zero", CHECKLIST_C4, "bot",
                                          "strategy_leverage_mismatch_total", "max", "== 0", 86400.0, (), "rollback",
                                          "critical"),
    "c-queue-latency-p95": PolicyDef("c-queue-latency-p95", CHECKLIST_C5, "bot", "strategy_order_queue_latency_seconds",
                                     "p95", "< 0.500", 3600.0, (), "hold", "critical"),
    "c-bucket-usage-within-allocation": PolicyDef("c-bucket-usage-within-allocation", CHECKLIST_C4, "bot",
                                                  "strategy_bucket_usage_ratio", "max", "<= allocation * 1.02", 300.0,
                                                  ("bucket",), "rollback", "critical"),
}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def verdict(n: int, policy: str, outcome: str, seconds: float, value: float | None, threshold: str | None = None,
            group: tuple = (), action: str | None = None, reason: str = "") -> VerdictRow:
    defined = POLICIES[policy]
    return VerdictRow(n, policy, "C", group, outcome, value, threshold, defined.condition, defined.window,
                      0 if value is None else 1, at(seconds), reason, action)


def chain(events: list[tuple[float, str, str, dict]], first_seq: int = 7) -> tuple[AuditRow, ...]:
    """(seconds, actor, kind, payload) as consecutive links of a hash chain."""
    rows, prev = [], sha256_hex("the events before the excerpt")
    for n, (seconds, actor, kind, payload) in enumerate(events):
        seq, text = first_seq + n, canonical_json(payload)
        digest = event_hash(prev, seq=seq, ts=at(seconds), actor=actor, kind=kind, subject="rollout:3",
                            release="2.0.0", symbol=None, payload=text)
        rows.append(AuditRow(seq, at(seconds), actor, kind, "rollout:3", "2.0.0", None, text, prev, digest))
        prev = digest
    return tuple(rows)


def release(version: str, config: dict, roles: tuple[str, ...], n: int) -> ReleaseRow:
    text = canonical_json(config)
    info = ReleaseInfo(n, version, {"name": "bot"}, "a" * 64, "b" * 64, sha256_hex(text), None, "tester", at(-600))
    return ReleaseRow(info, roles, text)


def rolled_back(tmp_path: Path, **changes) -> Evidence:
    log = tmp_path / "state" / "instances" / "sim-canary" / "output.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("bot 2.0.0 starting\nleverage SOLUSDT set to 10\n")
    pipeline = load_model_text(Pipeline, PIPELINE, "pipeline")
    state = State.from_json({"status": "rolled_back", "stage": 0, "reason": "c-leverage-mismatch-zero failed: 2"})
    info = RolloutInfo(3, "2.0.0", 2, "1.0.0", pipeline.model_dump(mode="json"), state.to_json(), at(0), at(40))
    reason = "c-leverage-mismatch-zero failed: 2 is not == 0"
    steps = tuple(StepRow(n, name, "done", 1, at(20 + n), at(20.5 + n), {"account": "canary", "result": {"ok": n}},
                          None)
                  for n, name in enumerate(("stop_release", "cancel_orders", "positions", "restore_leverage",
                                            "start_previous", "verify_previous")))
    evidence = Evidence.of(
        info,
        releases=(release("2.0.0", {"symbols": {"SOLUSDT": {"leverage": 3}}}, ("candidate",), 2),
                  release("1.0.0", {"symbols": {"SOLUSDT": {"leverage": 3}}, "v": 1}, ("baseline",), 1)),
        stage_runs=(StageRunRow("C", "sim", "canary", "0.02", at(5), at(3605), at(19), "rolled_back"),),
        verdicts=(
            verdict(1, "c-queue-latency-p95", "pass", 6, 0.120, "0.5"),
            verdict(2, "c-bucket-usage-within-allocation", "pass", 6, 0.10, "0.306", (("bucket", "alts"),)),
            verdict(3, "c-queue-latency-p95", "inconclusive", 10, 0.130, "0.5"),
            verdict(4, "c-queue-latency-p95", "pass", 14, 0.180, "0.5"),
            verdict(5, "c-leverage-mismatch-zero", "fail", 18, 2.0, "0", action="rollback", reason="2 is not == 0"),
        ),
        commands=(),
        steps=steps,
        audit=chain([(0, "tester", "rollout.created", {"rollout": 3, "pipeline": "canary", "stages": ["C"]}),
                     (5, "controller", "rollout.transition", {"from": "promoting", "to": "running", "stage": "C",
                                                              "reason": None}),
                     (19, "controller", "rollout.transition", {"from": "running", "to": "rolling_back",
                                                               "stage": "C", "reason": reason}),
                     (19.5, "controller", "rollback.planned", {"trigger": "policy", "reason": reason,
                                                               "steps": ["stop_release canary"]}),
                     (40, "controller", "rollout.transition", {"from": "rolling_back", "to": "rolled_back",
                                                               "stage": "C", "reason": reason})]),
        deployments=(),
        logs=(LogFile("sim-canary", log, log.stat().st_size),),
        policies=dict(POLICIES),
        policy_files=(PolicyFile("C", "stage-c.yaml", "/policies/stage-c.yaml", "c" * 64),),
    )
    return replace(evidence, **changes)
