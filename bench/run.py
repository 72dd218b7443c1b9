"""`make bench`: every figure of the benchmark, one group of figures after another, one table, one JSON line.

Each group is a module of this folder named for what it measures, exposing
``measure(quick: bool) -> dict[str, float | int | None]``; the groups run in turn (progress on
stderr), then stdout gets a table (figure, value, goal, ok / short) and, as its last line, one
JSON object holding every figure of the table (``null`` when not measured), the machine and the
git commit. A group that raises is reported as failed (its figures ``null``) and the exit status
is 1 once every other group has run. Goals are the issue's and are never lowered here.

    .venv/bin/python bench/run.py [--quick] [--only detect ready ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

GROUPS = (  # run in this order; adding a group is adding its module's name here
    "detect",
    "rollback_safe",
    "ingest",
    "soak",
    "weight",
    "cli_cold",
    "ready",
    "audit_append",
    "takeover",
)

Figures = dict[str, float | int | None]


@dataclass(frozen=True)
class Goal:
    """A figure's goal as the issue writes it; ``met`` answers from every figure (some goals name others)."""

    text: str
    met: Callable[[Figures], bool | None] | None = None  # None: the figure has no pass line


def _below(key: str, bound: Callable[[Figures], float | int | None]) -> Callable[[Figures], bool | None]:
    def met(figures: Figures) -> bool | None:
        limit = bound(figures)
        return None if limit is None else figures[key] <= limit
    return met


def _plus(other: str, extra: float) -> Callable[[Figures], float | None]:
    return lambda figures: None if figures.get(other) is None else figures[other] + extra


def _act_reserve() -> int:
    """The weight a minute only acting may spend, at the daemon's default shares."""
    from controller.clock import RealClock
    from controller.exchange.weights import DEFAULT_ACT_RESERVE, WeightBudget
    return WeightBudget(RealClock(), act_reserve=DEFAULT_ACT_RESERVE).reserved


def _times(other: str, factor: float) -> Callable[[Figures], float | None]:
    return lambda figures: None if figures.get(other) is None else figures[other] * factor


# Every figure of the table, in its order, with its goal (`safe_1acct_p99_ms` is the
# one-account figure the several-account goals are read against, measured the same way).
GOALS: dict[str, Goal] = {
    "detect_exchange_p50_ms": Goal("-"),
    "detect_exchange_p99_ms": Goal("<= 50", _below("detect_exchange_p99_ms", lambda f: 50)),
    "detect_metrics_p99_ms": Goal("<= scrape interval + 50",
                                  _below("detect_metrics_p99_ms", _plus("metrics_scrape_interval_ms", 50))),
    "metrics_scrape_interval_ms": Goal("-"),
    "rollback_safe_p50_ms": Goal("-"),
    "rollback_safe_p99_ms": Goal("<= 250", _below("rollback_safe_p99_ms", lambda f: 250)),
    "rollback_round_trips": Goal("fewer is better"),
    "rollback_weight_per_account": Goal("x 10 accounts <= act reserve",
                                        _below("rollback_weight_per_account", lambda f: _act_reserve() / 10)),
    "rollback_overhead_p99_ms": Goal("<= 50", _below("rollback_overhead_p99_ms", lambda f: 50)),
    "weight_per_min_100sym": Goal("<= 24", _below("weight_per_min_100sym", lambda f: 24)),
    "ingest_events_per_s": Goal(">= 100000", lambda f: f["ingest_events_per_s"] >= 100_000),
    "ingest_floor_events_per_s": Goal("-"),
    "ingest_floor_ratio": Goal("<= 5", _below("ingest_floor_ratio", lambda f: 5)),
    "stage48h_wall_s": Goal("<= 180", _below("stage48h_wall_s", lambda f: 180)),
    "soak_rss_growth_mb": Goal("<= 5", _below("soak_rss_growth_mb", lambda f: 5)),
    "rss_mb": Goal("-"),
    "status_cold_ms": Goal("<= 300", _below("status_cold_ms", lambda f: 300)),
    "cli_cold_max_ms": Goal("<= 300", _below("cli_cold_max_ms", lambda f: 300)),
    "ready_ms": Goal("<= 1000", _below("ready_ms", lambda f: 1000)),
    "safe_1acct_p99_ms": Goal("-"),
    "safe_3acct_p99_ms": Goal("<= 2 x one account", _below("safe_3acct_p99_ms", _times("safe_1acct_p99_ms", 2))),
    "safe_10acct_p99_ms": Goal("<= 2 x one account", _below("safe_10acct_p99_ms", _times("safe_1acct_p99_ms", 2))),
    "takeover_ms": Goal("<= lease + renewal"),
    "takeover_max_ms": Goal("-"),
    "audit_append_per_s": Goal(">= 2000", lambda f: f["audit_append_per_s"] >= 2000),
}

NOT_YET: dict[str, str] = {}
"""Figures no group measures yet, with why."""


def load(name: str) -> ModuleType:
    """The group module ``bench/NAME.py``, loaded from its file (the folder is not a package)."""
    # Under its own name, with its folder on the path: a group's worker processes (spawned) import it again.
    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"no bench group {name!r} ({HERE / f'{name}.py'})")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the module runs
    spec.loader.exec_module(module)
    return module


def run_groups(names: list[str], quick: bool) -> tuple[Figures, dict[str, str], list[str]]:
    """Every figure measured, why each missing one is missing, and the groups that failed."""
    figures: Figures = {}
    reasons: dict[str, str] = {}
    failed: list[str] = []
    for name in names:
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        began = time.monotonic()
        try:
            module = load(name)
            found = module.measure(quick)
        except Exception as exc:  # noqa: BLE001 - one group failing must not hide the others' figures
            traceback.print_exc(file=sys.stderr)
            failed.append(name)
            reasons[name] = f"group {name} failed: {type(exc).__name__}: {exc}"
            print(f"bench: {name} FAILED after {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
            continue
        for key, value in found.items():
            figures[key] = value
            if value is None:  # a group may say why in its module's ``why_not`` (figure -> reason)
                reasons[key] = getattr(module, "why_not", {}).get(key) or f"group {name} measured nothing"
        print(f"bench: {name} done in {time.monotonic() - began:.1f} s", file=sys.stderr, flush=True)
    return figures, reasons, failed


def table(figures: Figures, reasons: dict[str, str], failed: list[str]) -> str:
    """The readable table: figure, value, goal, ok / short (or why it was not measured)."""
    rows = [("figure", "value", "goal", "")]
    for key, goal in GOALS.items():
        value = figures.get(key)
        if value is None:
            why = reasons.get(key) or NOT_YET.get(key) or (
                f"no group measured it; failed: {', '.join(failed)}" if failed
                else "no group measures it yet")
            rows.append((key, "not measured", goal.text, why))
            continue
        verdict = goal.met(figures) if goal.met is not None else None
        rows.append((key, _shown(value), goal.text, "" if verdict is None else "ok" if verdict else "SHORT"))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}".rstrip() for a, b, c, d in rows]
    return "\n".join([*lines, *(reasons[name] for name in failed)])


def _shown(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.1f}"


def machine() -> dict:
    return {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def git() -> dict:
    """The commit measured and whether the work tree differs from it (None: not a git checkout)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout.strip() != ""
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller run, under a minute, for development")
    parser.add_argument("--only", nargs="+", choices=GROUPS, metavar="GROUP",
                        help=f"run these groups only (of {', '.join(GROUPS)})")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # the checkout's controller package, as the test suite sees it
    from controller.logs import configure as configure_logs
    configure_logs(level="error")
    names = [name for name in GROUPS if args.only is None or name in args.only]
    figures, reasons, failed = run_groups(names, args.quick)
    print(table(figures, reasons, failed))
    line = {key: _finite(figures.get(key)) for key in GOALS}
    line |= {key: value for key, value in figures.items() if key not in line}
    line |= {"quick": args.quick, "failed_groups": failed, "machine": machine(), "git": git()}
    print(json.dumps(line))
    return 1 if failed else 0


def _finite(value: float | int | None) -> float | int | None:
    """JSON has no NaN: a figure that is not a number is not measured."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


if __name__ == "__main__":
    sys.exit(main())
