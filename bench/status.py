"""How fast `canaryctl status` answers from a cold start on the default SQLite store.

The issue asks for under 300 ms. Each figure is a fresh process (`python -m controller status`,
no --db: the default store under $XDG_STATE_HOME), timed from spawn to exit. The store is the
one `canaryctl demo` leaves (a promoted and a rolled-back rollout, with every verdict change and
rollback step the daemon wrote), then the same with its verdict history copied until it holds
VERDICTS rows, as a long stage would. For scale, the interpreter alone and a command on the
SQLAlchemy path (`rollout list`) are timed too. Prints figures; asserts nothing.

    make bench            # or: .venv/bin/python bench/status.py [--runs 20] [--verdicts 50000]
"""

from __future__ import annotations

import argparse
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_MS = 300


def cold_runs(args: list[str], env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    """Wall and CPU (user + system) milliseconds of each run. CPU time does not grow when other
    work shares the cores; wall time does, so both are printed."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        walls.append((time.perf_counter() - started) * 1000)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append((after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode()[-500:]}")
    return walls, cpus


def report(label: str, figures: tuple[list[float], list[float]]) -> None:
    walls, cpus = sorted(figures[0]), figures[1]
    p90 = walls[min(len(walls) - 1, round(0.9 * (len(walls) - 1)))]
    print(f"  {label:<48} wall min {walls[0]:6.1f}  median {statistics.median(walls):6.1f}  p90 {p90:6.1f}"
          f"   cpu median {statistics.median(cpus):6.1f} ms")


def inflate(db_file: Path, rows: int) -> int:
    """Copy the verdict history (same rollouts and stage runs, later ids) until it has ``rows`` rows."""
    with sqlite3.connect(db_file) as conn:
        columns = "rollout_id, stage_run_id, policy, verdict, value, threshold, window_seconds, samples, " \
                  "evaluated_at, evidence"
        while (count := conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]) < rows:
            conn.execute(f"INSERT INTO verdicts ({columns}) SELECT {columns} FROM verdicts ORDER BY id "
                         f"LIMIT {rows - count}")
        return conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="cold starts per figure")
    parser.add_argument("--verdicts", type=int, default=50_000, help="verdict rows of the inflated store")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="canary-bench-status-") as state:
        env = {k: v for k, v in os.environ.items() if k not in ("CANARY_DB", "CANARY_CONFIG")}
        env["XDG_STATE_HOME"] = state
        folder = Path(state) / "canary-controller"  # where the default store is: the demo writes there
        print("building the store with `canaryctl demo` (about half a minute) ...", flush=True)
        demo = subprocess.run([sys.executable, "-m", "controller", "demo", "--workdir", str(folder)], env=env,
                              capture_output=True, text=True)
        if demo.returncode != 0:
            raise SystemExit(f"canaryctl demo failed: {demo.stderr[-1000:]}")
        db_file = folder / "canary.db"
        with sqlite3.connect(db_file) as conn:
            verdicts = conn.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

        print(f"canaryctl status, cold start, {options.runs} runs each (budget {BUDGET_MS} ms wall; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores):")
        report("python -c pass (the interpreter alone)", cold_runs(["-c", "pass"], env, options.runs))
        report("canaryctl --help", cold_runs(["-m", "controller", "--help"], env, options.runs))
        report(f"canaryctl status ({verdicts} verdict rows)", cold_runs(["-m", "controller", "status"], env,
                                                                         options.runs))
        report("canaryctl status --json", cold_runs(["-m", "controller", "status", "--json"], env, options.runs))
        inflated = inflate(db_file, options.verdicts)
        report(f"canaryctl status ({inflated} verdict rows)", cold_runs(["-m", "controller", "status"], env,
                                                                         options.runs))
        report("canaryctl rollout list (SQLAlchemy async path)", cold_runs(["-m", "controller", "rollout", "list"],
                                                                           env, options.runs))


if __name__ == "__main__":
    main()
