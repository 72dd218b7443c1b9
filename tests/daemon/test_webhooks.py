"""Rollout events as signed webhooks, received by real aiohttp servers: the body, a signature that
verifies with the secret, retries on a 500; and through the daemon, a rollback that completes while
another webhook's endpoint hangs, and delivery state stored and shown by `canaryctl status` without
the credential a webhook's URL carries in its query."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging

import yaml
from sqlalchemy import text

from controller.config.daemon import WebhookConfig
from controller.daemon.webhooks import Webhooks
from controller.logs import fields_of, shown_url
from controller.rollout.decide import Status
from controller.rollout.info import create_rollout
from controller.rollout.pipeline import pipeline_from_document
from controller.store.commands import submit_command
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, daemon_on_sim
from tests.support.webhook_endpoint import Endpoint

SECRET = "hook-secret-for-tests"


def verifies(body: bytes, header: str) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, header)


async def test_an_event_is_posted_signed_and_retried_after_a_500(monkeypatch):
    monkeypatch.setenv("CANARY_TEST_HOOK", SECRET)
    endpoint = Endpoint([500, 500])
    async with endpoint as url:
        hooks = Webhooks({"sim": [WebhookConfig(url=url, events=["breach"], secret="env:CANARY_TEST_HOOK")]},
                         backoff=0.01)
        await hooks.start()
        try:
            hooks.emit("sim", "promoted", {"rollout": 1})  # not asked for: never sent
            hooks.emit("other", "breach", {"rollout": 1})  # another environment's
            hooks.emit("sim", "breach", {"rollout": 7, "policy": "c-cap"})
            await poll(lambda: asyncio.sleep(0, hooks.deliveries()[0]["ok"]), timeout=10, what="the delivery")
        finally:
            await hooks.stop()
    assert len(endpoint.received) == 3  # two 500s, then the 200
    assert all(verifies(body, header) for body, header in endpoint.received)
    assert endpoint.events()[-1] == {"event": "breach", "rollout": 7, "policy": "c-cap"}
    (delivery,) = hooks.deliveries()
    assert delivery["ok"] is True and delivery["attempts"] == 3 and delivery["failing_since"] is None
    assert SECRET not in json.dumps(delivery)


async def test_an_endpoint_that_always_fails_is_shown_failing_since_its_first_attempt(monkeypatch):
    monkeypatch.setenv("CANARY_TEST_HOOK", SECRET)
    endpoint = Endpoint([500] * 10)
    async with endpoint as url:
        hooks = Webhooks({"sim": [WebhookConfig(url=url, secret="env:CANARY_TEST_HOOK")]}, attempts=3, backoff=0.01)
        await hooks.start()
        try:
            hooks.emit("sim", "rollback_failed", {"rollout": 2})
            await poll(lambda: asyncio.sleep(0, hooks.deliveries()[0]["ok"] is False), timeout=10,
                       what="the delivery to fail")
        finally:
            await hooks.stop()
    (delivery,) = hooks.deliveries()
    assert delivery["attempts"] == 3 and delivery["error"] == "answered 500" and delivery["failing_since"]


async def test_a_rollback_completes_while_a_webhook_endpoint_hangs(tmp_path, monkeypatch):
    monkeypatch.setenv("CANARY_TEST_HOOK", SECRET)
    hanging, listening = Endpoint(hang=True), Endpoint()
    async with hanging as hang_url, listening as url:
        hooks = [{"url": hang_url, "secret": "env:CANARY_TEST_HOOK"},
                 {"url": url, "secret": "env:CANARY_TEST_HOOK"}]
        settings = {"environments": {"sim": {"kind": "sim", "notifications": {"webhooks": hooks}}}}
        releases = {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"}
        async with daemon_on_sim(tmp_path, releases, settings=settings) as site:
            pipeline = pipeline_from_document(yaml.safe_load(CANARY_PIPELINE))
            rollout = await create_rollout(site.db, site.clock, version="1.1.0", pipeline=pipeline, actor="tester")
            await site.until(rollout.id, Status.RUNNING, timeout=60)
            await asyncio.wait_for(hanging.arrived.wait(), 30)  # its drain task now waits on the endpoint
            await submit_command(site.db, site.clock, rollout_id=rollout.id, kind="rollback", actor="tester",
                                 reason="webhook test")
            final = await site.until(rollout.id, Status.ROLLED_BACK, Status.FAILED, timeout=60)
            assert final.status is Status.ROLLED_BACK
            await poll(lambda: asyncio.sleep(0, "rollback_done" in [e["event"] for e in listening.events()]),
                       timeout=30, what="the rollback_done event")
    events = listening.events()
    assert [e["event"] for e in events] == ["stage_started", "rollback_planned", "rollback_done"]
    assert all(verifies(body, header) for body, header in listening.received)
    assert events[1]["rollout"] == rollout.id and events[1]["stage"] == "C" and events[1]["reason"] == "webhook test"
    assert events[1]["evidence"]["report"] == f"canaryctl report render {rollout.id}"
    assert len(hanging.received) == 1  # still on its first event: it slowed nothing


def test_a_webhook_is_shown_without_its_userinfo_query_or_fragment():
    assert shown_url("https://bot:pw@hooks.example.com:8443/canary/in?token=abc&x=1#frag") == \
        "https://hooks.example.com:8443/canary/in"


async def test_delivery_state_is_stored_and_shown_by_status_without_the_token_in_the_url(tmp_path, monkeypatch,
                                                                                          caplog):
    token = "tok-0123456789-never-shown"
    monkeypatch.setenv("CANARY_TEST_HOOK", SECRET)
    failing, listening = Endpoint([503] * 100), Endpoint()
    caplog.set_level(logging.DEBUG)
    async with failing as failing_url, listening as url:
        hooks = [{"url": f"{failing_url}?token={token}", "secret": "env:CANARY_TEST_HOOK"},
                 {"url": f"{url}?token={token}", "secret": "env:CANARY_TEST_HOOK"}]
        settings = {"environments": {"sim": {"kind": "sim", "notifications": {"webhooks": hooks}}}}
        releases = {"1.0.0": BOT / "strategy.yaml", "1.1.0": BOT / "strategy-next.yaml"}
        async with daemon_on_sim(tmp_path, releases, settings=settings) as site:
            pipeline = pipeline_from_document(yaml.safe_load(CANARY_PIPELINE))
            rollout = await create_rollout(site.db, site.clock, version="1.1.0", pipeline=pipeline, actor="tester")
            await site.until(rollout.id, Status.RUNNING, timeout=60)

            async def stored():
                async with site.db.connect() as conn:
                    rows = (await conn.execute(text("SELECT * FROM webhook_deliveries ORDER BY id"))).mappings().all()
                states = {(r["webhook"], r["state"], r["attempts"] >= 2) for r in rows}
                return rows if {(url, "delivered", False), (failing_url, "sending", True)} <= states else None

            rows = await poll(stored, timeout=30, what="a delivery and a failing one in the store")
            document = await site.ctl("status", str(rollout.id), "--json")
            screen = await site.ctl("status", str(rollout.id))
    assert document.code == 0 and screen.code == 0, (document, screen)
    shown = {hook["webhook"]: hook for hook in json.loads(document.out)["rollouts"][0]["webhooks"]}
    assert shown[url]["ok"] is True and shown[url]["event"] == "stage_started" and shown[url]["delivered_at"]
    assert shown[url]["failing_since"] is None and shown[url]["attempts"] == 1
    assert shown[failing_url]["ok"] is False and shown[failing_url]["failing_since"]
    assert shown[failing_url]["last_status"] == 503 and shown[failing_url]["attempts"] >= 2
    assert f"{url} (stage_started): ok, delivered" in screen.out
    assert f"{failing_url} (stage_started): failing since" in screen.out and "answered 503" in screen.out
    assert all(row["rollout_id"] == rollout.id and row["event"] == "stage_started" for row in rows)
    # Every log but the test endpoints' own access log (the receiving side may see its URL).
    logged = [record.getMessage() + json.dumps(fields_of(record), default=str) for record in caplog.records
              if record.name != "aiohttp.access"]
    assert any(failing_url in line for line in logged)  # the failures were logged, by the URL shown
    for where in (document.out, screen.out, json.dumps([dict(r) for r in rows], default=str), *logged):
        assert token not in where and SECRET not in where
