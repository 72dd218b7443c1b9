"""The exchange judges, the bot is a witness: a release whose /metrics always look healthy while
on the exchange it (a) trades a symbol its config does not name, (b) is liquidated, or (c) reports
fills the exchange refused, is rolled back through the daemon's canary stage C by the policy named
for it, seconds of clock after the misdeed, long before the stage's end or its progress deadline.

The release is `tests/support/rogue_bot.py` (python-binance alone), placed by the daemon's process
deployer as any release is; stage C's policies are the shipped ones. The baseline 1.0.0 (the
reference bot) runs on the master account and is what the rollback starts again on the canary.
"""

from __future__ import annotations

import contextlib
import shutil
import textwrap
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

from controller.config.yamlfile import load_model_text
from controller.demo import CADENCE
from controller.release_files import read_release
from controller.rollout.decide import TERMINAL, Status
from controller.rollout.info import create_rollout, get_rollout
from controller.rollout.pipeline import Pipeline
from controller.store import audit
from controller.store.releases import add_release
from tests.daemon.harness import poll
from tests.daemon.inprocess import BOT, Running, daemon_on_sim

ROGUE = Path(__file__).resolve().parents[1] / "support" / "rogue_bot.py"
PREVIOUS, CANDIDATE = "1.0.0", "2.0.0"
SPEED = 10.0
PIPELINE = """
name: exchange-judges
stages:
  - {name: C, environment: sim, account: canary, duration: 1h, policies: stage-c.yaml, capital_cap: 0.02,
     baseline: master, positions: flatten}
"""
STRATEGY = """
symbols:
  BTCUSDT: {leverage: 5, margin_type: ISOLATED}
  ETHUSDT: {leverage: 5}
buckets:
  majors: {allocation: "0.5", symbols: [BTCUSDT, ETHUSDT]}
sizing: {order_fraction: "0.1"}
"""
PROMPT = 20.0
"""Clock seconds from the misdeed to the breach that rolls it back (a scrape, a snapshot, a tick)."""


def manifest(folder: Path, misdeed: str) -> Path:
    """The rogue bot as a release, its script copied beside its manifest (an artifact lies under its
    manifest's folder); ``-I`` keeps the script's folder off sys.path."""
    script = folder / "rogue_bot.py"
    shutil.copyfile(ROGUE, script)
    path = folder / f"rogue-{misdeed}.yaml"
    path.write_text(textwrap.dedent(f"""
        name: rogue-bot
        command: ["{{python}}", "-I", "{script}", "--config", "{{config}}", "--metrics-port", "{{metrics_port}}",
                  "--exchange", "{{exchange_file}}", "--misdeed", "{misdeed}"]
        metrics: {{port: 0, path: /metrics}}
        artifact: {{path: rogue_bot.py}}
    """), encoding="utf-8")
    return path


@contextlib.asynccontextmanager
async def rogue_site(tmp_path: Path, misdeed: str) -> AsyncIterator[Running]:
    strategy = tmp_path / "strategy-rogue.yaml"
    strategy.write_text(STRATEGY, encoding="utf-8")
    async with daemon_on_sim(tmp_path, {PREVIOUS: BOT / "strategy.yaml"}, speed=SPEED, cadence=CADENCE,
                             baseline=PREVIOUS) as site:
        await add_release(site.db, site.clock, read_release(CANDIDATE, manifest(tmp_path, misdeed), strategy),
                          actor="tester")
        yield site


async def start_rollout(site: Running) -> int:
    pipeline = load_model_text(Pipeline, PIPELINE, "pipeline")
    return (await create_rollout(site.db, site.clock, version=CANDIDATE, pipeline=pipeline, actor="tester")).id


async def rolled_back_by(site: Running, rollout_id: int, policy: str) -> float:
    """Waits for the rollout to be rolled back; asserts ``policy`` did it; the breach's Clock time."""
    final = await site.until(rollout_id, *(TERMINAL | {Status.FAILED}), timeout=60)
    assert final.status is Status.ROLLED_BACK, final.state
    [breach] = [e async for e in audit.query(site.db, audit.AuditFilter(kind="rollout.transition"))
                if e.payload["to"] == "rolling_back"]
    assert breach.payload["reason"].startswith(f"{policy} failed:"), breach.payload
    report = site.daemon.reports[rollout_id]
    assert report.policy == policy and report.breach_at is not None
    return report.breach_at


def simulator(site: Running):
    return site.simulators.started["sim"]


async def test_a_release_trading_a_symbol_outside_its_config_is_rolled_back(tmp_path):
    async with rogue_site(tmp_path, "foreign") as site:
        rollout_id = await start_rollout(site)
        breach_at = await rolled_back_by(site, rollout_id, "c-no-trading-outside-config")
        [trade] = [t for t in simulator(site).engine.trades["canary"] if t.symbol == "DOGEUSDT"]
    assert 0 <= breach_at - trade.time_ms / 1000 < PROMPT


async def test_a_liquidated_release_is_rolled_back(tmp_path):
    async with rogue_site(tmp_path, "liquidated") as site:
        sim = simulator(site)
        account = sim.accounts["canary"]
        rollout_id = await start_rollout(site)

        async def opened_and_watched():
            """The long is open and the verification watches the stream (its policy passes)."""
            position = account.positions.get(("BTCUSDT", "BOTH"))
            watched = "c-no-liquidation" in (await get_rollout(site.db, rollout_id)).state.passing
            return position is not None and position.amount > 0 and watched
        await site_poll(site, opened_and_watched, "the rogue release's isolated BTCUSDT long, watched")
        [risk] = account.risks(sim.market, ["BTCUSDT"])
        assert risk.isolated and risk.liquidation_price > 0
        sim.set_price("BTCUSDT", risk.liquidation_price * Decimal("0.99"))
        liquidated_at = site.clock.time()
        assert account.positions[("BTCUSDT", "BOTH")].amount == 0  # the exchange closed it
        breach_at = await rolled_back_by(site, rollout_id, "c-no-liquidation")
    assert 0 <= breach_at - liquidated_at < PROMPT


async def test_a_release_reporting_fills_the_exchange_refused_is_rolled_back(tmp_path):
    async with rogue_site(tmp_path, "lying") as site:
        rollout_id = await start_rollout(site)
        breach_at = await rolled_back_by(site, rollout_id, "c-bot-fills-match-exchange")
        [started] = [e async for e in audit.query(site.db, audit.AuditFilter(kind="rollout.transition"))
                     if e.payload["to"] == "running"]
        running_at = started.ts.timestamp()
        claimed = [t for t in simulator(site).engine.trades["canary"] if running_at <= t.time_ms / 1000 < breach_at]
    assert claimed == []  # the exchange filled none of the orders the release reported filled
    # Three claimed fills are beyond the tolerance; then a scrape, and the policy's 30 s.
    assert breach_at - running_at < 30 + PROMPT + 10


async def test_a_release_changing_the_accounts_margin_mode_before_it_is_watched_is_rolled_back(tmp_path):
    """Judged against the modes the placement read, not the first reading of the verification,
    which starts after the release: the controller cannot set them back, so the rollback stops
    there and says so."""
    async with rogue_site(tmp_path, "modes") as site:
        rollout_id = await start_rollout(site)
        await site.until(rollout_id, *(TERMINAL | {Status.FAILED, Status.ROLLING_BACK, Status.PAUSED}), timeout=60)
        [breach] = [e async for e in audit.query(site.db, audit.AuditFilter(kind="rollout.transition"))
                    if e.payload["to"] == "rolling_back"]
        assert breach.payload["reason"].startswith("c-account-modes-unchanged failed:"), breach.payload
        assert simulator(site).accounts["canary"].multi_assets


async def site_poll(site: Running, predicate, what: str) -> None:
    await poll(predicate, timeout=30, alive=site.gone, what=what)

