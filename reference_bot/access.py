"""Where the exchange is and the account's API key: the exchange file the bot is given.

The file is JSON, ``{"rest_url", "ws_url", "sapi_url", "api_key", "api_secret"}`` (``sapi_url``
optional), written by whoever places the bot (the controller, a test). It holds the account's
API secret, so it is passed by path, never on the command line, and refused if group or
others can access it. No message ever quotes a value: any value may be the secret.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from reference_bot.errors import ConfigError

REQUIRED_KEYS = ("rest_url", "ws_url", "api_key", "api_secret")
OPTIONAL_KEYS = ("sapi_url",)


@dataclass(frozen=True)
class Endpoints:
    """Base URLs as python-binance takes them."""

    rest_url: str               # AsyncClient.FUTURES_URL, e.g. https://fapi.binance.com/fapi
    ws_url: str                 # the futures stream base, e.g. wss://fstream.binance.com/
    sapi_url: str | None = None  # AsyncClient.MARGIN_API_URL, e.g. https://api.binance.com/sapi


@dataclass(frozen=True)
class ExchangeAccess:
    """One account on one exchange; the key never shows in a repr."""

    endpoints: Endpoints
    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)

    @classmethod
    def load(cls, path: Path | str) -> ExchangeAccess:
        """Read the exchange file; `ConfigError` (exit status 2) if it cannot be used."""
        return cls.from_mapping(_parse(Path(path)), source=str(path))

    @classmethod
    def from_mapping(cls, data: object, *, source: str = "<exchange>") -> ExchangeAccess:
        """The same keys, already read (a harness placing the bot in its own process)."""
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


def _parse(path: Path) -> object:
    text = _read_private(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=str(path),
                          line=exc.lineno) from None


def _read_private(path: Path) -> str:
    """The file's text, if only its owner can access it."""
    shown = path.absolute()
    try:
        with open(path, "rb") as handle:
            # Checked on the open descriptor, so the file read is the file checked.
            mode = stat.S_IMODE(os.fstat(handle.fileno()).st_mode)
            if mode & 0o077:
                raise ConfigError(f"the exchange file holds an API secret and has mode {mode:04o}: group and "
                                  f"others must have no access; run: chmod 600 {shown}", file=str(path))
            data = handle.read()
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read it: {exc.strerror or exc}", file=str(path)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", file=str(path)) from None
