"""What watching a canary costs in request weight, on 100 symbols, and that detection stays fast.

The harness (`controller.harness.run`) runs stage C of the reference bot trading 100 symbols on
the simulator, the daemon's own rollout runner watching it with the daemon's default cadence (a
REST snapshot every 30 s, a 1 s tick, a scrape every 15 s). The simulator records every request
with the key that signed it, its User-Agent and the weight it charged; the controller's requests
(User-Agent ``canary-controller``; the bot shares the account's key but not its agent) are summed
per key over the steady state: from half an hour in (the placement and the stream's first full
reconcile are behind) until a defect is injected at 2 h (the bot sets a wrong leverage on the
exchange). ``weight_per_min_100sym`` is their /fapi weight a minute (Binance's limit: 2400 an IP);
``detect_leverage_s`` the simulated seconds from that defect to the policy's verdict.
Quick: 20 symbols, the defect at 45 min, the steady state from 15 min.

    .venv/bin/python bench/weight.py [--quick]     # prints the figures as JSON
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import deque
from pathlib import Path

from controller.exchange.client import USER_AGENT
from controller.harness.faults import parse_schedule
from controller.harness.plan import stage_policies
from controller.harness.run import STATUS_POLL, Cadence, Harness, HarnessOptions
from controller.logs import configure as configure_logs
from controller.rollout.engine import RunnerCadence
from controller.shipped import policies_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from wide_market import simulator, strategy  # noqa: E402  (a sibling module of the benchmarks)


class DaemonCadence(Cadence):
    """The harness's bot, watched at the daemon's default cadence (`RunnerCadence`'s defaults)."""

    evaluate = RunnerCadence.evaluate
    snapshot = RunnerCadence.snapshot
    scrape = RunnerCadence.scrape

    def runner(self) -> RunnerCadence:
        return RunnerCadence(command_poll=STATUS_POLL)


def measure(quick: bool) -> dict[str, float | int | None]:
    symbols, steady_from, fault_at = (20, 15 * 60, 45 * 60) if quick else (100, 30 * 60, 2 * 3600)
    specs = strategy(symbols)
    target = list(specs.symbols)[0]
    staged = stage_policies(policies_dir(), "C")
    faults = parse_schedule(f"{fault_at}s:defect=wrong_leverage:{target}="
                            f"{specs.symbols[target].leverage + 7}")
    options = HarnessOptions(strategy=specs, release=f"reference bot ({symbols} symbols)", stage="C",
                             policies=staged.policies, other_policies=staged.others, faults=tuple(faults),
                             duration=fault_at + 15 * 60, cadence=DaemonCadence())
    made = []

    def new_simulator(**settings):
        sim = simulator(symbols)(**settings)
        sim.requests = deque()  # every request of the run, not the last 10 000
        made.append(sim)
        return sim

    configure_logs(level="error")
    harness = Harness(options, simulator=new_simulator)
    result = asyncio.run(harness.run())
    start = harness.started_at
    steady = [r for r in made[0].requests
              if r.agent.startswith(USER_AGENT) and start + steady_from <= r.time < start + fault_at]
    minutes = (fault_at - steady_from) / 60
    by_key: dict[str, int] = {}
    for record in steady:
        name = f"{record.account}/{record.key}{'' if record.path.startswith('/fapi') else ' (sapi)'}"
        by_key[name] = by_key.get(name, 0) + record.weight
    by_path: dict[str, int] = {}
    for record in steady:
        by_path[f"{record.method} {record.path}"] = by_path.get(f"{record.method} {record.path}", 0) + record.weight
    print(f"weight: by request over the steady state {dict(sorted(by_path.items(), key=lambda kv: -kv[1]))}",
          file=sys.stderr)
    answers: dict[str, int] = {}
    for record in made[0].requests:
        if start + steady_from <= record.time < start + fault_at:
            who = "controller" if record.agent.startswith(USER_AGENT) else "bot"
            answers[f"{who} {record.status}"] = answers.get(f"{who} {record.status}", 0) + 1
    print(f"weight: answers over the steady state, by who asked and HTTP status {answers}; the bot's weight "
          f"{sum(r.weight for r in made[0].requests if not r.agent.startswith(USER_AGENT) and start + steady_from <= r.time < start + fault_at) / minutes:.0f}/min",
          file=sys.stderr)
    fapi = sum(r.weight for r in steady if r.path.startswith("/fapi"))
    caught = result.faults[0] if result.faults else None
    print(f"weight: {symbols} symbols, {len(steady)} controller requests in {minutes:.0f} steady minutes, "
          f"weight by key {by_key}; the defect caught by {caught.caught_by if caught else None} "
          f"({caught.caught_outcome if caught else None}) "
          f"after {caught.detect_s if caught else None} s; run wall {result.wall_s:.0f} s", file=sys.stderr)
    if caught is None or caught.detect_s is None or caught.caught_outcome != "fail":
        raise SystemExit(f"the wrong leverage was not caught by a fail verdict: {caught}")
    return {"weight_per_min_100sym": round(fapi / minutes, 2),
            "weight_sapi_per_min_100sym": round(sum(r.weight for r in steady if not r.path.startswith("/fapi"))
                                                / minutes, 2),
            "detect_leverage_s": round(caught.detect_s, 3)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20 symbols, under an hour simulated (development)")
    print(json.dumps(measure(parser.parse_args().quick)))
