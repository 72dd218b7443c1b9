"""Fault knobs: what can go wrong between a client and Binance, switched on from tests or at run time.

Every knob is a method here (the Python API) and an admin endpoint `POST /sim/faults/<knob>`
whose JSON body holds the same keyword arguments (see `controller.sim.admin`). Endpoint keys
are `"METHOD /path"` (e.g. `"POST /fapi/v1/order"`), a bare path for every method, or None for
every REST endpoint. Time in knobs is on the simulator's clock.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Protocol

from controller.sim import codes


class StreamControl(Protocol):
    """What the user-data stream hub lets fault knobs do to it."""

    def drop(self, account: str) -> int: ...

    def set_stalled(self, account: str, stalled: bool) -> None: ...

    def expire(self, account: str) -> bool: ...


class MarketControl(Protocol):
    """What the market-data stream hub lets fault knobs do to it."""

    def drop_all(self) -> int: ...


@dataclass(frozen=True)
class ErrorRule:
    endpoint: str | None
    rate: float
    code: int
    status: int
    msg: str
    after: bool  # True: the request is carried out, then answered with the error (status unknown)


class Faults:
    """The knobs, their state, and the questions the server asks them on each request."""

    def __init__(self, *, streams: StreamControl, market: MarketControl | None = None, seed: int = 0,
                 now: Callable[[], float] | None = None) -> None:
        self._streams = streams
        self._market = market
        self._rng = random.Random(f"faults-{seed}")
        self._now = now
        self.stalled: set[str] = set()
        self.clear()

    # -- the knobs (Python API) ----------------------------------------------------------------

    def clear(self) -> None:
        """Switch every knob off (stalled streams resume)."""
        for account in self.stalled:
            self._streams.set_stalled(account, False)
        self.latency: dict[str | None, float] = {}
        self.errors: list[ErrorRule] = []
        self.storm_until = 0.0
        self.ignored_leverage: set[tuple[str, str | None]] = set()
        self.duplicates: dict[str, int] = {}
        self.reordered: set[str] = set()
        self.stalled: set[str] = set()

    def add_latency(self, seconds: float, endpoint: str | None = None) -> None:
        """Delay answers to `endpoint` (every REST endpoint if None) by `seconds` of clock time."""
        if seconds < 0:
            raise ValueError("latency must be >= 0 seconds")
        self.latency[_key(endpoint)] = float(seconds)

    def fail(self, endpoint: str | None = None, rate: float = 1.0, *, code: int = -1001,
             status: int = 500, msg: str | None = None, after: bool = False) -> None:
        """Answer a share `rate` of requests to `endpoint` with an error (default -1001, HTTP 500).

        With `after=True` the request is carried out first, like a Binance 5xx whose execution
        status is unknown: an order may exist although the client saw an error.
        """
        if not 0 <= rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        default = codes.internal()
        self.errors.append(ErrorRule(_key(endpoint), float(rate), int(code), int(status),
                                     msg or default.msg, bool(after)))

    def rate_limit_storm(self, seconds: float) -> None:
        """Answer every REST request with 429 and a Retry-After for the next `seconds`."""
        self.storm_until = self._clock() + float(seconds)

    def drop_stream(self, account: str) -> int:
        """Cut the account's user-data websockets without a close frame; returns how many."""
        return self._streams.drop(account)

    def drop_market_streams(self) -> int:
        """Cut every market-data websocket without a close frame; returns how many."""
        return self._market.drop_all() if self._market is not None else 0

    def stall_stream(self, account: str, stalled: bool = True) -> None:
        """Keep the account's websockets open but send nothing; `stalled=False` flushes the backlog."""
        (self.stalled.add if stalled else self.stalled.discard)(account)
        self._streams.set_stalled(account, stalled)

    def expire_listen_key(self, account: str) -> bool:
        """Expire the account's listenKey now (listenKeyExpired is pushed, then nothing more)."""
        return self._streams.expire(account)

    def ignore_leverage(self, account: str, symbol: str | None = None, enabled: bool = True) -> None:
        """Answer leverage changes as if applied, but change nothing and push no event."""
        (self.ignored_leverage.add if enabled else self.ignored_leverage.discard)((account, symbol))

    def duplicate_events(self, account: str, copies: int = 1) -> None:
        """Send each of the account's stream events `copies` extra times (0 switches it off)."""
        if copies < 0:
            raise ValueError("copies must be >= 0")
        self.duplicates[account] = int(copies)

    def reorder_events(self, account: str, enabled: bool = True) -> None:
        """Deliver the events of each exchange action in reverse order (e.g. FILLED before NEW)."""
        (self.reordered.add if enabled else self.reordered.discard)(account)

    # -- what the server asks ------------------------------------------------------------------

    # --- named switches: what a harness schedule turns on and off (`controller.harness.faults`)

    def switch_on(self, name: str, value: float, account: str) -> None:
        """Turn on the knob a schedule names (``latency_ms``, ``ws_stall``, ...) on ``account``."""
        if name == "ws_disconnect":
            # The network between the bot and Binance fails: its price streams go down with its
            # user stream (market-data connections belong to no account: all of them go).
            self.drop_stream(account)
            self.drop_market_streams()
        elif name == "listen_key_expired":
            self.expire_listen_key(account)
        elif name == "ws_stall":
            self.stall_stream(account, True)
        elif name == "latency_ms":
            self.add_latency(value / 1000.0)
        elif name == "error_rate":
            self.fail(None, rate=value)
        elif name == "rate_limit_storm":
            self.rate_limit_storm(value)
        elif name == "duplicate_events":
            self.duplicate_events(account, int(value))
        elif name == "reorder_events":
            self.reorder_events(account, True)
        elif name == "ignore_leverage":
            self.ignore_leverage(account, None, True)
        else:
            raise ValueError(f"no knob for sim fault {name!r}")

    def switch_off(self, name: str, value: float, account: str) -> None:
        """Undo `switch_on` (instant faults and the storm, which ends by itself, leave nothing on)."""
        if name == "ws_stall":
            self.stall_stream(account, False)
        elif name == "latency_ms":
            self.latency.pop(None, None)
        elif name == "error_rate":
            self.errors = [rule for rule in self.errors if not (rule.endpoint is None and rule.rate == value)]
        elif name == "duplicate_events":
            self.duplicate_events(account, 0)
        elif name == "reorder_events":
            self.reorder_events(account, False)
        elif name == "ignore_leverage":
            self.ignore_leverage(account, None, False)

    def latency_for(self, method: str, path: str) -> float:
        return max(self.latency.get(f"{method} {path}", 0.0), self.latency.get(path, 0.0),
                   self.latency.get(None, 0.0))

    def error_for(self, method: str, path: str, *, after: bool) -> codes.BinanceError | None:
        for rule in self.errors:
            if rule.after == after and _matches(rule.endpoint, method, path) \
                    and self._rng.random() < rule.rate:
                return codes.BinanceError(rule.code, rule.msg, rule.status)
        return None

    def storm(self, now: float) -> codes.BinanceError | None:
        if now >= self.storm_until:
            return None
        return codes.too_many_requests(
            "Too many requests; current limit is 2400 requests per minute. Please use the "
            "websocket for live updates to avoid polling the API.",
            retry_after=max(1, math.ceil(self.storm_until - now)))

    def leverage_ignored(self, account: str, symbol: str) -> bool:
        return (account, None) in self.ignored_leverage or (account, symbol) in self.ignored_leverage

    def shape(self, account: str, payloads: list[dict]) -> list[dict]:
        """Apply the event knobs to one exchange action's payloads, in delivery order."""
        if account in self.reordered:
            payloads = payloads[::-1]
        copies = self.duplicates.get(account, 0)
        return [p for p in payloads for _ in range(1 + copies)]

    def snapshot(self) -> dict:
        return {
            "latency": {k or "*": v for k, v in self.latency.items()},
            "errors": [asdict(r) for r in self.errors],
            "storm_until": self.storm_until,
            "ignored_leverage": [{"account": a, "symbol": s} for a, s in sorted(
                self.ignored_leverage, key=lambda x: (x[0], x[1] or ""))],
            "duplicates": self.duplicates,
            "reordered": sorted(self.reordered),
            "stalled": sorted(self.stalled),
        }

    def _clock(self) -> float:
        if self._now is None:
            raise RuntimeError("Faults needs a clock (now=...) for time-based knobs")
        return self._now()


def _key(endpoint: str | None) -> str | None:
    if endpoint in (None, "", "*"):
        return None
    parts = endpoint.split()
    return f"{parts[0].upper()} {parts[1]}" if len(parts) == 2 else endpoint


def _matches(rule: str | None, method: str, path: str) -> bool:
    return rule is None or rule == path or rule == f"{method} {path}"
