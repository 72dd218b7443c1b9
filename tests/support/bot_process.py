"""The reference bot as a real process (``python -m reference_bot``): its strategy and exchange
files, its speed, and the checklist metrics it must export."""

from __future__ import annotations

import json
from pathlib import Path

from controller.sim import Simulator
from tests.support.simulator import PROCESS_SPEED

SPEED = f"{PROCESS_SPEED:g}"
"""``--speed`` as typed on the bot's command line."""

STRATEGY = """\
symbols:
  BTCUSDT: {leverage: 5}
  ETHUSDT: {leverage: 5}
  SOLUSDT: {leverage: 3, margin_type: ISOLATED}
buckets:
  majors: {allocation: 0.5, symbols: [BTCUSDT, ETHUSDT]}
  alts: {allocation: 0.3, symbols: [SOLUSDT]}
sizing:
  order_fraction: 0.25
"""

CHECKLIST = (
    "strategy_leverage_mismatch_total", "strategy_signal_latency_seconds_bucket",
    "strategy_signal_latency_seconds_count",
    "strategy_leverage_configured", "strategy_leverage_applied", "strategy_bucket_allocation_ratio",
    "strategy_bucket_usage_ratio", "strategy_bucket_locks_total", "strategy_bucket_unlocks_total",
    "strategy_margin_fraction", "strategy_margin_fraction_updated_timestamp_seconds", "strategy_order_queue_depth",
    "strategy_order_queue_latency_seconds_bucket", "strategy_orders_total",
)
"""The metric names the checklist's policies read from a bot."""


def exchange_file(tmp_path: Path, sim: Simulator, *, mode: int = 0o600, secret: str | None = None) -> Path:
    account = sim.accounts["canary"]
    path = tmp_path / "exchange.json"
    path.write_text(json.dumps({"rest_url": sim.rest_url, "ws_url": sim.ws_url, "sapi_url": sim.sapi_url,
                                "api_key": account.api_key, "api_secret": secret or account.api_secret}))
    path.chmod(mode)
    return path


def strategy_file(tmp_path: Path, text: str = STRATEGY) -> Path:
    path = tmp_path / "strategy.yaml"
    path.write_text(text)
    return path
