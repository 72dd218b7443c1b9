"""The artifact is hashed again when its release is placed: one changed after `release add` is
refused before anything changes on the account, the rollout rolls back through its placement
failure, and the audit names both digests. Recording, starting and reading the audit go through
real `canaryctl` processes; the daemon runs in this process on the simulator.
"""

from __future__ import annotations

import json

from controller.artifact import artifact_sha256
from controller.rollout.decide import Status
from controller.rollout.info import get_rollout
from controller.store.deployments import rollout_deployments
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, MANIFEST, daemon_on_sim

SPEED = 10.0


def path_manifest(folder):
    """The demo manifest with its artifact given as a folder beside it (what the bot runs is still the
    installed reference bot: the folder stands for the code a release ships)."""
    bot = folder / "release" / "bot"
    bot.mkdir(parents=True)
    (bot / "strategy_patch.py").write_text("SPREAD = 0.001\n")
    text = MANIFEST.read_text()
    assert "  package: reference_bot" in text
    manifest = folder / "release" / "manifest.yaml"
    manifest.write_text(text.replace("  package: reference_bot", "  path: bot"))
    return manifest, bot


async def test_an_artifact_changed_after_release_add_refuses_the_placement_and_the_rollout_rolls_back(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(CANARY_PIPELINE)
    manifest, bot = path_manifest(tmp_path)
    async with daemon_on_sim(tmp_path, {"1.0.0": BOT / "strategy.yaml"}, speed=SPEED) as site:
        added = await site.ctl("release", "add", "1.1.0", "--manifest", str(manifest), "--config",
                               str(BOT / "strategy-next.yaml"), "--json")
        assert added.code == 0, added
        recorded = json.loads(added.out)["artifact_sha256"]
        (bot / "strategy_patch.py").write_text("SPREAD = 0.5  # swapped after review\n")
        found = artifact_sha256(bot)
        assert found != recorded

        started = await site.ctl("rollout", "start", "1.1.0", "--pipeline", str(tmp_path / "pipeline.yaml"))
        assert started.code == 0, started
        rollout = (await get_rollout(site.db, "1.1.0")).id
        info = await site.until(rollout, Status.ROLLED_BACK, Status.FAILED)
        assert info.status is Status.ROLLED_BACK, info.state.reason
        assert "placing stage C failed" in info.state.reason and recorded in info.state.reason
        assert await rollout_deployments(site.db, rollout) == []  # refused before its intent
        running = await site.daemon.site.deployer("sim").status(site.daemon.site.instance("sim", "canary"))
        assert running is None or running.release != "1.1.0"

        query = await site.ctl("audit", "query", "--kind", "deploy.artifact_changed", "--json")
        assert query.code == 0, query
        events = [json.loads(line) for line in query.out.splitlines()]
        assert len(events) == 1
        assert events[0]["release"] == "1.1.0" and events[0]["subject"] == "account:sim/canary"
        assert events[0]["payload"]["recorded_sha256"] == recorded
        assert events[0]["payload"]["found_sha256"] == found
        assert events[0]["payload"]["artifact"] == {"path": str(bot)}


async def test_an_unchanged_path_artifact_is_placed(tmp_path):
    (tmp_path / "pipeline.yaml").write_text(CANARY_PIPELINE)
    manifest, _ = path_manifest(tmp_path)
    async with daemon_on_sim(tmp_path, {"1.0.0": BOT / "strategy.yaml"}, speed=SPEED) as site:
        added = await site.ctl("release", "add", "1.1.0", "--manifest", str(manifest), "--config",
                               str(BOT / "strategy-next.yaml"))
        assert added.code == 0, added
        started = await site.ctl("rollout", "start", "1.1.0", "--pipeline", str(tmp_path / "pipeline.yaml"))
        assert started.code == 0, started
        rollout = (await get_rollout(site.db, "1.1.0")).id
        await site.until(rollout, Status.RUNNING)
        query = await site.ctl("audit", "query", "--kind", "deploy.artifact_changed", "--json")
        assert query.code == 0 and query.out == "", query


async def test_a_baseline_whose_artifact_changed_is_refused_with_both_digests(tmp_path):
    manifest, bot = path_manifest(tmp_path)
    async with daemon_on_sim(tmp_path, {"1.0.0": BOT / "strategy.yaml"}, speed=SPEED) as site:
        added = await site.ctl("release", "add", "1.1.0", "--manifest", str(manifest), "--config",
                               str(BOT / "strategy-next.yaml"), "--json")
        assert added.code == 0, added
        recorded = json.loads(added.out)["artifact_sha256"]
        (bot / "strategy_patch.py").unlink()
        placed = await site.ctl("baseline", "1.1.0", "--account", "canary")
        assert placed.code == 1, placed
        assert f"recorded with SHA-256 {recorded}, it now has {artifact_sha256(bot)}" in placed.out + placed.err
        running = await site.daemon.site.deployer("sim").status(site.daemon.site.instance("sim", "canary"))
        assert running is None
