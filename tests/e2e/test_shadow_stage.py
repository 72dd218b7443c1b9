"""Shadow stages through the daemon on the simulator: the release holds the account's read-only
key, the exchange refuses whatever order it sends, and the shipped shadow policies
(policies/stage-c-shadow.yaml) verify from the exchange's record that nothing was placed or filled.

1.0.0 is the baseline on the master account; 2.0.0 goes to the empty canary account in a stage
``C-shadow`` (``mode: shadow``), alone or followed by the trading stage C on the same account.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from sqlalchemy import select

from controller.config.yamlfile import load_model_text
from controller.demo import CADENCE
from controller.rollout.decide import TERMINAL, Status
from controller.rollout.info import create_rollout
from controller.rollout.pipeline import Pipeline
from controller.store import audit
from controller.store.deployments import live_deployment
from controller.store.models import Deployment
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, Running, daemon_on_sim

HEALTHY = BOT / "strategy.yaml"
PREVIOUS, CANDIDATE = "1.0.0", "2.0.0"
SHADOW_ONLY = """
name: shadow
stages:
  - {name: C-shadow, environment: sim, account: canary, mode: shadow, duration: 2m,
     policies: stage-c-shadow.yaml, baseline: master, positions: flatten, progress_deadline: 10m}
"""
SHADOW_THEN_TRADE = SHADOW_ONLY + """
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master, positions: flatten}
"""
TRADING = {"/fapi/v1/order", "/fapi/v1/allOpenOrders", "/fapi/v1/leverage", "/fapi/v1/marginType"}


def release(tmp_path: Path, defects: str | None) -> Path:
    if defects is None:
        return HEALTHY
    path = tmp_path / "strategy-candidate.yaml"
    path.write_text(f"{HEALTHY.read_text()}\nbot:\n  defects:\n{textwrap.indent(defects, '    ')}\n")
    return path


async def start(site: Running, pipeline: str) -> int:
    return (await create_rollout(site.db, site.clock, version=CANDIDATE,
                                 pipeline=load_model_text(Pipeline, pipeline, "pipeline"), actor="tester")).id


def requests_of(site: Running, key: str) -> list:
    sim = site.simulators.started["sim"]
    return [r for r in sim.requests if r.account == "canary" and r.key == key]


async def audits(site: Running, kind: str) -> list:
    return [r async for r in audit.query(site.db, audit.AuditFilter(kind=kind))]


async def test_a_healthy_release_passes_its_shadow_stage_and_no_order_reaches_the_exchange(tmp_path):
    async with daemon_on_sim(tmp_path, {PREVIOUS: HEALTHY, CANDIDATE: HEALTHY}, speed=10.0, cadence=CADENCE,
                             baseline=PREVIOUS) as site:
        rollout_id = await start(site, SHADOW_ONLY)
        final = await site.until(rollout_id, *(TERMINAL | {Status.FAILED}), timeout=60)
        sim = site.simulators.started["sim"]

        assert final.status is Status.PROMOTED, final.state
        read_only = requests_of(site, "read-only")
        assert read_only, "the release read the account with its read-only key"
        assert [r for r in read_only if r.path in TRADING] == []  # the release tried no order at all
        assert [o for o in sim.engine.orders.values() if o.account == "canary"] == []
        # The placement itself set the config's leverage with the controller's trading key.
        assert {r.path for r in requests_of(site, "trading") if r.method == "POST"} >= {"/fapi/v1/leverage"}


async def test_a_release_that_trades_in_shadow_is_refused_by_the_exchange_and_rolled_back_once_an_order_lands(
        tmp_path):
    candidate = release(tmp_path, "trades_in_shadow: true")
    async with daemon_on_sim(tmp_path, {PREVIOUS: HEALTHY, CANDIDATE: candidate}, speed=10.0, cadence=CADENCE,
                             baseline=PREVIOUS) as site:
        sim = site.simulators.started["sim"]
        rollout_id = await start(site, SHADOW_THEN_TRADE)

        async def refused():
            found = [r for r in requests_of(site, "read-only") if r.path == "/fapi/v1/order"]
            return found if len(found) >= 3 else None

        orders = await poll(refused, timeout=30, alive=site.gone, what="the release's orders to be refused")
        assert {(r.method, r.status, r.code) for r in orders} == {("POST", 401, -2015)}
        assert [o for o in sim.engine.orders.values() if o.account == "canary"] == []

        # The operator widens the shadow key while the stage runs: the next order lands, and the
        # exchange's record fails the shadow policy.
        sim.set_api_rights("canary", "read-only", enableFutures=True)
        final = await site.until(rollout_id, *(TERMINAL | {Status.FAILED}), timeout=60)

        assert final.status is Status.ROLLED_BACK, final.state
        [breach] = [e for e in await audits(site, "rollout.transition") if e.payload["to"] == "rolling_back"]
        assert breach.payload["reason"].split(" ")[0] in {"cs-no-order-placed", "cs-no-fill"}, breach.payload
        assert (await live_deployment(site.db, "sim", "canary")).release == PREVIOUS


async def test_a_shadow_key_that_can_trade_is_refused_before_the_placement(tmp_path):
    async with daemon_on_sim(tmp_path, {PREVIOUS: HEALTHY, CANDIDATE: HEALTHY}, speed=10.0, cadence=CADENCE,
                             baseline=PREVIOUS) as site:
        site.simulators.started["sim"].set_api_rights("canary", "read-only", enableFutures=True)
        rollout_id = await start(site, SHADOW_ONLY)

        async def refusal():
            return await audits(site, "deploy.key_refused") or None

        refused = (await poll(refusal, timeout=30, alive=site.gone, what="the shadow key to be refused"))[0]
        assert refused.subject == "account:sim/canary" and refused.release == CANDIDATE
        assert refused.payload["key"] == "shadow"
        assert refused.payload["problems"] == ["it can trade USD-M futures (enableFutures): a shadow key must only "
                                               "read, so that the exchange refuses the release's orders"]
        async with site.db.read() as session:
            placed = (await session.execute(select(Deployment).where(Deployment.rollout_id == rollout_id))).all()
        assert placed == []  # refused before any intent: the account was not touched
        assert requests_of(site, "read-only") and all(r.path == "/sapi/v1/account/apiRestrictions"
                                                      for r in requests_of(site, "read-only"))
