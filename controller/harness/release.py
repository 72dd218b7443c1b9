"""The release under test, as the harness places it: a strategy, and the release's bot trading it
in this process on the simulator, with its own exchange connection and /metrics.

The bot comes in through the release's in-process entry point, named at run time as
``MODULE:CALLABLE`` (the way uvicorn names an app) and resolved with importlib: nothing here
imports the bot, so the judge shares no code with the judged. The entry point is called with
keyword arguments (`EntryPoint`) and returns an `EmbeddedRelease`.

Placing a release with a defect, and rolling back to the healthy one, both stop the running
bot and start a new one, as a new release's process would start: counters begin at zero, the
leverage is set again, and open orders left by the old one are canceled on start.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from controller import shipped
from controller.clock import Clock
from controller.config.strategy import StrategyConfig
from controller.config.yamlfile import load_model
from controller.errors import InputError

REFERENCE_STRATEGY = shipped.reference_bot_file("strategy.yaml")
REFERENCE_ENTRY_POINT = "reference_bot.embedded:EmbeddedBot"
REFERENCE_IN_HARNESS = {"stream_prices": True}
"""The reference bot's own settings as the harness runs it when its strategy file does not say:
prices from the simulator's mark price streams, so that a run exercises them (``bot:
stream_prices: false`` in a strategy file runs it polling)."""


class EmbeddedRelease(Protocol):
    """A release's bot running in the harness's process."""

    crash: BaseException | None
    """What ended the bot, once it has crashed (its /metrics are then gone, as a dead process's)."""

    @property
    def metrics_url(self) -> str: ...

    async def start(self) -> None:
        """Return once the bot has traded once, or has crashed trying (then `crash` is set)."""

    async def stop(self) -> None:
        """As SIGTERM would: the bot cancels its open orders and closes its /metrics; bounded."""


class EntryPoint(Protocol):
    def __call__(self, *, config: Mapping[str, Any], exchange: Mapping[str, str], clock: Clock,
                 settings: Mapping[str, Any], label: str, account: str,
                 trace_configs: Sequence[aiohttp.TraceConfig]) -> EmbeddedRelease:
        """``config``: the strategy as its file holds it; ``exchange``: rest_url, ws_url, sapi_url,
        api_key, api_secret; ``settings``: the bot's cadence (interval, reconcile_every, seed,
        shutdown_timeout, stream_timeout, price_max_age); ``trace_configs``: to put on every HTTP session the
        bot opens, so that the harness counts its requests in flight."""


def load_entry_point(spec: str) -> EntryPoint:
    """``MODULE:CALLABLE`` imported now; `InputError` (exit status 2) saying why if it cannot be."""
    module_name, colon, name = spec.partition(":")
    if not colon or not module_name or not name:
        raise InputError(f"--entry-point {spec!r}: expected MODULE:CALLABLE, e.g. {REFERENCE_ENTRY_POINT}")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise InputError(f"--entry-point {spec}: cannot import {module_name} ({exc}); install the release's "
                         "package in this environment") from None
    for part in name.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise InputError(f"--entry-point {spec}: {module_name} has no {name}")
    if not callable(target):
        raise InputError(f"--entry-point {spec}: {name} is not callable")
    return target


def load_strategy(path: Path | None = None) -> StrategyConfig:
    """A strategy file (default: the reference bot's, streaming prices: `REFERENCE_IN_HARNESS`);
    refusals name the file, line and field."""
    strategy = load_model(StrategyConfig, path or REFERENCE_STRATEGY)
    if path is not None:
        return strategy
    return strategy.model_copy(update={"bot": {**REFERENCE_IN_HARNESS, **strategy.bot}})


def limit_symbols(strategy: StrategyConfig, count: int | None) -> StrategyConfig:
    """The strategy trading only its first ``count`` symbols (in file order); buckets keep their
    allocation and lose the symbols left out, and a bucket left empty goes."""
    total = len(strategy.symbols)
    if count is None or count == total:
        return strategy
    if not 1 <= count <= total:
        raise InputError(f"--symbols {count}: the strategy trades {total} symbol{'s' * (total != 1)} "
                         f"({', '.join(strategy.symbols)}); give 1 to {total}")
    kept = list(strategy.symbols)[:count]
    data = strategy.model_dump(mode="json")
    data["symbols"] = {s: data["symbols"][s] for s in kept}
    data["buckets"] = {name: {**bucket, "symbols": [s for s in bucket["symbols"] if s in kept]}
                       for name, bucket in data["buckets"].items() if any(s in kept for s in bucket["symbols"])}
    return StrategyConfig.model_validate(data)


def with_defects(strategy: StrategyConfig, defects: dict[str, Any]) -> StrategyConfig:
    """The strategy of a release carrying ``defects`` (in the release's own ``bot:`` section)."""
    data = strategy.model_dump(mode="json")
    return StrategyConfig.model_validate({**data, "bot": {**data["bot"], "defects": defects}})
