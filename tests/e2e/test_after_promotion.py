"""No unwatched account: after a promotion the previous stage's account is either still verified
(``after_promotion: watch``, the default) or its release is stopped (``stop``).

The daemon runs in this process on the embedded simulator (clock 10x) with the shipped policies:
1.0.0 is the baseline on the master account, 1.1.0 goes through stage C on the canary account and
is promoted (by force, audited) to stage D on the master account. Then:

- watch: someone changes a leverage on the CANARY account through python-binance; stage C's
  policy on that account rolls the whole rollout back, and both accounts end at 1.0.0's settings;
- stop: once stage D is placed no bot runs on the canary account (the deployer and /proc say so),
  and its deployment is closed, audited.
"""

from __future__ import annotations

import yaml

from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model
from controller.procfs import ProcessStat, read_stat
from controller.rollout.decide import TERMINAL, Status
from controller.rollout.info import RolloutInfo, create_rollout, get_rollout
from controller.rollout.pipeline import pipeline_from_document
from controller.store import audit
from controller.store.commands import await_ack, submit_command
from controller.store.deployments import live_deployment
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, Running, daemon_on_sim
from tests.support.clients import binance_client

PREVIOUS, CANDIDATE = "1.0.0", "1.1.0"
RELEASES = {PREVIOUS: BOT / "strategy.yaml", CANDIDATE: BOT / "strategy-next.yaml"}
PIPELINE = """
name: canary-then-full
stages:
  - {{name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master, positions: flatten, after_promotion: {after}}}
  - {{name: D, environment: sim, account: master, duration: 1h, policies: stage-d.yaml}}
"""


async def promoted_to_d(running: Running, after: str) -> tuple[RolloutInfo, ProcessStat]:
    """A rollout of 1.1.0 at stage C, promoted by force to stage D, which runs; and the process of the
    bot that ran 1.1.0 on the canary account during stage C."""
    pipeline = pipeline_from_document(yaml.safe_load(PIPELINE.format(after=after)))
    info = await create_rollout(running.db, running.clock, version=CANDIDATE, pipeline=pipeline, actor="tester")
    await running.until(info.id, Status.RUNNING)
    bot = await running.daemon.site.deployer("sim").status(running.daemon.site.instance("sim", "canary"))
    assert bot is not None and bot.release == CANDIDATE, bot
    process = read_stat(bot.pid)
    assert process is not None and process.alive, process
    command = await submit_command(running.db, running.clock, rollout_id=info.id, kind="promote", actor="tester",
                                   reason="the test moves on", args={"force": True, "stage": "C"})
    answer = await await_ack(running.db, command.id, timeout=30)
    assert answer.outcome == "accepted", answer

    async def at_d() -> RolloutInfo | None:
        now = await get_rollout(running.db, info.id)
        assert now.status not in TERMINAL | {Status.ROLLING_BACK, Status.FAILED}, now.state
        return now if (now.status, now.stage.name) == (Status.RUNNING, "D") else None
    return await poll(at_d, timeout=60, alive=running.gone, what="stage D to run"), process


async def settings(running: Running, account: str) -> dict[str, tuple[int, str]]:
    """Leverage and margin type per symbol, as python-binance reads them from the exchange."""
    async with binance_client(running.simulators.started["sim"], account) as client:
        return {c["symbol"]: (int(c["leverage"]), c["marginType"]) for c in await client.futures_symbol_config()}


async def test_a_breach_on_the_watched_first_account_rolls_the_rollout_back(tmp_path):
    async with daemon_on_sim(tmp_path, RELEASES) as running:
        info, _ = await promoted_to_d(running, "watch")
        async with binance_client(running.simulators.started["sim"], "canary") as canary:
            await canary.futures_change_leverage(symbol="BTCUSDT", leverage=9)  # 1.1.0 says 5

        final = await running.until(info.id, *TERMINAL, Status.FAILED, timeout=60)
        assert final.status is Status.ROLLED_BACK, final.state
        assert final.state.reason.startswith("c-exchange-leverage-matches-config failed: on sim/canary "), \
            final.state.reason
        assert (await live_deployment(running.db, "sim", "canary")).release == PREVIOUS
        assert (await live_deployment(running.db, "sim", "master")).release == PREVIOUS
        previous = {s: (c.leverage, c.margin_type)
                    for s, c in load_model(StrategyConfig, RELEASES[PREVIOUS]).symbols.items()}
        for account in ("canary", "master"):
            applied = await settings(running, account)
            assert {s: applied[s] for s in previous} == previous, account
        assert (await audit.verify(running.db)).ok


async def test_a_stopped_first_account_runs_no_bot_once_the_next_stage_is_placed(tmp_path):
    async with daemon_on_sim(tmp_path, RELEASES) as running:
        deployer, instance = running.daemon.site.deployer("sim"), running.daemon.site.instance("sim", "canary")
        info, bot = await promoted_to_d(running, "stop")
        assert await deployer.status(instance) is None
        now = read_stat(bot.pid)
        assert now is None or not now.alive or now.start_ticks != bot.start_ticks, now  # gone (or its pid reused)
        assert await live_deployment(running.db, "sim", "canary") is None
        [stopped] = [r async for r in audit.query(running.db, audit.AuditFilter(kind="deploy.stopped"))
                     if r.payload["instance"] == instance]
        assert "after_promotion: stop" in stopped.payload["reason"], stopped.payload
        assert (await get_rollout(running.db, info.id)).status is Status.RUNNING


async def test_a_runner_started_again_watches_the_first_account_again(tmp_path):
    async with daemon_on_sim(tmp_path, RELEASES) as running:
        info, _ = await promoted_to_d(running, "watch")
        first, _ = running.daemon.runners[info.id]
        first.stop()  # the runner ends; the daemon starts another, which resumes from the store

        async def resumed():
            again = running.daemon.runners.get(info.id)
            return again[0] if again is not None and again[0] is not first and again[0].verifying else None
        runner = await poll(resumed, timeout=30, alive=running.gone, what="a new runner verifying stage D")

        async def watching() -> bool:
            return runner.verification_down() is None
        await poll(watching, timeout=30, alive=running.gone, what="the canary account watched again")
        async with binance_client(running.simulators.started["sim"], "canary") as canary:
            await canary.futures_change_leverage(symbol="BTCUSDT", leverage=9)
        final = await running.until(info.id, *TERMINAL, Status.FAILED, timeout=60)
        assert final.status is Status.ROLLED_BACK, final.state
        assert "on sim/canary (watched since stage C was promoted)" in final.state.reason, final.state.reason
