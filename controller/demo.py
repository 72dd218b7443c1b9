"""`canaryctl demo`: the whole product on the embedded default, in under a minute.

A fresh SQLite file, the simulator and the daemon in this process, the reference bot as real
processes. A baseline release is placed on the master account; a healthy release walks the
canary stage to promotion; a release that sets the wrong leverage on one symbol is caught and
rolled back. Everything runs on one accelerated clock; the figures reported are wall time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from controller import shipped
from controller.clock import SimulatedClock
from controller.config.daemon import DaemonConfig
from controller.daemon.service import Daemon, DaemonOptions, Simulators
from controller.release_files import read_release
from controller.rollout.decide import TERMINAL, Status
from controller.rollout.engine import RunnerCadence
from controller.rollout.info import RolloutInfo, create_rollout, get_rollout
from controller.rollout.pipeline import DEFAULT_PIPELINE, load_pipeline
from controller.store import audit
from controller.store.commands import await_ack, submit_command
from controller.store.database import Database, resolve_url
from controller.store.releases import add_release
from controller.store.schema import upgrade

DEMO_PIPELINE = DEFAULT_PIPELINE.with_name("demo.yaml")
CADENCE = RunnerCadence(evaluate=1.0, snapshot=10.0, scrape=5.0, logs=2.0, process=5.0, audit=300.0, command_poll=0.2)
"""Brisk enough for a five-minute stage: snapshots every 10 s give `c-pnl-like-baseline` its 30
samples by the stage's end (at 20 s the healthy stage ran twice its length, waiting for them). The
canary's and the baseline's observers (120-150 weight a minute each, as they log at start) stay
inside observing's 600-a-minute part of the budget, with room for both to connect at each stage's
start."""
ACTOR = "demo-operator"

RELEASES = (  # version, config, role
    ("1.0.0", "strategy.yaml", "baseline"),
    ("1.1.0", "strategy-next.yaml", "healthy candidate"),
    ("1.2.0", "strategy-defect-leverage.yaml", "candidate with a wrong leverage on SOLUSDT"),
)


@dataclass(frozen=True)
class DemoOptions:
    workdir: Path
    speed: float = 10.0
    timeout: float = 120.0  # wall seconds per rollout


async def run_demo(options: DemoOptions, say: Callable[[str], None],
                   simulators: Callable[[SimulatedClock], Simulators]) -> dict:
    started = time.monotonic()
    db_file = options.workdir / "canary.db"
    url = resolve_url(f"sqlite:///{db_file}")
    db = Database(url)
    clock = SimulatedClock(datetime.now(tz=UTC), speed=options.speed)

    def note(text: str) -> None:
        say(f"[{time.monotonic() - started:6.2f}s] {text}")

    try:
        await upgrade(db)
        note(f"fresh database {db_file}; clock {options.speed:g}x real time")
        for version, config, role in RELEASES:
            new = read_release(version, shipped.demo_manifest(), shipped.reference_bot_file(config), role)
            await add_release(db, clock, new, actor=ACTOR)
            note(f"recorded release {version} ({role})")
        config = DaemonConfig.model_validate({"environments": {"sim": {"kind": "sim"}},
                                              "admin": {"port": 0}, "policies_dir": str(shipped.policies_dir())})
        daemon = Daemon(config, db, clock, DaemonOptions(state_dir=options.workdir / "state", cadence=CADENCE,
                                                         stop_releases_on_exit=True),
                        on_event=lambda rollout, text: note(f"rollout {rollout}: {text}"),
                        simulators=simulators(clock))
        daemon_task = asyncio.create_task(daemon.run(), name="demo-daemon")
        try:
            await _wait(daemon.ready.wait(), daemon_task, 30)
            note(f"daemon up: simulator started, admin on 127.0.0.1:{daemon.admin_port}")
            command = await submit_command(db, clock, rollout_id=None, kind="place", actor=ACTOR,
                                                   args={"release": "1.0.0", "environment": "sim",
                                                         "account": "master"})
            placed = await _wait(await_ack(db, command.id, timeout=60), daemon_task, 60)
            note(f"baseline: {placed.message}")
            pipeline = load_pipeline(DEMO_PIPELINE)
            results = []
            for version in ("1.1.0", "1.2.0"):
                info = await create_rollout(db, clock, version=version, pipeline=pipeline, actor=ACTOR)
                note(f"rollout {info.id} of {version} started (pipeline {pipeline.name})")
                final = await _wait(_finished(db, info.id), daemon_task, options.timeout)
                report = daemon.reports.get(info.id)
                results.append(_result(final, report, options.speed))
                note(f"rollout {info.id} of {version}: {final.status.value}")
        finally:
            daemon.request_stop()
            await asyncio.wait_for(daemon_task, timeout=30)
        chain = await audit.verify(db)
        note(f"audit chain: {'intact' if chain.ok else 'BROKEN'} ({chain.checked} events)")
        return {"rollouts": results, "audit_chain_ok": chain.ok, "db": f"sqlite:///{db_file}"}
    finally:
        await db.close()


def _result(info: RolloutInfo, report, speed: float) -> dict:
    rolled_back = info.status is Status.ROLLED_BACK
    detect_ms = rollback_ms = safe_ms = None
    if rolled_back and report is not None:
        if report.detect_seconds is not None:
            detect_ms = round(report.detect_seconds / speed * 1000, 1)
        if report.breach_wall is not None and report.done_wall is not None:
            rollback_ms = round((report.done_wall - report.breach_wall) * 1000, 1)
        if report.breach_wall is not None and report.safe_wall is not None:
            safe_ms = round((report.safe_wall - report.breach_wall) * 1000, 1)
    return {"release": info.release, "outcome": "rolled_back" if rolled_back else info.status.value,
            "policy": report.policy if (rolled_back and report) else None,
            "detect_ms": detect_ms, "rollback_ms": rollback_ms, "safe_ms": safe_ms}


async def _finished(db: Database, rollout_id: int):
    while True:
        info = await get_rollout(db, rollout_id)
        if info.status in TERMINAL or info.status is Status.FAILED:
            return info
        await asyncio.sleep(0.2)


async def _wait(awaitable, daemon_task: asyncio.Task, timeout: float):
    """Await ``awaitable``, unless the daemon dies first (then its error) or time runs out."""
    waiting = asyncio.ensure_future(awaitable)
    done, _ = await asyncio.wait({waiting, daemon_task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    if waiting in done:
        return waiting.result()
    waiting.cancel()
    if daemon_task in done:
        daemon_task.result()
        raise RuntimeError("the daemon stopped before the demo finished")
    raise TimeoutError(f"the demo waited {timeout:.0f} s in vain")
