"""Request security as Binance checks it: API key header, HMAC-SHA256 signature, timestamp window.

The signature covers `totalParams`: the raw query string followed directly by the raw request
body (Binance's docs: "the query string concatenated with the request body"), each without its
`signature=` parameter. Keys are checked first (401), then mandatory parameters, the signature
(-1022) and the timestamp window (-1021), all 400.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re

from controller.sim import codes
from controller.sim.accounts import Account, AccountBook, ApiKey

DEFAULT_RECV_WINDOW = 5000
MAX_RECV_WINDOW = 60000
FUTURE_TOLERANCE_MS = 1000
_KEY_SHAPE = re.compile(r"^[A-Za-z0-9]{1,100}$")


class Security(enum.Enum):
    """Binance's endpoint security types, reduced to what the simulator checks."""

    NONE = "NONE"          # MARKET_DATA without key
    KEY = "USER_STREAM"    # API key only
    SIGNED = "USER_DATA"   # API key, signature, timestamp (TRADE and USER_DATA)


def split_signature(raw: str) -> tuple[str, str | None]:
    """(raw parameters without `signature=...`, the signature or None)."""
    kept, signature = [], None
    for part in raw.split("&") if raw else []:
        if part.startswith("signature="):
            signature = part[len("signature="):]
        else:
            kept.append(part)
    return "&".join(kept), signature


def sign(secret: str, payload: str) -> str:
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


def authenticate(security: Security, *, api_key: str | None, raw_query: str, raw_body: str,
                 params: dict[str, str], book: AccountBook, now_ms: int, ip: str) -> tuple[Account, ApiKey] | None:
    """The account a request acts for and the key it came with, or a BinanceError saying why not."""
    if security is Security.NONE:
        return None
    if not api_key or not _KEY_SHAPE.match(api_key):
        raise codes.bad_key_format()
    found = book.credentials(api_key)
    if found is None:
        raise codes.rejected_key(ip)
    account, key = found
    if security is Security.KEY:
        return found
    query, query_sig = split_signature(raw_query)
    body, body_sig = split_signature(raw_body)
    signature = query_sig or body_sig
    if not signature:
        raise codes.mandatory("signature")
    timestamp = _int(params.get("timestamp"), "timestamp")
    recv_window = _int(params.get("recvWindow", str(DEFAULT_RECV_WINDOW)), "recvWindow")
    if recv_window > MAX_RECV_WINDOW:
        raise codes.bad_recv_window()
    expected = sign(key.secret, query + body)
    if not hmac.compare_digest(expected, signature.lower()):
        raise codes.bad_signature()
    if timestamp >= now_ms + FUTURE_TOLERANCE_MS:
        raise codes.future_timestamp()
    if now_ms - timestamp > recv_window:
        raise codes.stale_timestamp()
    return found


def authorize(key: ApiKey, *, trade: bool, ip: str) -> None:
    """``trade``: the endpoint changes what the account holds (an order, leverage, margin type, a
    mode); a key without futures trading (``enableFutures: false``, e.g. a read-only key) gets
    Binance's -2015 "Invalid API-key, IP, or permissions for action", HTTP 401, as a key lacking
    the permission does there. Its reads still work."""
    if trade and not key.can_trade:
        raise codes.rejected_key(ip)


def _int(value: str | None, name: str) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise codes.mandatory(name) from None
