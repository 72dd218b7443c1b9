"""Part of `make demo` until the rollout engine exists: the reference bot on the simulator.

Starts the embedded simulator, runs a healthy and a defective release of the reference bot as
real processes on the canary sub-account, and shows what the controller judges them by (the
bot's own checklist metrics and the exchange's view of the account) and the verdicts of the
shipped stage C policies. Both run five times faster than real time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from controller.analysis.policy import load_policies
from controller.analysis.verdict import Outcome
from controller.clock import SimulatedClock
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model
from controller.exchange.client import Endpoints, ExchangeClient
from controller.exchange.weights import WeightBudget
from controller.observe.exchange import ExchangeObserver
from controller.observe.metrics import MetricsScraper
from controller.sim import Simulator
from controller.verification import Verification

SPEED = 5.0
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "reference-bot"
# The shipped canary policies this short run can judge: the exchange's view and the bot's metrics.
JUDGED = ("c-exchange-leverage-matches-config", "c-leverage-mismatch-zero", "c-fills-sized-within-bucket",
          "c-bucket-usage-within-allocation", "c-margin-ratio-bounded", "c-capital-share-within-cap")


async def scrape(port: int) -> dict[tuple[str, tuple], float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(metrics, name, **labels) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


async def run_release(sim: Simulator, clock: SimulatedClock, workdir: Path, title: str, config_file: Path) -> None:
    print(f"\n-- {title}: {config_file.name}")
    account = sim.accounts["canary"]
    exchange = workdir / "exchange.json"
    exchange.write_text(json.dumps({"rest_url": sim.rest_url, "ws_url": sim.ws_url, "sapi_url": sim.sapi_url,
                                    "api_key": account.api_key, "api_secret": account.api_secret}))
    exchange.chmod(0o600)
    bot = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller.sim.bot", "--config", str(config_file), "--exchange", str(exchange),
        "--account", "canary", "--speed", str(SPEED), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        port = json.loads(await asyncio.wait_for(bot.stdout.readline(), 30))["metrics_port"]
        config = load_model(StrategyConfig, config_file)
        for _ in range(60):  # judging starts once the release is in place (its leverage set)
            ready = await scrape(port)
            if all(value(ready, "strategy_leverage_applied", symbol=s) > 0 for s in config.symbols):
                break
            await asyncio.sleep(0.25)
        latest = {}
        policies = [p for f in load_policies([ROOT / "policies"]).values() for p in f.policies if p.name in JUDGED]
        verification = Verification(policies=policies, config=config, clock=clock, capital_cap=0.02,
                                    on_verdicts=lambda vs: latest.update({v.policy: v for v in vs}))
        clients = [ExchangeClient(account=name, api_key=sim.accounts[name].api_key,
                                  api_secret=sim.accounts[name].api_secret,
                                  endpoints=Endpoints(sim.rest_url, sim.ws_url, sim.sapi_url), clock=clock,
                                  budget=WeightBudget(clock, share=0.5)) for name in ("canary", "master")]
        for client in clients:
            await client.sync_time()
        observer = ExchangeObserver(account="canary", client=clients[0], master=clients[1], config=config,
                                    clock=clock, sink=verification.sink, snapshot_every=5)
        scraper = MetricsScraper(f"http://127.0.0.1:{port}/metrics", clock=clock, sink=verification.sink,
                                 interval=2)
        judging = asyncio.create_task(verification.run([observer.run, scraper.run]), name="demo-verification")
        metrics = {}
        for _ in range(60):  # a child process can only be watched through its /metrics: bounded poll
            metrics = await scrape(port)
            if sum(value(metrics, "strategy_orders_total", outcome=o) for o in ("filled", "expired", "canceled")) >= 3 \
                    and all(n in latest and latest[n].outcome in (Outcome.PASS, Outcome.FAIL) for n in JUDGED):
                break
            await asyncio.sleep(0.5)
        judging.cancel()
        await asyncio.gather(judging, return_exceptions=True)
        async with clients[0] as client:
            applied = {s.symbol: s.leverage for s in await client.symbol_settings()}
        await clients[1].close()
        print(f"   {'symbol':<9} {'snapshot':>8} {'exchange':>8} {'bot says':>8}")
        for symbol, settings in config.symbols.items():
            flag = "   <-- mismatch" if applied.get(symbol) != settings.leverage else ""
            print(f"   {symbol:<9} {settings.leverage:>8} {applied.get(symbol, '-'):>8} "
                  f"{value(metrics, 'strategy_leverage_configured', symbol=symbol):>8.0f}{flag}")
        outcomes = {o: int(value(metrics, "strategy_orders_total", outcome=o))
                    for o in ("filled", "expired", "canceled", "rejected", "error")}
        print(f"   strategy_leverage_mismatch_total = {value(metrics, 'strategy_leverage_mismatch_total'):.0f}")
        print(f"   strategy_orders_total = {outcomes}")
        print("   verdicts of the shipped stage C policies:")
        for name in JUDGED:
            v = latest.get(name)
            if v is None:
                print(f"     {name:<36} (no verdict yet)")
                continue
            where = f" on {dict(v.group)}" if v.group else ""
            shown = "-" if v.value is None else f"{v.value:.4g}"
            limit = "" if v.threshold is None else f" (threshold {v.threshold:.4g})"
            action = f"  -> {v.action}" if v.action else ""
            print(f"     {name:<36} {v.outcome.value:<5} value {shown}{limit}{where}{action}")
    finally:
        bot.send_signal(signal.SIGTERM)
        print(f"   bot stopped with SIGTERM: exit status {await asyncio.wait_for(bot.wait(), 30)}")


async def main() -> None:
    clock = SimulatedClock(datetime.now(tz=UTC), speed=SPEED)
    async with Simulator(clock=clock, seed=7) as sim:
        print(f"simulator at {sim.rest_url} (canary sub-account: 2000 of 100000 USDT)")
        with tempfile.TemporaryDirectory() as workdir:
            await run_release(sim, clock, Path(workdir), "healthy release", EXAMPLES / "strategy.yaml")
            await run_release(sim, clock, Path(workdir), "defective release",
                              EXAMPLES / "strategy-defect-leverage.yaml")


if __name__ == "__main__":
    asyncio.run(main())
