"""``python -m reference_bot`` as a real process against a simulator started by the test.

The simulator and the bot both run accelerated five times (``--speed 5``), so the bot keeps its
default one-second cadence within the exchange's request-weight limits while the test lasts
seconds. A process cannot be awaited on from here except through its output and its
``/metrics``, so those are polled, bounded.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.bot_process import CHECKLIST, SPEED, STRATEGY, exchange_file, strategy_file
from tests.support.checkout import REPO
from tests.support.simulator import sim_for_processes


@pytest.fixture
async def sim():
    async with sim_for_processes() as simulator:
        yield simulator


class BotProcess:
    """The bot as a child process: its announced port, its stderr, its /metrics."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.stderr = bytearray()
        self._reader = asyncio.create_task(self._read_stderr(), name="test-bot-stderr")

    @classmethod
    async def start(cls, *args: str | Path) -> BotProcess:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reference_bot", *map(str, args), cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return cls(process)

    async def _read_stderr(self) -> None:
        while chunk := await self.process.stderr.read(65536):
            self.stderr += chunk

    async def metrics_port(self) -> int:
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=15)
        return json.loads(line)["metrics_port"]

    async def exit_status(self, timeout: float = 20) -> int:
        status = await asyncio.wait_for(self.process.wait(), timeout=timeout)
        await self._reader
        return status

    @property
    def errors(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    async def kill(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()


async def scrape(port: int) -> dict[tuple[str, tuple], float]:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def test_the_bot_process_exports_the_checklist_metrics_and_stops_cleanly_on_sigterm(tmp_path, sim):
    bot = await BotProcess.start("--config", strategy_file(tmp_path), "--exchange", exchange_file(tmp_path, sim),
                                 "--metrics-port", "0", "--account", "canary", "--speed", SPEED)
    try:
        port = await bot.metrics_port()
        async with asyncio.timeout(30):
            while True:  # a child process: poll its /metrics, bounded
                samples = await scrape(port)
                if samples.get(("strategy_orders_total", (("outcome", "filled"),)), 0) >= 1 and \
                        samples.get(("strategy_signal_latency_seconds_count", ()), 0) >= 1:
                    break
                assert bot.process.returncode is None, bot.errors
                await asyncio.sleep(0.2)
        names = {name for name, _ in samples}
        assert set(CHECKLIST) <= names
        assert samples[("strategy_leverage_mismatch_total", ())] == 0
        assert samples[("strategy_leverage_applied", (("symbol", "SOLUSDT"),))] == 3
        assert samples[("strategy_bucket_allocation_ratio", (("bucket", "majors"),))] == 0.5
        bot.process.send_signal(signal.SIGTERM)
        assert await bot.exit_status(timeout=10) == 0, bot.errors
    finally:
        await bot.kill()
    assert sim.engine.open_orders(sim.accounts["canary"]) == []
    assert "bot_stopped" in bot.errors and "Traceback" not in bot.errors


async def test_an_unhandled_exception_prints_its_traceback_and_exits_non_zero(tmp_path, sim):
    config = strategy_file(tmp_path, STRATEGY + "bot:\n  defects:\n    unhandled_exception_after_seconds: 1\n")
    bot = await BotProcess.start("--config", config, "--exchange", exchange_file(tmp_path, sim), "--speed", SPEED)
    try:
        assert await bot.exit_status() == 1
    finally:
        await bot.kill()
    assert "bot_crashed" in bot.errors
    assert "Traceback (most recent call last):" in bot.errors
    assert "DeliberateDefect: deliberate defect: unhandled exception in the trading task" in bot.errors


async def test_a_bad_strategy_file_is_one_located_line_and_exit_status_2(tmp_path):
    config = strategy_file(tmp_path, STRATEGY.replace("BTCUSDT: {leverage: 5}", "BTCUSDT: {leverage: 500}"))
    bot = await BotProcess.start("--config", config, "--exchange", tmp_path / "absent.json")
    try:
        assert await bot.exit_status() == 2
    finally:
        await bot.kill()
    assert bot.errors == f"{config}:2: symbols.BTCUSDT.leverage: expected an integer from 1 to 125, got 500\n"


async def test_an_exchange_file_others_can_read_is_refused_without_showing_the_secret(tmp_path, sim):
    exchange = exchange_file(tmp_path, sim, mode=0o644)
    bot = await BotProcess.start("--config", strategy_file(tmp_path), "--exchange", exchange)
    try:
        assert await bot.exit_status() == 2
    finally:
        await bot.kill()
    assert f"chmod 600 {exchange}" in bot.errors and "Traceback" not in bot.errors
    assert sim.accounts["canary"].api_secret not in bot.errors


async def test_a_start_the_exchange_refuses_is_one_line_and_exit_status_1(tmp_path, sim):
    exchange = exchange_file(tmp_path, sim, secret="0" * 64)
    bot = await BotProcess.start("--config", strategy_file(tmp_path), "--exchange", exchange, "--speed", SPEED)
    try:
        assert await bot.exit_status() == 1
    finally:
        await bot.kill()
    assert "cannot start on account bot: canceling BTCUSDT orders left by an earlier run: " in bot.errors
    assert "Traceback" not in bot.errors


async def test_the_bot_trades_against_canaryctl_sim_serve_and_its_defect_shows_in_its_metrics(tmp_path):
    """Both as real processes: the simulator from `canaryctl sim serve --json`, the bot on it."""
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "controller", "sim", "serve", "--json", "--seed", "4", "--speed", SPEED, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    bot = None
    try:
        first = json.loads(await asyncio.wait_for(server.stdout.readline(), 30))
        canary = first["accounts"]["canary"]
        exchange = tmp_path / "exchange.json"
        exchange.write_text(json.dumps({"rest_url": first["rest_url"], "ws_url": first["ws_url"],
                                        "sapi_url": first["sapi_url"], "api_key": canary["api_key"],
                                        "api_secret": canary["api_secret"]}))
        exchange.chmod(0o600)
        config = strategy_file(tmp_path, STRATEGY + "bot:\n  defects:\n    wrong_leverage: {symbol: SOLUSDT, leverage: 7}\n")
        bot = await BotProcess.start("--config", config, "--exchange", exchange, "--account", "canary",
                                     "--speed", SPEED)
        port = await bot.metrics_port()
        async with asyncio.timeout(30):
            while True:  # two child processes: poll the bot's /metrics, bounded
                samples = await scrape(port)
                if samples.get(("strategy_leverage_mismatch_total", ()), 0) >= 1:
                    break
                assert bot.process.returncode is None, bot.errors
                await asyncio.sleep(0.2)
        assert samples[("strategy_leverage_applied", (("symbol", "SOLUSDT"),))] == 7
        assert samples[("strategy_leverage_configured", (("symbol", "SOLUSDT"),))] == 3
        bot.process.send_signal(signal.SIGTERM)
        assert await bot.exit_status(timeout=10) == 0, bot.errors
    finally:
        if bot is not None:
            await bot.kill()
        server.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(server.wait(), 20) == 0
