"""A feature toggle turned on at a stage with ``toggle: on``, through the daemon on the simulator.

1.0.0 is the baseline on the master account; 1.1.0's manifest declares ``toggle: {config_key:
bot.stream_prices}`` (a boolean of the reference bot's, false in both configs). Stage C places it on
the canary account with its own snapshot; stage D (``toggle: on``) places it on the master account
with a snapshot that has the key true. An operator's rollback puts 1.0.0 back on the master account
with its own snapshot: the key is false there again. The report says the toggle's state per stage.
"""

from __future__ import annotations

import json

import yaml

from controller.demo import CADENCE
from controller.release_files import read_release
from controller.rollout.decide import TERMINAL, Status
from controller.rollout.info import RolloutInfo, create_rollout, get_rollout
from controller.rollout.pipeline import pipeline_from_document
from controller.store.commands import await_ack, submit_command
from controller.store.deployments import live_deployment, rollout_deployments
from controller.store.releases import add_release, get_snapshot
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, MANIFEST, daemon_on_sim

PREVIOUS, CANDIDATE = "1.0.0", "1.1.0"
PIPELINE = """
name: canary-then-full
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master, positions: flatten}
  - {name: D, environment: sim, account: master, duration: 1h, policies: stage-d.yaml, toggle: on}
"""


async def test_the_stage_with_toggle_on_places_the_key_true_and_a_rollback_puts_it_false_again(tmp_path):
    config = tmp_path / "strategy.yaml"
    config.write_text((BOT / "strategy.yaml").read_text() + "\nbot:\n  stream_prices: false\n")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST.read_text() + "toggle:\n  config_key: bot.stream_prices\n")
    async with daemon_on_sim(tmp_path, {PREVIOUS: config}, speed=10.0, cadence=CADENCE, baseline=PREVIOUS) as site:
        candidate = await add_release(site.db, site.clock, read_release(CANDIDATE, manifest, config), actor="tester")
        pipeline = pipeline_from_document(yaml.safe_load(PIPELINE))
        info = await create_rollout(site.db, site.clock, version=CANDIDATE, pipeline=pipeline, actor="tester")
        await site.until(info.id, Status.RUNNING)
        command = await submit_command(site.db, site.clock, rollout_id=info.id, kind="promote", actor="tester",
                                       reason="the test moves on", args={"force": True, "stage": "C"})
        assert (await await_ack(site.db, command.id, timeout=30)).outcome == "accepted"

        async def at_d() -> RolloutInfo | None:
            now = await get_rollout(site.db, info.id)
            assert now.status not in TERMINAL | {Status.ROLLING_BACK, Status.FAILED}, now.state
            return now if (now.status, now.stage.name) == (Status.RUNNING, "D") else None
        await poll(at_d, timeout=60, alive=site.gone, what="stage D to run")

        canary, master = await rollout_deployments(site.db, info.id)
        assert (canary.account, master.account) == ("canary", "master")
        assert canary.config_sha256 == candidate.release.config_sha256  # stage C: the release's own snapshot
        assert (await get_snapshot(site.db, canary.config_sha256)).config["bot"]["stream_prices"] is False
        placed = (await get_snapshot(site.db, master.config_sha256)).config
        assert placed["bot"]["stream_prices"] is True
        own = (await get_snapshot(site.db, CANDIDATE)).config
        assert {**placed, "bot": {**placed["bot"], "stream_prices": False}} == own  # the toggle is all that differs
        bot = await site.daemon.site.deployer("sim").status(site.daemon.site.instance("sim", "master"))
        assert (bot.release, bot.config_sha256) == (CANDIDATE, master.config_sha256)

        report = json.loads((await site.ctl("report", CANDIDATE, "--format", "json")).out)
        assert report["toggle"] == {"release": CANDIDATE, "config_key": "bot.stream_prices"}
        assert {s["name"]: s["toggle"] for s in report["stages"]} == {"C": "off", "D": "on"}
        markdown = (await site.ctl("report", CANDIDATE)).out
        assert f"Release {CANDIDATE}, feature toggle `bot.stream_prices`: C off; D on." in markdown

        rolled = await site.ctl("rollback", CANDIDATE, "--reason", "the new sizing misbehaves")
        assert rolled.code == 0, rolled
        final = await site.until(info.id, *(TERMINAL | {Status.FAILED}), timeout=60)
        assert final.status is Status.ROLLED_BACK, final.state

        restored = await live_deployment(site.db, "sim", "master")
        assert restored.release == PREVIOUS
        assert (await get_snapshot(site.db, restored.config_sha256)).config["bot"]["stream_prices"] is False
        bot = await site.daemon.site.deployer("sim").status(site.daemon.site.instance("sim", "master"))
        assert (bot.release, bot.config_sha256) == (PREVIOUS, restored.config_sha256)
