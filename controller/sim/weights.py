"""Binance's rate limits: per-IP request weight per minute and per-account order counts.

Windows are fixed and aligned to the clock (the current minute, the current 10 s), which is how
Binance's `X-MBX-USED-WEIGHT-1M` counter behaves: it drops to zero at each minute boundary.
Over the limit a request gets 429 with `Retry-After` (seconds to the window's end); an IP that
keeps sending during that back-off is banned with 418. How many ignored 429s earn a ban is not
published; `ban_after` (5) and the 2-minute first ban, doubling per repeat, are guesses that
follow Binance's "from 2 minutes to 3 days".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controller.sim import codes

MAX_BAN_SECONDS = 3 * 24 * 3600


@dataclass
class _IpState:
    window: int = -1
    used: int = 0
    backoff_until: float = 0.0
    ignored: int = 0
    banned_until: float = 0.0
    bans: int = 0


class WeightLimiter:
    """Request weight per IP, over one-minute windows."""

    def __init__(self, limit: int = 2400, *, header: str = "X-MBX-USED-WEIGHT-1M",
                 ban_after: int = 5, ban_seconds: float = 120.0) -> None:
        self.limit = limit
        self.header = header
        self.ban_after = ban_after
        self.ban_seconds = ban_seconds
        self._ips: dict[str, _IpState] = {}

    def used(self, ip: str, now: float) -> int:
        return self._state(ip, now).used

    def headers(self, ip: str, now: float) -> dict[str, str]:
        return {self.header: str(self.used(ip, now))}

    def admit(self, ip: str, weight: int, now: float) -> None:
        """Count a request's weight, or raise the 429/418 Binance would answer with."""
        st = self._state(ip, now)
        if st.banned_until > now:
            raise self._banned(ip, st, now)
        if now < st.backoff_until:
            st.ignored += 1
            if st.ignored >= self.ban_after:
                st.banned_until = now + min(self.ban_seconds * 2 ** st.bans, MAX_BAN_SECONDS)
                st.bans += 1
                st.ignored = 0
                raise self._banned(ip, st, now)
            raise self._too_many(ip, st, now)
        if st.used + weight > self.limit:
            st.backoff_until = (st.window + 1) * 60.0
            raise self._too_many(ip, st, now)
        st.used += weight

    def _state(self, ip: str, now: float) -> _IpState:
        st = self._ips.setdefault(ip, _IpState())
        window = int(now // 60)
        if window != st.window:
            st.window, st.used = window, 0
        return st

    def _too_many(self, ip: str, st: _IpState, now: float) -> codes.BinanceError:
        return codes.too_many_requests(
            f"Too many requests; current limit of IP({ip}) is {self.limit} requests per minute. "
            "Please use the websocket for live updates to avoid polling the API.",
            retry_after=max(1, math.ceil(st.backoff_until - now)))

    def _banned(self, ip: str, st: _IpState, now: float) -> codes.BinanceError:
        until_ms = int(st.banned_until * 1000)
        return codes.too_many_requests(
            f"Way too many requests; IP({ip}) banned until {until_ms}. "
            "Please use the websocket for live updates to avoid bans.",
            retry_after=max(1, math.ceil(st.banned_until - now)), status=418)


class OrderCounter:
    """New orders per account: 300 per 10 s and 1200 per minute (Binance's USD-M defaults)."""

    WINDOWS = (("10S", 10, 300, "10s"), ("1M", 60, 1200, "1m"))

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}

    def headers(self, account: str, now: float) -> dict[str, str]:
        return {f"X-MBX-ORDER-COUNT-{name}": str(self._count(account, name, seconds, now))
                for name, seconds, _, _ in self.WINDOWS}

    def admit(self, account: str, now: float) -> None:
        for name, seconds, limit, label in self.WINDOWS:
            if self._count(account, name, seconds, now) >= limit:
                retry = math.ceil((int(now // seconds) + 1) * seconds - now)
                raise codes.too_many_orders(limit, label, max(1, retry))
        for name, seconds, _, _ in self.WINDOWS:
            window = int(now // seconds)
            self._counts[(account, name)] = (window, self._count(account, name, seconds, now) + 1)

    def _count(self, account: str, name: str, seconds: int, now: float) -> int:
        window, count = self._counts.get((account, name), (-1, 0))
        return count if window == int(now // seconds) else 0
