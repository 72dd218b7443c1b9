"""How fast the analysis judges: observations per second into the evaluator, on one core.

DESIGN asks for more than 100 000 events per second in bounded memory. Prints figures; it
asserts nothing (targets live here, not in the test suite).

    make bench            # or: .venv/bin/python bench/analysis.py
"""

from __future__ import annotations

import random
import time
import tracemalloc

from controller.analysis.evaluator import Evaluator
from controller.analysis.observation import Heartbeat, Observation, labels_of
from controller.analysis.policy import PolicyFile
from controller.config.yamlfile import load_model_text

POLICIES = load_model_text(PolicyFile, """\
stage: A
policies:
  - name: instant-max
    checklist: "A: leverage mismatch stays 0"
    source: exchange
    metric: leverage_mismatch
    per: [symbol]
    aggregate: max
    window: 24h
    condition: "== 0"
    on_breach: rollback
  - name: fill-ratio-p99
    checklist: "C: fills sized within their bucket"
    source: exchange
    metric: fill_notional_ratio
    per: [bucket]
    aggregate: p99
    window: 1h
    condition: "<= 1.02"
    for: 5m
    on_breach: rollback
""", "bench.yaml").policies


def run(events: int, symbols: int = 100) -> None:
    rng = random.Random(1)
    labels = [labels_of(symbol=f"SYM{i}USDT", bucket=f"b{i % 4}") for i in range(symbols)]
    items = [Observation("exchange", "leverage_mismatch" if i % 2 else "fill_notional_ratio", labels[i % symbols],
                         0.0 if i % 2 else rng.uniform(0.1, 1.0), 1_800_000_000.0 + i * 0.01) for i in range(events)]
    evaluator = Evaluator(POLICIES)
    evaluator.heartbeat(Heartbeat("exchange", items[-1].ts))
    tracemalloc.start()
    started = time.perf_counter()
    for item in items:
        evaluator.observe(item)
    elapsed = time.perf_counter() - started
    tick_started = time.perf_counter()
    verdicts = evaluator.evaluate(items[-1].ts)
    tick = time.perf_counter() - tick_started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(f"{events:>9} observations over {symbols} symbols: {events / elapsed:>10,.0f} obs/s "
          f"({elapsed / events * 1e6:.2f} us each, instant policies judged inline); full tick {tick * 1e3:.1f} ms; "
          f"peak traced memory {peak / 1e6:.1f} MB; verdicts {[v.outcome.value for v in verdicts]}")


if __name__ == "__main__":
    for n in (20_000, 200_000):
        run(n)
