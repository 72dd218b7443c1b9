"""The reference bot crashing on its defect, as the shipped policies see it: an unhandled
exception in its log fails "no unhandled exceptions", and its process going away fails "bot
process up" once the breach has lasted. A real bot process on a real simulator."""

from __future__ import annotations

import asyncio
import sys

from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model_text
from controller.observe.logfile import LogFileObserver
from controller.observe.process import ProcessObserver
from controller.verification import Verification
from tests.observe.sample_tracebacks import read
from tests.support.bot_process import SPEED, STRATEGY, exchange_file, strategy_file
from tests.support.checkout import REPO

SHIPPED = {p.name: p for f in load_policies([REPO / "policies"]).values() for p in f.policies}


async def test_a_crashing_release_fails_the_exception_and_process_policies(tmp_path, sim, clock):
    latest = {}
    names = ("a-no-unhandled-exceptions", "c-no-unhandled-exceptions", "d-no-unhandled-exceptions",
             "c-bot-process-up", "d-bot-process-up")
    verification = Verification(policies=[SHIPPED[n] for n in names], config=load_model_text(StrategyConfig, STRATEGY, "strategy.yaml"),
                                clock=clock, on_verdicts=lambda vs: latest.update({v.policy: v for v in vs}))
    log_file = tmp_path / "bot.log"
    log_file.write_text("")
    logs = LogFileObserver(log_file, clock=clock, sink=verification.sink)
    config = strategy_file(tmp_path, STRATEGY + "bot:\n  defects:\n    unhandled_exception_after_seconds: 1\n")
    with log_file.open("ab") as output:
        bot = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reference_bot", "--config", str(config), "--exchange",
            str(exchange_file(tmp_path, sim)), "--speed", SPEED, cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL, stderr=output)
        process = ProcessObserver(clock=clock, sink=verification.sink,
                                  pid_source=lambda: bot.pid if bot.returncode is None else None)
        assert await process.read_once() is not None
        await read(logs)
        verification.evaluate()
        assert all(latest[n].outcome is Outcome.PASS for n in names)
        assert await asyncio.wait_for(bot.wait(), timeout=30) == 1
    await read(logs)
    await process.read_once()
    verification.evaluate()
    for stage in "acd":
        crashed = latest[f"{stage}-no-unhandled-exceptions"]
        assert crashed.outcome is Outcome.FAIL and crashed.action == "rollback" and crashed.value == 1
    assert latest["c-bot-process-up"].breaching_since is not None
    clock.advance(SHIPPED["c-bot-process-up"].for_ + 1)
    await process.read_once()
    await read(logs)
    verification.evaluate()
    for stage in "cd":
        down = latest[f"{stage}-bot-process-up"]
        assert down.outcome is Outcome.FAIL and down.value == 0 and down.action == "rollback"

