"""How fast `canaryctl`'s read commands answer from a cold start, on a store a long rollout leaves.

The issue asks for under 300 ms each. Each figure is a fresh process (`python -m controller ...`
with --db naming a SQLite file), timed from spawn to exit, median of 5 (quick: 2). The store
holds one rollout running stage C (as `canaryctl status` shows it during a stage), 10 000 verdict
changes and 100 000 audit events (quick: 1 000 / 10 000), built fast through the store's own
writers in bulk: the verdicts through `VerdictLog.record`, the audit events hashed onto the chain
by `audit.event_hash` and inserted in one transaction; `audit.verify` then checks the chain, so
the commands read a store the controller would accept. ``status_cold_ms`` is `status --json`;
``cli_cold_max_ms`` the slowest median of `rollout list`, `rollout show`, `release list`,
`audit query --limit 10` and `config show`, each also given under its own key. Wall times, with
the CPU time (user + system) beside the two figures (``*_cpu_ms``): on a shared machine other work
lengthens the first, not the second (the load average is printed to stderr).

    .venv/bin/python bench/cli_cold.py [--quick]     # prints the figures as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select, update

from controller.analysis.verdict import Outcome, Verdict
from controller.canonical import canonical_json
from controller.clock import SimulatedClock
from controller.release_files import read_release
from controller.rollout.decide import State, Status
from controller.rollout.info import create_rollout, save_decision, start_stage_run
from controller.rollout.pipeline import Pipeline
from controller.config.yamlfile import load_model_text
from controller.store import audit
from controller.store.database import Database, resolve_url
from controller.store.deployments import record_placement
from controller.store.models import AuditEvent, AuditHead, VerdictChange
from controller.store.releases import add_release
from controller.store.schema import upgrade
from controller.store.verdicts import VerdictLog

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PIPELINE = """
name: bench
stages:
  - {name: C, environment: sim, account: canary, duration: 48h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master, positions: flatten}
  - {name: D, environment: sim, account: master, duration: 24h, policies: stage-d.yaml}
"""
POLICIES = [f"c-bench-policy-{n:02d}" for n in range(20)]
AUDIT_BATCH = 5000


async def build_store(url: str, verdicts: int, audit_events: int) -> int:
    """The store: 1.0.0 live on sim/master, a rollout of 1.1.0 running stage C on sim/canary with
    ``verdicts`` verdict changes, and the audit chain grown to ``audit_events`` events. Returns the
    rollout's id."""
    db = Database(resolve_url(url))
    try:
        await upgrade(db)
        started_at = datetime.now(tz=UTC) - timedelta(hours=47)
        clock = SimulatedClock(started_at)
        for version in ("1.0.0", "1.1.0"):
            await add_release(db, clock, read_release(version, EXAMPLES / "demo" / "manifest.yaml",
                                                      EXAMPLES / "reference-bot" / "strategy.yaml"), actor="bench")
        await record_placement(db, clock, rollout_id=None, environment="sim", account="master",
                               instance="sim-master", release="1.0.0")
        pipeline = load_model_text(Pipeline, PIPELINE, "pipeline")
        info = await create_rollout(db, clock, version="1.1.0", pipeline=pipeline, actor="bench")
        await record_placement(db, clock, rollout_id=info.id, environment="sim", account="canary",
                               instance="sim-canary", release="1.1.0")
        started = clock.time()
        run_id = await start_stage_run(db, info, 0, started)
        info = await save_decision(db, clock, info, State(Status.RUNNING, 0, started))
        await _verdicts(db, info.id, run_id, started, verdicts)
        await _audit(db, audit_events)
        report = await audit.verify(db)
        if not report.ok or report.checked != audit_events:
            raise SystemExit(f"the benchmark store's audit chain is not valid: {report}")
        return info.id
    finally:
        await db.close()


async def _verdicts(db: Database, rollout_id: int, run_id: int, started: float, count: int) -> None:
    """``count`` verdict changes: each policy flips between pass and fail, a change every ~15 s."""
    log = VerdictLog(db, rollout_id, run_id)
    batch: list[Verdict] = []
    for n in range(count):
        policy = POLICIES[n % len(POLICIES)]
        failing = (n // len(POLICIES)) % 2 == 1
        batch.append(Verdict(policy, Outcome.FAIL if failing else Outcome.PASS, started + 15 * n // len(POLICIES),
                             0.7 if failing else 0.2, 0.5, "< 0.500", 600.0, 30, (), "", "hold" if failing else None))
        if len(batch) == 2000:
            await log.record(batch)
            batch = []
    if batch:
        await log.record(batch)
    async with db.read() as session:
        stored = (await session.execute(select(func.count()).select_from(VerdictChange))).scalar_one()
    if stored < count:
        raise SystemExit(f"the store holds {stored} verdict changes, not the {count} asked for")


async def _audit(db: Database, total: int) -> None:
    """Grow the chain to ``total`` events: each hashed onto the one before by `audit.event_hash`,
    inserted in bulk in one write transaction that also moves the head."""
    async with db.write() as session:
        head = (await session.execute(select(AuditHead))).scalar_one()
        seq, previous = head.seq, head.hash
        ts = datetime.now(tz=UTC) - timedelta(hours=46)
        rows: list[dict] = []
        while seq < total:
            seq += 1
            ts += timedelta(seconds=1)
            event = {"seq": seq, "ts": ts, "actor": "controller", "kind": "verdict.changed", "subject": "rollout 1",
                     "release": "1.1.0", "symbol": None,
                     "payload": canonical_json({"policy": POLICIES[seq % len(POLICIES)], "n": seq})}
            digest = audit.event_hash(previous, **event)
            rows.append({**event, "prev_hash": previous, "hash": digest})
            previous = digest
            if len(rows) == AUDIT_BATCH:
                await session.execute(insert(AuditEvent), rows)
                rows = []
        if rows:
            await session.execute(insert(AuditEvent), rows)
        await session.execute(update(AuditHead).values(seq=seq, hash=previous))


def cold_median(args: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median wall and CPU (user + system) milliseconds of ``runs`` fresh processes of
    ``python -m controller ARGS``. Other work on a shared machine lengthens the wall time, not the CPU time."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "controller", *args], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
        walls.append((time.perf_counter() - started) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"canaryctl {' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return statistics.median(walls), statistics.median(cpus)


def measure(quick: bool) -> dict[str, float | int | None]:
    verdicts, audit_events, runs = (1_000, 10_000, 2) if quick else (10_000, 100_000, 5)
    with tempfile.TemporaryDirectory(prefix="canary-bench-cli-") as folder:
        url = f"sqlite:///{Path(folder) / 'canary.db'}"
        built = time.perf_counter()
        rollout = asyncio.run(build_store(url, verdicts, audit_events))
        print(f"cli: store built in {time.perf_counter() - built:.1f} s ({verdicts} verdict changes, "
              f"{audit_events} audit events, chain verified)", file=sys.stderr)
        env = {k: v for k, v in os.environ.items() if k not in ("CANARY_DB", "CANARY_CONFIG")}
        env["CANARY_DB"] = url
        env["XDG_STATE_HOME"] = folder
        wall, cpu = cold_median(["status", "--json"], env, runs)
        figures: dict[str, float | int | None] = {"status_cold_ms": round(wall, 1), "status_cold_cpu_ms": round(cpu, 1)}
        others = {"rollout_list_cold_ms": ["rollout", "list"], "rollout_show_cold_ms": ["rollout", "show", str(rollout)],
                  "release_list_cold_ms": ["release", "list"],
                  "audit_query_cold_ms": ["audit", "query", "--limit", "10"],
                  "config_show_cold_ms": ["config", "show", "1.1.0"]}
        cpus = []
        for key, args in others.items():
            wall, cpu = cold_median(args, env, runs)
            figures[key] = round(wall, 1)
            cpus.append(round(cpu, 1))
        figures["cli_cold_max_ms"] = max(figures[key] for key in others)
        figures["cli_cold_max_cpu_ms"] = max(cpus)
        print(f"cli: {figures} (median of {runs}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)",
              file=sys.stderr)
        return figures


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller store, median of 2 (development)")
    print(json.dumps(measure(parser.parse_args().quick)))
