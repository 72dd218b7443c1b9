"""A feature toggle turned on at a stage with ``toggle: on``, through the daemon on the simulator.

1.0.0 is the baseline on the master account; 1.1.0's manifest declares a toggle. Stage C places it
on the canary account as it is; stage D (``toggle: on``) places it on the master account with the
toggle on, and an operator's rollback puts 1.0.0 back there as its deployment ran. Config-key
form (``bot.stream_prices``, a boolean of the reference bot's, false in both configs): D's snapshot
has the key true; the restored snapshot has it false. Endpoint form (``/toggle/new_sizing``, which
the reference bot serves): the bot is POSTed on at D's start and off before the rollback stops it;
a bot that does not say yes fails D's placement. The report says the form and the state per stage.
"""

from __future__ import annotations

import json

import aiohttp
import yaml
from prometheus_client.parser import text_string_to_metric_families

from controller.demo import CADENCE
from controller.release_files import read_release
from controller.rollout.decide import TERMINAL, Status
from controller.rollout.info import RolloutInfo, create_rollout, get_rollout
from controller.rollout.pipeline import pipeline_from_document
from controller.store.commands import await_ack, submit_command
from controller.store.deployments import get_deployment, live_deployment, rollout_deployments
from controller.store import audit
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


async def promoted_to_d(site, info: RolloutInfo) -> None:
    """Stage C forced through; D placed and running."""
    await site.until(info.id, Status.RUNNING)
    command = await submit_command(site.db, site.clock, rollout_id=info.id, kind="promote", actor="tester",
                                   reason="the test moves on", args={"force": True, "stage": "C"})
    assert (await await_ack(site.db, command.id, timeout=30)).outcome == "accepted"

    async def at_d() -> RolloutInfo | None:
        now = await get_rollout(site.db, info.id)
        assert now.status not in TERMINAL | {Status.ROLLING_BACK, Status.FAILED}, now.state
        return now if (now.status, now.stage.name) == (Status.RUNNING, "D") else None
    await poll(at_d, timeout=60, alive=site.gone, what="stage D to run")


async def feature_enabled(running) -> float | None:
    """The bot's ``strategy_feature_enabled{name="new_sizing"}``, scraped from its metrics address."""
    async with aiohttp.ClientSession() as session, session.get(running.metrics_url) as response:
        text = await response.text()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "strategy_feature_enabled" and sample.labels == {"name": "new_sizing"}:
                return sample.value
    return None


async def toggle_events(site) -> list:
    return [e async for e in audit.query(site.db, audit.AuditFilter(kind="toggle.switched"))]


async def reported_then_rolled_back(site, rollout_id: int, toggle: dict, described: str) -> None:
    """The report documents the candidate's toggle (``toggle``: its form and target; ``described``: how
    the Markdown names it), off in C and on in D; then an operator's rollback ends the rollout rolled back."""
    report = json.loads((await site.ctl("report", CANDIDATE, "--format", "json")).out)
    assert report["toggle"] == {"release": CANDIDATE, **toggle}
    assert {s["name"]: s["toggle"] for s in report["stages"]} == {"C": "off", "D": "on"}
    markdown = (await site.ctl("report", CANDIDATE)).out
    assert f"Release {CANDIDATE}, feature toggle ({described}): C off; D on." in markdown

    rolled = await site.ctl("rollback", CANDIDATE, "--reason", "the new sizing misbehaves")
    assert rolled.code == 0, rolled
    final = await site.until(rollout_id, *(TERMINAL | {Status.FAILED}), timeout=60)
    assert final.status is Status.ROLLED_BACK, final.state


async def test_the_endpoint_form_is_posted_on_at_d_and_off_before_the_rollback_stops_the_bot(tmp_path):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST.read_text() + "toggle:\n  endpoint: /toggle/new_sizing\n")
    async with daemon_on_sim(tmp_path, {PREVIOUS: BOT / "strategy.yaml"}, speed=10.0, cadence=CADENCE,
                             baseline=PREVIOUS) as site:
        candidate = await add_release(site.db, site.clock, read_release(CANDIDATE, manifest, BOT / "strategy.yaml"),
                                      actor="tester")
        pipeline = pipeline_from_document(yaml.safe_load(PIPELINE))
        info = await create_rollout(site.db, site.clock, version=CANDIDATE, pipeline=pipeline, actor="tester")
        await promoted_to_d(site, info)

        canary, master = await rollout_deployments(site.db, info.id)
        # The endpoint form leaves the snapshot as it is: the bot is told instead.
        assert canary.config_sha256 == master.config_sha256 == candidate.release.config_sha256
        deployer = site.daemon.site.deployer("sim")
        on_master = await deployer.status(site.daemon.site.instance("sim", "master"))
        assert await feature_enabled(on_master) == 1.0
        assert await feature_enabled(await deployer.status(site.daemon.site.instance("sim", "canary"))) is None
        (on,) = await toggle_events(site)
        assert on.subject == "account:sim/master" and on.release == CANDIDATE
        assert (on.payload["enabled"], on.payload["ok"], on.payload["status"]) == (True, True, 200)
        assert on.payload["url"].endswith("/toggle/new_sizing") and on.payload["deployment"] == master.id

        await reported_then_rolled_back(site, info.id, {"form": "endpoint", "endpoint": "/toggle/new_sizing"},
                                        "endpoint `POST /toggle/new_sizing`")

        off = [e for e in await toggle_events(site) if e.seq > on.seq]
        # The rollback's own event (subject: the rollout), naming the account.
        assert [(e.subject, e.payload["account"], e.payload["enabled"], e.payload["ok"]) for e in off] == [
            (f"rollout:{info.id}", "master", False, True)]
        assert (await live_deployment(site.db, "sim", "master")).release == PREVIOUS
        assert (await audit.verify(site.db)).ok


async def test_an_endpoint_the_bot_does_not_serve_fails_the_placement_with_the_reason_audited(tmp_path):
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST.read_text() + "toggle:\n  endpoint: /toggle/not/served\n")
    async with daemon_on_sim(tmp_path, {PREVIOUS: BOT / "strategy.yaml"}, speed=10.0, cadence=CADENCE,
                             baseline=PREVIOUS) as site:
        await add_release(site.db, site.clock, read_release(CANDIDATE, manifest, BOT / "strategy.yaml"),
                          actor="tester")
        pipeline = pipeline_from_document(yaml.safe_load(PIPELINE))
        info = await create_rollout(site.db, site.clock, version=CANDIDATE, pipeline=pipeline, actor="tester")
        await site.until(info.id, Status.RUNNING)
        command = await submit_command(site.db, site.clock, rollout_id=info.id, kind="promote", actor="tester",
                                       reason="the test moves on", args={"force": True, "stage": "C"})
        assert (await await_ack(site.db, command.id, timeout=30)).outcome == "accepted"

        final = await site.until(info.id, *(TERMINAL | {Status.FAILED}), timeout=90)
        assert final.status is Status.ROLLED_BACK, final.state
        # Refused at D's start (the placement fails), then again by the rollback, which goes on regardless.
        refused, off = await toggle_events(site)
        assert (refused.subject, refused.payload["enabled"], refused.payload["ok"], refused.payload["status"]) == (
            "account:sim/master", True, False, 404)
        assert (off.subject, off.payload["account"], off.payload["enabled"], off.payload["ok"], off.payload["status"]) \
            == (f"rollout:{info.id}", "master", False, False, 404)
        assert "HTTP 404" in refused.payload["detail"]
        assert "did not turn its feature toggle on: HTTP 404" in final.state.reason, final.state.reason
        assert (await live_deployment(site.db, "sim", "master")).release == PREVIOUS


async def test_the_stage_with_toggle_on_places_the_key_true_and_a_rollback_puts_it_false_again(tmp_path):
    config = tmp_path / "strategy.yaml"
    config.write_text((BOT / "strategy.yaml").read_text() + "\nbot:\n  stream_prices: false\n")
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(MANIFEST.read_text() + "toggle:\n  config_key: bot.stream_prices\n")
    async with daemon_on_sim(tmp_path, {PREVIOUS: config}, speed=10.0, cadence=CADENCE, baseline=PREVIOUS) as site:
        candidate = await add_release(site.db, site.clock, read_release(CANDIDATE, manifest, config), actor="tester")
        pipeline = pipeline_from_document(yaml.safe_load(PIPELINE))
        info = await create_rollout(site.db, site.clock, version=CANDIDATE, pipeline=pipeline, actor="tester")
        await promoted_to_d(site, info)

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

        await reported_then_rolled_back(site, info.id, {"form": "config_key", "config_key": "bot.stream_prices"},
                                        "config key `bot.stream_prices`")

        restored = await live_deployment(site.db, "sim", "master")
        previous = await get_deployment(site.db, master.previous_id)
        assert previous.release == PREVIOUS
        # The previous deployment's exact snapshot, which has the key false.
        assert (restored.release, restored.config_sha256) == (PREVIOUS, previous.config_sha256)
        assert (await get_snapshot(site.db, restored.config_sha256)).config["bot"]["stream_prices"] is False
        bot = await site.daemon.site.deployer("sim").status(site.daemon.site.instance("sim", "master"))
        assert (bot.release, bot.config_sha256) == (PREVIOUS, restored.config_sha256)
