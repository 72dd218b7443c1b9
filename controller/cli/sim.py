"""`canaryctl sim serve`: run the embedded Binance USD-M futures simulator until SIGTERM/SIGINT.

With --json the first line of standard output is one JSON object:
{"rest_url": ..., "ws_url": ..., "accounts": {NAME: {"api_key", "api_secret", "master",
"read_only": {"api_key", "api_secret"}}}, ...}
(``read_only`` is the account's key that may only read: a shadow stage's ``shadow_key``), where
rest_url is what python-binance's AsyncClient.FUTURES_URL is set to and ws_url what
BinanceSocketManager.FSTREAM_URL is set to (sapi_url, api_url and admin_url are added for the
sub-account endpoints, AsyncClient.create's spot ping/time and the /sim/ admin endpoints).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from controller.cli.numbers import FiniteFloatRange
from controller.errors import CanaryError


@click.group("sim")
def sim() -> None:
    """Run the embedded Binance USD-M futures simulator.

    Example: canaryctl sim serve --port 8765 --seed 7
    """


@sim.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, type=click.IntRange(0, 65535), show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--seed", type=int, default=None,
              help="Seed of prices, API keys and fault dice (default: random).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the addresses and API keys as one JSON object on the first line.")
@click.option("--speed", type=FiniteFloatRange(min=0, min_open=True), default=None,
              help="Run a simulated clock this many times faster than real time (default: real time).")
@click.option("--prices", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Replay prices from a CSV with columns timestamp (epoch ms),symbol,price.")
@click.option("--weight-limit", type=click.IntRange(min=1), default=2400, show_default=True,
              help="Request weight a minute one IP may use (Binance's is 2400); every process on this "
                   "machine is one IP, 127.0.0.1.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="Log records at this level and above go to stderr.")
@click.option("--log-format", type=click.Choice(["console", "json"]), default="console", show_default=True,
              help="One line per event: for people, or JSON for journald and log shippers.")
def serve(host: str, port: int, seed: int | None, as_json: bool, speed: float | None,
          prices: Path | None, weight_limit: int, log_level: str, log_format: str) -> None:
    """Serve Binance's USD-M futures REST API and user-data websockets until SIGTERM or SIGINT.

    Example: canaryctl sim serve --port 8765 --seed 7 --json
    """
    from controller import logs

    logs.configure(log_level, log_format)
    seed = secrets.randbelow(2**31) if seed is None else seed
    asyncio.run(_serve(host, port, seed, as_json, speed, prices, weight_limit))


async def _serve(host: str, port: int, seed: int, as_json: bool, speed: float | None,
                 prices: Path | None, weight_limit: int) -> None:
    from controller.clock import RealClock, SimulatedClock
    from controller.sim import Simulator

    clock = SimulatedClock(datetime.now(tz=UTC), speed=speed) if speed else RealClock()
    simulator = Simulator(clock=clock, seed=seed, prices=prices, weight_limit=weight_limit)
    try:
        addresses = await simulator.start(host, port)
    except OSError as exc:
        raise CanaryError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                          "choose another --port (0 picks a free one)") from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)  # a signal only asks; the shutdown below acts
    try:
        _announce(simulator, addresses, seed, as_json)
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await asyncio.wait_for(simulator.stop(), timeout=10)


def _announce(simulator, addresses, seed: int, as_json: bool) -> None:
    accounts = {a.name: {"api_key": a.api_key, "api_secret": a.api_secret, "master": a.master,
                         "read_only": {"api_key": a.key("read-only").key, "api_secret": a.key("read-only").secret}}
                for a in simulator.accounts}
    if as_json:
        click.echo(json.dumps({
            "rest_url": addresses.rest_url, "ws_url": addresses.ws_url, "accounts": accounts,
            "sapi_url": addresses.sapi_url, "api_url": addresses.api_url,
            "admin_url": addresses.admin_url, "seed": seed,
        }))
    else:
        click.echo(f"simulator listening (seed {seed}); stop with Ctrl-C or SIGTERM")
        for label in ("rest_url", "ws_url", "sapi_url", "api_url", "admin_url"):
            click.echo(f"  {label:<10} {getattr(addresses, label)}")
        for name, keys in accounts.items():
            role = "master" if keys["master"] else "sub-account"
            click.echo(f"  account {name} ({role})")
            click.echo(f"    api_key    {keys['api_key']}")
            click.echo(f"    api_secret {keys['api_secret']}")
            click.echo(f"    read-only api_key    {keys['read_only']['api_key']}")
            click.echo(f"    read-only api_secret {keys['read_only']['api_secret']}")
    sys.stdout.flush()
