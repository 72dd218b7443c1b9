"""Verification under supervision: one source that fails does not end the others, and its
policies say nodata (never their last pass) until it reads again."""

from __future__ import annotations

import asyncio

from controller.analysis.observation import Heartbeat, Observation
from controller.analysis.policy import PolicyFile
from controller.analysis.verdict import Outcome, Verdict
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model_text
from controller.logs import fields_of
from controller.metrics import ControllerMetrics
from controller.verification import Verification
from tests.support.clocks import make_clock
from tests.support.strategies import STRATEGY

POLICIES = load_model_text(PolicyFile, """\
stage: A
policies:
  - name: mismatch
    checklist: "A: mismatch stays 0"
    source: bot
    metric: strategy_leverage_mismatch_total
    aggregate: max
    window: 1h
    condition: "== 0"
    on_breach: rollback
    on_nodata: {action: hold, stale_after: 1h}
""", "test.yaml").policies


POLICIES_TEXT_PER_SYMBOL = """\
stage: A
policies:
  - name: mismatch-per-symbol
    checklist: "A: mismatch stays 0"
    source: bot
    metric: strategy_leverage_mismatch_total
    per: [symbol]
    aggregate: max
    window: 1h
    condition: "== 0"
    on_breach: rollback
"""


def sample(metrics: ControllerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


async def until(predicate, clock, step: float = 1.0, turns: int = 200) -> None:
    """Advance the simulated clock one step at a time until ``predicate()`` holds."""
    for _ in range(turns):
        if predicate():
            return
        clock.advance(step)
        for _ in range(5):
            await asyncio.sleep(0)
    assert predicate(), "condition not reached"


async def test_a_crashing_source_is_restarted_with_backoff_and_the_others_go_on():
    clock = make_clock()
    metrics = ControllerMetrics()
    verdicts: list[Verdict] = []
    verification = Verification(policies=POLICIES, config=load_model_text(StrategyConfig, STRATEGY, "s.yaml"),
                                clock=clock, on_verdicts=verdicts.extend, metrics=metrics, account="canary")
    starts: list[float] = []
    fed: list[float] = []

    async def exchange() -> None:  # a healthy source: a heartbeat every second
        while True:
            verification.sink(Heartbeat("exchange", clock.time()))
            fed.append(clock.time())
            await clock.sleep(1.0)

    async def bot() -> None:  # reads once, then fails: a bug in the source, not the world
        starts.append(clock.time())
        verification.sink(Heartbeat("bot", clock.time()))
        verification.sink(Observation("bot", "strategy_leverage_mismatch_total", (), 0.0, clock.time()))
        await clock.sleep(0.5)
        raise RuntimeError("parser bug")

    bot.source = "bot"  # what a Source's bound run carries: the name its observations use
    task = asyncio.create_task(verification.run([exchange, bot]))
    try:
        await until(lambda: len(starts) >= 3, clock)
        # The healthy source kept running through the other's crashes.
        assert task.done() is False
        assert fed[-1] >= starts[2] - 1.0
        # Restarts back off: the gap between starts grows.
        assert starts[2] - starts[1] > starts[1] - starts[0]
        assert sample(metrics, "canary_source_restarts_total", account="canary", source="bot") >= 2
        # Between a crash and the next read, its policy is nodata, not its last pass.
        await until(lambda: sample(metrics, "canary_source_up", account="canary", source="bot") == 0, clock,
                    step=0.25)
        assert verdicts[-1].policy == "mismatch"
        assert verdicts[-1].outcome is not Outcome.PASS
        assert sample(metrics, "canary_source_up", account="canary", source="exchange") == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_refused_samples_are_counted_and_a_policy_over_its_series_cap_is_logged_once(caplog):
    from controller.analysis.evaluator import MAX_SERIES_PER_POLICY

    clock = make_clock()
    metrics = ControllerMetrics()
    verdicts: list[Verdict] = []
    per_symbol = load_model_text(PolicyFile, POLICIES_TEXT_PER_SYMBOL, "test.yaml").policies
    verification = Verification(policies=per_symbol, config=load_model_text(StrategyConfig, STRATEGY, "s.yaml"),
                                clock=clock, on_verdicts=verdicts.extend, metrics=metrics, account="canary")
    verification.sink(Heartbeat("bot", clock.time()))
    verification.sink(Observation("bot", "strategy_leverage_mismatch_total", (("symbol", "A"),), float("nan"),
                                  clock.time()))
    verification.sink(Observation("bot", "strategy_leverage_mismatch_total", (("symbol", "A"),), 0.0, clock.time()))
    for n in range(MAX_SERIES_PER_POLICY + 5):  # a label value per order: a cardinality flood
        verification.sink(Observation("bot", "strategy_leverage_mismatch_total", (("symbol", f"S{n}"),), 0.0,
                                      clock.time()))
    verification.evaluate()
    verification.evaluate()
    assert sample(metrics, "canary_observations_rejected_total", reason="nan") == 1
    capped = [r for r in caplog.records if r.getMessage() == "policy_series_capped"]
    assert len(capped) == 1 and fields_of(capped[0])["policy"] == "mismatch-per-symbol"
