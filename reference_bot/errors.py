"""The bot's errors, each with the exit status `python -m reference_bot` ends with."""

from __future__ import annotations


class BotError(Exception):
    """The bot cannot trade: the exchange refused a start-up step, no capital, an unknown symbol.

    One sentence that says what to do; exit status 1.
    """

    exit_code = 1


class ConfigError(BotError):
    """A file given to the bot is refused; rendered ``FILE:LINE: FIELD: message`` (exit status 2)."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        self.message = message
        self.file = file
        self.line = line
        self.field = field
        where = file or "<input>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


class ExchangeError(BotError):
    """The exchange did not do what was asked; ``code`` is Binance's error code when it gave one."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Transient(ExchangeError):
    """A timeout, a dropped connection, HTTP 5xx or -1001: worth trying again after a pause."""


class RateLimited(ExchangeError):
    """HTTP 429 or 418: nothing may be sent before ``retry_after`` seconds have passed."""

    def __init__(self, message: str, *, retry_after: float, code: int | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class Rejected(ExchangeError):
    """A refusal that retrying cannot change (bad leverage, insufficient margin, unknown order)."""


class Unauthorized(Rejected):
    """The API key, its signature or its permissions were refused."""


class NotApplied(ExchangeError):
    """The exchange answered, and its answer shows the change did not take effect."""
