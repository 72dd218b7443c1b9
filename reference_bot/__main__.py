"""``python -m reference_bot``: run the reference strategy bot until SIGTERM or SIGINT.

    python -m reference_bot --config strategy.yaml --exchange exchange.json --metrics-port 0

The first line of standard output is ``{"metrics_port": N}`` (the chosen port when 0 was
asked), so a parent can find ``/metrics``; logs go to standard error, one line per event.
Exit status: 0 after a requested stop (open orders canceled); 2 when the strategy or exchange
file is refused (one line ``FILE:LINE: FIELD: message``, no traceback); 1 when the bot cannot
start (one line saying which step the exchange refused) or crashes (``bot_crashed`` with the
Python traceback).

With ``CANARY_SHADOW=1`` in its environment (a shadow stage: its key may only read) the bot
decides as usual and paper-fills its orders at the mark price, changing nothing on the account;
``strategy_orders_total`` then carries ``mode="shadow"``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from dataclasses import dataclass
import time
from pathlib import Path

from reference_bot.access import ExchangeAccess
from reference_bot.bot import Bot
from reference_bot.clock import Clock, RealClock, ScaledClock
from reference_bot.config import BotSettings, Strategy, load_strategy
from reference_bot.errors import BotError
from reference_bot.exchange import FuturesAccount
from reference_bot.metrics import BotMetrics, MetricsServer

log = logging.getLogger("reference_bot")

@dataclass(frozen=True)
class Options:
    config: Path
    exchange: Path
    metrics_port: int
    metrics_host: str
    account: str
    speed: float | None
    settings: BotSettings


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
    return value


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port from 0 to 65535, got {text!r}")
    return int(text)


def parse(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m reference_bot",
                                     description="Run the reference strategy bot until SIGTERM or SIGINT.")
    parser.add_argument("--config", type=Path, required=True, metavar="FILE",
                        help="the strategy YAML file (release config)")
    parser.add_argument("--exchange", type=Path, required=True, metavar="FILE",
                        help='JSON file {"rest_url", "ws_url", "sapi_url", "api_key", "api_secret"}, mode 0600')
    parser.add_argument("--metrics-port", type=_port, default=0, metavar="N",
                        help="port of /metrics; 0 picks a free one (printed first on stdout)")
    parser.add_argument("--metrics-host", default="127.0.0.1", metavar="HOST",
                        help="address of /metrics (default 127.0.0.1)")
    parser.add_argument("--account", default="bot", metavar="NAME", help="the account's name in logs (default bot)")
    parser.add_argument("--speed", type=_positive, default=os.environ.get("CANARY_SIM_SPEED") or None, metavar="X",
                        help="run on a simulated clock this many times faster than real time, starting now; "
                             "give the simulator the same speed (default: $CANARY_SIM_SPEED, else real time)")
    parser.add_argument("--interval", type=_positive, default=1.0, metavar="SECONDS",
                        help="seconds between trading iterations, on the bot's clock (default 1)")
    parser.add_argument("--reconcile-every", type=_positive, default=5.0, metavar="SECONDS",
                        help="seconds between reads of the exchange's view, on the bot's clock (default 5)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the trading signal (default 0)")
    args = parser.parse_args(argv)
    return Options(config=args.config, exchange=args.exchange, metrics_port=args.metrics_port,
                   metrics_host=args.metrics_host, account=args.account, speed=args.speed,
                   settings=BotSettings(interval=args.interval, reconcile_every=args.reconcile_every, seed=args.seed,
                                        shadow=os.environ.get("CANARY_SHADOW") == "1"))


def main(argv: list[str] | None = None) -> int:
    options = parse(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        config = load_strategy(options.config)
        access = ExchangeAccess.load(options.exchange)
        asyncio.run(serve(options, config, access))
    except BotError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except asyncio.CancelledError:  # a second signal: shutdown cut short
        print("stopped before the shutdown finished (second signal)", file=sys.stderr)
        return 1
    except Exception:
        log.critical("bot_crashed", exc_info=True)
        return 1
    return 0


async def serve(options: Options, config: Strategy, access: ExchangeAccess) -> None:
    """Serve /metrics, connect, trade until a signal; close everything in reverse order."""
    clock: Clock = ScaledClock(time.time(), options.speed) if options.speed else RealClock()
    metrics = BotMetrics(symbols=config.symbols, buckets=config.buckets, shadow=options.settings.shadow)
    server = MetricsServer(metrics)
    port = await server.start(options.metrics_host, options.metrics_port)
    print(json.dumps({"metrics_port": port}), flush=True)
    exchange = FuturesAccount(access, clock=clock, account=options.account)
    bot = Bot(config=config, exchange=exchange, clock=clock, metrics=metrics, settings=options.settings)
    main_task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signum: signal.Signals) -> None:  # the first signal asks; a second cuts the shutdown short
        nonlocal signals
        signals += 1
        log.info("bot_signal_received signal=%s count=%d", signum.name, signals)
        if signals == 1:
            bot.stop()
        elif main_task is not None:
            main_task.cancel()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        await bot.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await exchange.close()
        await server.stop()


if __name__ == "__main__":
    sys.exit(main())
