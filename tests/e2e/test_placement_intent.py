"""Placement writes its intent, with the account's exchange settings, before it changes anything;
a rollback puts back exactly what the account had.

- A release that cannot start (its command exits during start-up): the previous release runs
  again on the canary account, alone, at the leverage and margin type every symbol had, and the
  rollout says ``place_failed -> rolling_back -> rolled_back`` with the cause.
- A release that added a symbol the previous one does not trade: the rollback sets that symbol
  back to what the account had before the placement, not to some config's idea of it.
- No previous release at all: the rollback cancels the orders, flattens the positions (even
  with ``positions: keep``: no bot is left to manage them), restores the settings, leaves the
  account empty and says so.

The daemon runs in this process on the embedded simulator (clock 10x). The account's final state
is read back with python-binance itself, not through the controller's client.
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest
from binance import AsyncClient

from controller.clock import Clock
from controller.config.strategy import StrategyConfig
from controller.deploy.base import DeployError
from controller.config.yamlfile import load_model, load_model_text
from controller.release_files import read_release
from controller.rollout.decide import TERMINAL, Status
from controller.rollout import placing
from controller.rollout.info import create_rollout
from controller.rollout.pipeline import Pipeline
from controller.rollout.rollback import load_plan
from controller.sim import Simulator
from controller.store import audit
from controller.store.commands import submit_command
from controller.store.deployments import live_deployment
from controller.store.releases import add_release
from tests.daemon.harness import bots_in
from tests.daemon.inprocess import BOT, CANARY_PIPELINE, MANIFEST, Running, daemon_on_sim

ADDED = "ADAUSDT"
"""The symbol 2.0.0 adds: neither 1.0.0 nor the account's history trades it."""
BEFORE = {ADDED: (7, "CROSSED")}
"""What the canary account holds for the added symbol before any placement (set by hand)."""
EMPTY_PIPELINE = """
name: no-previous
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, positions: keep}
"""
"""Stage C alone on the canary account, with no baseline: the rollout has no previous release."""


class ExchangeView:
    """The account as python-binance reads it, with request times on the simulator's clock."""

    def __init__(self, sim: Simulator, clock: Clock, account: str) -> None:
        keys = sim.accounts[account]
        self.clock = clock
        self.client = AsyncClient(keys.api_key, keys.api_secret)
        self.client.FUTURES_URL = sim.rest_url

    def _stamp(self) -> AsyncClient:
        self.client.timestamp_offset = int((self.clock.time() - time.time()) * 1000)
        return self.client

    async def settings(self, symbols) -> dict[str, tuple[int, str]]:
        found = {s["symbol"]: (int(s["leverage"]), s["marginType"].upper())
                 for s in await self._stamp().futures_symbol_config()}
        return {s: found[s] for s in sorted(symbols)}

    async def set(self, symbol: str, leverage: int, margin_type: str) -> None:
        if (await self.settings([symbol]))[symbol][1] != margin_type:  # else Binance answers -4046
            await self._stamp().futures_change_margin_type(symbol=symbol, marginType=margin_type)
        await self._stamp().futures_change_leverage(symbol=symbol, leverage=leverage)

    async def open_orders(self, symbols) -> list[dict]:
        return [o for s in sorted(symbols) for o in await self._stamp().futures_get_open_orders(symbol=s)]

    async def positions(self, symbols) -> dict[str, Decimal]:
        held = {p["symbol"]: Decimal(p["positionAmt"]) for p in await self._stamp().futures_position_information()}
        return {s: held[s] for s in sorted(symbols) if held.get(s, 0) != 0}

    async def order(self, **params) -> dict:
        return await self._stamp().futures_create_order(**params)

    async def close(self) -> None:
        await self.client.close_connection()


def wider_strategy(folder: Path) -> Path:
    """The reference strategy with ADAUSDT added (leverage 4, isolated) and SOLUSDT at leverage 5."""
    text = (BOT / "strategy.yaml").read_text()
    text = text.replace("  SOLUSDT: {leverage: 3, margin_type: ISOLATED}\n",
                        "  SOLUSDT: {leverage: 5, margin_type: ISOLATED}\n"
                        f"  {ADDED}: {{leverage: 4, margin_type: ISOLATED}}\n")
    text = text.replace("symbols: [SOLUSDT, BNBUSDT, XRPUSDT]", f"symbols: [SOLUSDT, BNBUSDT, XRPUSDT, {ADDED}]")
    assert ADDED in text and "leverage: 5, margin_type: ISOLATED" in text
    path = folder / "strategy-wider.yaml"
    path.write_text(text)
    return path


def unstartable_manifest(folder: Path) -> Path:
    """The demo manifest with an option the bot does not know: it exits during start-up (status 2)."""
    text = MANIFEST.read_text().replace('"--interval", "1"]', '"--interval", "1", "--no-such-option"]')
    assert "--no-such-option" in text
    path = folder / "manifest-unstartable.yaml"
    path.write_text(text)
    return path


def symbols_of(*strategies: Path) -> set[str]:
    return {s for strategy in strategies for s in load_model(StrategyConfig, strategy).symbols}


def view(site: Running, account: str = "canary") -> ExchangeView:
    return ExchangeView(site.simulators.started["sim"], site.clock, account)


async def transitions(site: Running, rollout_id: int) -> list[tuple[str, str, str | None]]:
    return [(e.payload["from"], e.payload["to"], e.payload.get("reason"))
            async for e in audit.query(site.db, audit.AuditFilter(kind="rollout.transition"))
            if e.subject == f"rollout:{rollout_id}"]


def instance_folder(site: Running, account: str = "canary") -> Path:
    return site.state / "instances" / f"sim-{account}"


async def test_a_release_that_fails_to_start_puts_the_previous_release_back_as_it_was(tmp_path):
    wider = wider_strategy(tmp_path)
    symbols = symbols_of(wider, BOT / "strategy.yaml")
    async with daemon_on_sim(tmp_path, {"1.0.0": BOT / "strategy.yaml"}) as site:
        placed = await site.ctl("baseline", "1.0.0", "--account", "canary")
        assert placed.code == 0, placed
        await add_release(site.db, site.clock, read_release("2.0.0", unstartable_manifest(tmp_path), wider),
                          actor="tester")
        exchange = view(site)
        try:
            await exchange.set(ADDED, *BEFORE[ADDED])
            before = await exchange.settings(symbols)
            assert before["SOLUSDT"] == (3, "ISOLATED") and before[ADDED] == BEFORE[ADDED]

            pipeline = load_model_text(Pipeline, CANARY_PIPELINE, "pipeline")
            rollout = await create_rollout(site.db, site.clock, version="2.0.0", pipeline=pipeline, actor="tester")
            final = await site.until(rollout.id, *(TERMINAL | {Status.FAILED}), timeout=60)
            assert final.status is Status.ROLLED_BACK, final.state

            # The exchange: every symbol either release names is as it was before the placement.
            assert await exchange.settings(symbols) == before
        finally:
            await exchange.close()

        # Linux: exactly one bot on the account, and it is 1.0.0's.
        deployer = site.daemon.site.deployer("sim")
        running = await deployer.status(site.daemon.site.instance("sim", "canary"))
        assert running is not None and running.release == "1.0.0"
        assert bots_in(instance_folder(site)) == [running.pid], "not exactly one bot on the account"
        assert (await live_deployment(site.db, "sim", "canary")).release == "1.0.0"

        # The store: the cause, and the way there.
        moves = await transitions(site, rollout.id)
        assert [(f, t) for f, t, _ in moves] == [("pending", "promoting"), ("promoting", "rolling_back"),
                                                 ("rolling_back", "rolled_back")]
        cause = moves[1][2]
        assert cause.startswith("placing stage C failed: DeployError: ") and "--no-such-option" in cause, cause
        steps = {s.name: s for s in await load_plan(site.db, rollout.id)}
        assert all(s.state == "done" for s in steps.values()), steps
        assert steps["start_previous"].detail["release"] == "1.0.0"
        assert (await audit.verify(site.db)).ok


async def test_a_symbol_the_release_added_goes_back_to_what_the_account_had(tmp_path):
    wider = wider_strategy(tmp_path)
    symbols = symbols_of(wider, BOT / "strategy.yaml")
    async with daemon_on_sim(tmp_path, {"1.0.0": BOT / "strategy.yaml", "2.0.0": wider}) as site:
        placed = await site.ctl("baseline", "1.0.0", "--account", "canary")
        assert placed.code == 0, placed
        exchange = view(site)
        try:
            await exchange.set(ADDED, *BEFORE[ADDED])
            before = await exchange.settings(symbols)

            pipeline = load_model_text(Pipeline, CANARY_PIPELINE, "pipeline")
            rollout = await create_rollout(site.db, site.clock, version="2.0.0", pipeline=pipeline, actor="tester")
            await site.until(rollout.id, Status.RUNNING)
            assert (await exchange.settings([ADDED]))[ADDED] == (4, "ISOLATED")  # 2.0.0's

            await submit_command(site.db, site.clock, rollout_id=rollout.id, kind="rollback", actor="tester",
                                 reason="added symbol test")
            final = await site.until(rollout.id, *(TERMINAL | {Status.FAILED}), timeout=60)
            assert final.status is Status.ROLLED_BACK, final.state

            assert await exchange.settings(symbols) == before
            assert await exchange.open_orders([ADDED]) == []
            assert await exchange.positions([ADDED]) == {}
        finally:
            await exchange.close()

        running = await site.daemon.site.deployer("sim").status(site.daemon.site.instance("sim", "canary"))
        assert running is not None and running.release == "1.0.0"
        assert bots_in(instance_folder(site)) == [running.pid]
        assert (await audit.verify(site.db)).ok


async def test_with_no_previous_release_the_rollback_leaves_the_account_empty_flat_and_as_it_was(tmp_path):
    wider = wider_strategy(tmp_path)
    symbols = symbols_of(wider, BOT / "strategy.yaml")
    async with daemon_on_sim(tmp_path, {"2.0.0": wider}, baseline=None) as site:
        exchange = view(site)
        try:
            await exchange.set(ADDED, *BEFORE[ADDED])
            await exchange.set("SOLUSDT", 9, "CROSSED")
            before = await exchange.settings(symbols)

            pipeline = load_model_text(Pipeline, EMPTY_PIPELINE, "pipeline")
            rollout = await create_rollout(site.db, site.clock, version="2.0.0", pipeline=pipeline, actor="tester")
            await site.until(rollout.id, Status.RUNNING)
            assert (await exchange.settings(["SOLUSDT"]))["SOLUSDT"] == (5, "ISOLATED")  # 2.0.0's
            # A position and a resting order of the account's, beside whatever the bot holds.
            await exchange.order(symbol="XRPUSDT", side="BUY", type="MARKET", quantity="100")
            await exchange.order(symbol="XRPUSDT", side="BUY", type="LIMIT", timeInForce="GTC", quantity="100",
                                 price="0.5200")
            assert await exchange.positions(["XRPUSDT"]) and await exchange.open_orders(["XRPUSDT"])

            await submit_command(site.db, site.clock, rollout_id=rollout.id, kind="rollback", actor="tester",
                                 reason="no previous release test")
            final = await site.until(rollout.id, *(TERMINAL | {Status.FAILED}), timeout=60)
            assert final.status is Status.ROLLED_BACK, final.state

            assert await exchange.settings(symbols) == before
            assert await exchange.open_orders(symbols) == []
            assert await exchange.positions(symbols) == {}
        finally:
            await exchange.close()

        # No bot, no live deployment: the account is empty, and the rollback says so.
        assert await site.daemon.site.deployer("sim").status(site.daemon.site.instance("sim", "canary")) is None
        assert bots_in(instance_folder(site)) == []
        assert await live_deployment(site.db, "sim", "canary") is None
        steps = {s.name: s for s in await load_plan(site.db, rollout.id)}
        assert steps["positions"].detail["mode"] == "flatten"
        assert steps["start_previous"].detail["result"]["note"] == "no previous release: the account is left empty"
        [empty] = [e async for e in audit.query(site.db, audit.AuditFilter(kind="rollback.account_left_empty"))]
        assert empty.payload["account"] == "canary" and empty.subject == f"rollout:{rollout.id}"
        assert (await audit.verify(site.db)).ok


async def test_a_placement_run_again_goes_on_from_its_intent_and_keeps_the_settings_read_first(tmp_path):
    """A retry (or a resume after a crash) of a placement whose start failed writes no second
    intent, and keeps the settings read before the first attempt changed them."""
    wider = wider_strategy(tmp_path)
    async with daemon_on_sim(tmp_path, {"1.0.0": BOT / "strategy.yaml"}) as site:
        placed = await site.ctl("baseline", "1.0.0", "--account", "canary")
        assert placed.code == 0, placed
        await add_release(site.db, site.clock, read_release("2.0.0", unstartable_manifest(tmp_path), wider),
                          actor="tester")
        previous = await live_deployment(site.db, "sim", "canary")
        for _ in range(2):
            with pytest.raises(DeployError, match="ended during start-up"):
                await placing.place(site.db, site.daemon.site, environment="sim", account="canary",
                                    release="2.0.0", rollout_id=None)
        intents = [e async for e in audit.query(site.db, audit.AuditFilter(kind="deploy.intent"))
                   if e.release == "2.0.0"]
        assert len(intents) == 1
        live = await live_deployment(site.db, "sim", "canary")
        assert (live.id, live.state, live.previous_id) == (intents[0].payload["deployment"], "starting", previous.id)
        assert live.settings_before["symbols"]["SOLUSDT"] == [3, "ISOLATED"]  # 1.0.0's, read before 2.0.0's 5
        assert live.settings_before["symbols"][ADDED] == [20, "CROSSED"]  # never configured: the default
        assert (live.settings_before["position_mode"], live.settings_before["multi_assets"]) == ("one-way", False)
        assert bots_in(instance_folder(site)) == []
