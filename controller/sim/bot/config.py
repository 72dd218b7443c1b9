"""What the bot runs with besides its strategy: its cadence, and where the exchange is.

The exchange file is JSON, ``{"rest_url", "ws_url", "sapi_url", "api_key", "api_secret"}``
(``sapi_url`` optional), written by whoever places the bot (the controller, a test). It holds
the account's API secret, so it is passed by path, never on the command line, and refused if
group or others can read it (the same check as `SecretRef` files).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from controller.config.secrets import SecretRef
from controller.errors import ConfigError
from controller.exchange.client import Endpoints

REQUIRED_KEYS = ("rest_url", "ws_url", "api_key", "api_secret")
OPTIONAL_KEYS = ("sapi_url",)


@dataclass(frozen=True, kw_only=True)
class BotSettings:
    """The bot's cadence, in seconds of its Clock (simulated time when accelerated)."""

    interval: float = 1.0
    """Between two trading iterations (read prices, decide, queue orders)."""
    order_ttl: float | None = None
    """A resting entry order older than this is canceled; default: five intervals."""
    reconcile_every: float = 5.0
    """Between two reads of the exchange's view (leverage, positions, open orders, capital)."""
    seed: int = 0
    """Seeds the signal: the same seed gives the same sequence of directions."""
    shutdown_timeout: float = 5.0
    """Bound on each shutdown step (finishing the order in flight, canceling open orders)."""
    stream_timeout: float = 10.0
    """How long to wait for the user-data stream before trading without it (REST reconciles)."""

    def __post_init__(self) -> None:
        for name in ("interval", "reconcile_every", "shutdown_timeout", "stream_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds, got {getattr(self, name)}")
        if self.order_ttl is not None and self.order_ttl <= 0:
            raise ValueError(f"order_ttl must be > 0 seconds, got {self.order_ttl}")

    @property
    def entry_ttl(self) -> float:
        return self.order_ttl if self.order_ttl is not None else 5 * self.interval


@dataclass(frozen=True)
class ExchangeAccess:
    """Where the exchange is and one account's API key; the key never shows in a repr."""

    endpoints: Endpoints
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)

    @classmethod
    def load(cls, path: Path | str) -> ExchangeAccess:
        """Read the exchange file; `SecretError` or `ConfigError` (exit status 2) if unusable.

        Messages name keys and positions only, never a value: any value may be the secret.
        """
        source = str(path)
        text = SecretRef("file", str(Path(path).absolute())).resolve()  # refuses group/other access
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=source,
                              line=exc.lineno) from None
        if not isinstance(data, dict):
            raise ConfigError("expected a JSON object with keys " + ", ".join(REQUIRED_KEYS + OPTIONAL_KEYS),
                              file=source)
        unknown = sorted(set(data) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
        if unknown:
            raise ConfigError(f"unknown key (allowed: {', '.join(REQUIRED_KEYS + OPTIONAL_KEYS)})",
                              file=source, field=str(unknown[0]))
        for key in REQUIRED_KEYS + OPTIONAL_KEYS:
            if key not in data:
                if key in REQUIRED_KEYS:
                    raise ConfigError("missing required key", file=source, field=key)
            elif not isinstance(data[key], str) or not data[key]:
                raise ConfigError("expected non-empty text", file=source, field=key)
        for key in ("rest_url", "ws_url", "sapi_url"):
            if key in data and not data[key].startswith(("http://", "https://", "ws://", "wss://")):
                raise ConfigError("expected a URL (http://, https://, ws:// or wss://)", file=source, field=key)
        return cls(Endpoints(data["rest_url"], data["ws_url"], data.get("sapi_url")),
                   api_key=data["api_key"], api_secret=data["api_secret"])
