"""The harness places and rolls back through the daemon's own code: each placement a rollout of the
real runner, each catch undone by the real rollback plan, back to the release under test."""

from __future__ import annotations

import pytest

from controller import shipped
from controller.harness.faults import load_schedule
from controller.harness.plan import stage_policies
from controller.harness.release import limit_symbols, load_strategy
from controller.harness.run import UNDER_TEST, Harness, HarnessOptions
from controller.rollout.info import list_rollouts
from controller.rollout.rollback import STEPS, load_plan
from controller.sim import Simulator
from controller.store.database import Database, resolve_url
from tests.support.simulator import requests_to

LEVERAGE = {"b-bot-applied-leverage-equals-config", "b-exchange-leverage-matches-config"}


@pytest.mark.parametrize("stream_prices", [True, False], ids=["streaming (the default)", "polling"])
async def test_a_caught_defect_is_undone_by_the_rollback_plan_which_starts_the_release_under_test_again(
        tmp_path, stream_prices):
    staged = stage_policies(shipped.policies_dir(), "B")
    strategy = limit_symbols(load_strategy(), 2)
    assert strategy.bot == {"stream_prices": True}  # the harness's default for the reference bot
    if not stream_prices:  # the bot's own flag, as a strategy file sets it
        strategy = strategy.model_copy(update={"bot": {"stream_prices": False}})
    options = HarnessOptions(strategy=strategy, release="reference bot", stage="B",
                             policies=staged.policies, other_policies=staged.others, duration=3600.0,
                             faults=tuple(load_schedule("20m:defect=wrong_leverage:ETHUSDT=20")), store=tmp_path)
    simulators: list[Simulator] = []

    def simulator(**settings) -> Simulator:
        simulators.append(Simulator(**settings))
        return simulators[-1]

    result = await Harness(options, simulator=simulator).run()
    assert result.ok, result.to_json()
    assert result.faults[0].caught_by in LEVERAGE and result.releases_placed == 3
    # Streaming, every price the bot traded on came from the stream (a streamed price is fresh for
    # two of the simulator's ticks); polling, every iteration read them over REST.
    polled = requests_to(simulators[0], "GET", "/fapi/v1/premiumIndex")
    assert polled == 0 if stream_prices else polled >= 3600 / options.cadence.bot_interval

    db = Database(resolve_url(f"sqlite:///{tmp_path / 'harness.db'}"))
    try:
        rollouts = sorted(await list_rollouts(db), key=lambda rollout: rollout.id)
        plan = await load_plan(db, rollouts[1].id)
    finally:
        await db.close()
    # The release under test ends its rollout when the faulty release replaces it; the faulty one is
    # rolled back; the release under test, started again by the rollback, is judged until the end.
    assert [(r.release, r.status.value) for r in rollouts] == [
        (UNDER_TEST, "promoted"), ("defect-1", "rolled_back"), (UNDER_TEST, "running")]
    assert [step.name for step in plan] == list(STEPS) and all(step.state == "done" for step in plan)
    start_previous = plan[STEPS.index("start_previous")]
    assert start_previous.detail["release"] == UNDER_TEST
    assert start_previous.detail["result"]["started"] == UNDER_TEST
