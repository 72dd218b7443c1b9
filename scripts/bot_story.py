"""Part of `make demo` until the rollout engine exists: the reference bot on the simulator.

Starts the embedded simulator, runs a healthy and a defective release of the reference bot as
real processes on the canary sub-account, and shows what the controller will judge them by:
the bot's own checklist metrics and the exchange's view of the account. Both run five times
faster than real time.
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

from controller.clock import SimulatedClock
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model
from controller.exchange.client import Endpoints, ExchangeClient
from controller.exchange.weights import WeightBudget
from controller.sim import Simulator

SPEED = 5.0
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "reference-bot"


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
        metrics = {}
        for _ in range(60):  # a child process can only be watched through its /metrics: bounded poll
            metrics = await scrape(port)
            if sum(value(metrics, "strategy_orders_total", outcome=o) for o in ("filled", "expired", "canceled")) >= 3:
                break
            await asyncio.sleep(0.5)
        config = load_model(StrategyConfig, config_file)
        async with ExchangeClient(account="canary", api_key=account.api_key, api_secret=account.api_secret,
                                  endpoints=Endpoints(sim.rest_url, sim.ws_url), clock=clock,
                                  budget=WeightBudget(clock)) as client:
            applied = {s.symbol: s.leverage for s in await client.symbol_settings()}
        print(f"   {'symbol':<9} {'snapshot':>8} {'exchange':>8} {'bot says':>8}")
        for symbol, settings in config.symbols.items():
            flag = "   <-- mismatch" if applied.get(symbol) != settings.leverage else ""
            print(f"   {symbol:<9} {settings.leverage:>8} {applied.get(symbol, '-'):>8} "
                  f"{value(metrics, 'strategy_leverage_configured', symbol=symbol):>8.0f}{flag}")
        outcomes = {o: int(value(metrics, "strategy_orders_total", outcome=o))
                    for o in ("filled", "expired", "canceled", "rejected", "error")}
        print(f"   strategy_leverage_mismatch_total = {value(metrics, 'strategy_leverage_mismatch_total'):.0f}")
        print(f"   strategy_orders_total = {outcomes}")
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
