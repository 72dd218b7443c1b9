"""A 48 h stage of a healthy release on 50 symbols, on the stepped clock: wall time and memory.

The harness (`controller.harness.run`) runs it all in this process: the simulator, the reference
bot (in process) and the daemon's own rollout runner, placement and observers, stage C's policies,
on one `SimulatedClock` that jumps to the next thing that happens. So the resident memory read
from /proc/self/status is this process's, the daemon's part and the simulator's and the bot's
together: ``rss_mb`` at simulated hour 48, ``soak_rss_growth_mb`` that minus hour 1's.
Quick: 2 h on 5 symbols (hour 2 minus hour 1).

    .venv/bin/python bench/soak.py [--quick]     # prints the figures as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

from controller.harness.plan import stage_policies
from controller.harness.run import Harness, HarnessOptions, Progress
from controller.logs import configure as configure_logs
from controller.shipped import policies_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wide_market import simulator, strategy  # noqa: E402  (a sibling module of the benchmarks)

HOUR = 3600.0


def rss_mb() -> float:
    """This process's resident set size (VmRSS), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmRSS line")


def measure(quick: bool) -> dict[str, float | int | None]:
    hours, symbols = (2, 5) if quick else (48, 50)
    staged = stage_policies(policies_dir(), "C")
    options = HarnessOptions(strategy=strategy(symbols), release=f"reference bot ({symbols} symbols)", stage="C",
                             policies=staged.policies, other_policies=staged.others, duration=hours * HOUR)
    samples: list[tuple[float, float]] = []  # (simulated seconds, RSS MB) while the stage runs

    def sample(progress: Progress) -> None:
        if progress.simulated_s < progress.duration_s:
            samples.append((progress.simulated_s, rss_mb()))
            if len(samples) == 1 or progress.simulated_s // (4 * HOUR) > samples[-2][0] // (4 * HOUR):
                print(f"soak: simulated {progress.simulated_s / HOUR:.1f} h of {hours} in {progress.wall_s:.0f} s wall, "
                      f"RSS {samples[-1][1]:.1f} MB", file=sys.stderr, flush=True)

    configure_logs(level="error")
    harness = Harness(options, simulator=simulator(symbols), on_progress=sample, progress_every=0.25)
    started, cpu = time.perf_counter(), time.process_time()
    result = asyncio.run(harness.run())
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    if result.errors or result.simulated_s < options.duration:
        raise SystemExit(f"the soak stage did not run its {hours} h: {result.errors or result.simulated_s}")
    at_one = next((rss for at, rss in samples if at >= HOUR), None)
    at_end = samples[-1] if samples else None
    if at_one is None or at_end is None or at_end[0] < options.duration - 2 * HOUR:
        raise SystemExit(f"too few memory samples to compare hour 1 with hour {hours}: {samples[:3]}...")
    # The stage's 24 h windows fill until hour 24: growth after that is what no window explains.
    half = next((rss for at, rss in samples if at >= options.duration / 2), at_end[1])
    breached = sorted({breach.verdict.policy for breach in result.breaches})
    print(f"soak: {hours} h of stage C on {symbols} symbols in {wall:.0f} s wall, {cpu:.0f} s CPU "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); RSS {at_one:.1f} MB at hour 1, "
          f"{half:.1f} MB at hour {hours / 2:g}, {at_end[1]:.1f} MB at {at_end[0] / HOUR:.1f} h ({len(samples)} samples); "
          f"{len(result.breaches)} breaches {breached}, final verdicts {sorted(set(result.verdicts.values()))}",
          file=sys.stderr)
    # CPU seconds beside the wall: on a shared machine other work lengthens the wall, not the CPU time.
    return {"stage48h_wall_s": round(result.wall_s, 1), "stage48h_cpu_s": round(cpu, 1), "soak_rss_growth_mb": round(at_end[1] - at_one, 1),
            "rss_mb": round(at_end[1], 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 h on 5 symbols (development)")
    print(json.dumps(measure(parser.parse_args().quick)))
