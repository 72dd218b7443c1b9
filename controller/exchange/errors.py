"""The exchange boundary's errors, one class per thing the caller can do about it.

`Retryable`: try again after a backoff. `RateLimited`: stop every request until
``retry_after`` has passed. `ClockSkew`: resynchronise the time offset, retry once.
`Rejected`: a business refusal (bad leverage, insufficient margin, unknown order); retrying
cannot help, so it never is. `Unauthorized`: the key or signature is wrong; an operator must
act.
"""

from __future__ import annotations

import asyncio

from controller.errors import CanaryError

# Binance error codes (https://developers.binance.com/docs/derivatives/usds-margined-futures/error-code)
UNKNOWN = -1001            # "Internal error; unable to process your request. Please try again."
TIMESTAMP_OUTSIDE = -1021  # "Timestamp for this request is outside of the recvWindow."
TOO_MANY_REQUESTS = -1003
UNAUTHORIZED_CODES = {-1002, -1022, -2014, -2015}
RETRYABLE_CODES = {UNKNOWN, -1000, -1006, -1007}  # internal, unexpected response, timeout waiting


class ExchangeError(CanaryError):
    """Base of every error from the exchange layer."""

    def __init__(self, message: str, *, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class Retryable(ExchangeError):
    """Transient: a timeout, a dropped connection, HTTP 5xx or -1001."""


class RateLimited(ExchangeError):
    """HTTP 429 (slow down) or 418 (IP banned): no request may be sent before ``retry_after`` s."""

    def __init__(self, message: str, *, retry_after: float, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after


class ClockSkew(ExchangeError):
    """-1021: our timestamp is outside the server's recvWindow."""


class Rejected(ExchangeError):
    """A business refusal (e.g. -4028 leverage invalid, -2019 margin insufficient, -2011 unknown order)."""


class Unauthorized(Rejected):
    """API key, signature or permissions refused (-2014, -2015, -1022, -1002)."""


class BudgetExhausted(ExchangeError):
    """The controller's own share of the request-weight limit is used up for this minute."""

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotApplied(ExchangeError):
    """The exchange answered, but its answer shows the change did not take effect."""


def classify(exc: BaseException) -> ExchangeError | None:
    """Map python-binance's and aiohttp's exceptions onto ours; None for anything else."""
    from aiohttp import ClientError
    from binance.exceptions import BinanceAPIException, BinanceRequestException

    if isinstance(exc, ExchangeError):
        return exc
    if isinstance(exc, BinanceAPIException):
        status, code = exc.status_code, exc.code
        text = f"HTTP {status} code {code}: {exc.message}"
        if status in (418, 429):
            return RateLimited(text, retry_after=_retry_after(exc), code=code, status=status)
        if code == TIMESTAMP_OUTSIDE:
            return ClockSkew(text, code=code, status=status)
        if status >= 500 or code in RETRYABLE_CODES:
            return Retryable(text, code=code, status=status)
        if code in UNAUTHORIZED_CODES or status == 401:
            return Unauthorized(text, code=code, status=status)
        return Rejected(text, code=code, status=status)
    if isinstance(exc, BinanceRequestException):  # a body that is not JSON: a proxy or a 5xx page
        return Retryable(f"invalid response: {exc.message[:200]}")
    if isinstance(exc, (ClientError, asyncio.TimeoutError, ConnectionError)):
        return Retryable(f"{type(exc).__name__}: {exc}")
    return None


def _retry_after(exc) -> float:
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    try:
        return max(0.0, float(headers.get("Retry-After", "")))
    except ValueError:
        return 60.0  # Binance always sends it; a minute is the weight window if it did not
