"""A release's feature toggle in its endpoint form (``toggle: {endpoint: /toggle/new_sizing}``).

The controller POSTs ``{"enabled": true}`` to that path on the bot's own HTTP address (the one its
metrics are scraped from) at the start of a stage with ``toggle: on``, and ``{"enabled": false}``
on rollback before the bot is stopped. Every call is audited (``toggle.switched``) with its answer.
A placement whose bot does not say yes (a non-2xx, no answer within `TIMEOUT`) fails; a rollback
whose bot does not say yes goes on (the bot is stopped next anyway).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from controller.clock import Clock
from controller.deploy.base import DeployError, Running
from controller.logs import get_logger
from controller.store import audit
from controller.store.database import Database

log = get_logger(__name__)

TIMEOUT = 5.0
"""Wall seconds one POST to a bot's toggle endpoint may take at placement."""
OFF_TIMEOUT = 2.0
"""Wall seconds the POST that turns it off may take: the rollback stops the bot right after, whatever it says."""


class ToggleRefused(DeployError):
    """The bot did not turn its feature toggle on: the placement fails."""


@dataclass(frozen=True)
class Switched:
    """A bot's answer to one POST: ``ok`` only for a 2xx; ``detail`` says what came back, or why nothing did."""

    url: str
    enabled: bool
    ok: bool
    status: int | None
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "enabled": self.enabled, "ok": self.ok, "status": self.status,
                "detail": self.detail}


def endpoint_url(metrics_url: str, endpoint: str) -> str:
    """``endpoint`` on the bot's metrics address (scheme, host and port of ``metrics_url``)."""
    parts = urlsplit(metrics_url)
    return urlunsplit((parts.scheme, parts.netloc, endpoint, "", ""))


async def switch(running: Running, endpoint: str, enabled: bool, *, timeout: float = TIMEOUT) -> Switched:
    """POST ``{"enabled": enabled}`` to the running bot's ``endpoint``; never raises for the bot's answer."""
    url = endpoint_url(running.metrics_url, endpoint)
    status = None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
                session.post(url, json={"enabled": enabled}) as response:
            status = response.status
            detail = f"HTTP {status} from {url}"
    except TimeoutError:
        detail = f"no answer within {timeout:g} s from {url}"
    except aiohttp.ClientError as exc:
        detail = f"{type(exc).__name__}: {exc} (posting to {url})" if str(exc) else f"{type(exc).__name__} ({url})"
    return Switched(url, enabled, status is not None and 200 <= status < 300, status, detail)


async def turn_on(db: Database, clock: Clock, running: Running, endpoint: str, *, environment: str, account: str,
                  deployment: int, actor: str) -> Switched:
    """Turn the placed bot's feature on, audited; `ToggleRefused` (after the audit) when it does not say yes."""
    switched = await switch(running, endpoint, True)
    await audit.record(db, clock, actor=actor, kind="toggle.switched", subject=f"account:{environment}/{account}",
                       release=running.release, payload={**switched.to_json(), "deployment": deployment})
    if not switched.ok:
        log.error("toggle_refused", release=running.release, account=f"{environment}/{account}",
                  detail=switched.detail)
        raise ToggleRefused(f"release {running.release} on {environment}/{account} did not turn its feature toggle "
                            f"on: {switched.detail}; the placement fails")
    log.info("toggle_on", release=running.release, account=f"{environment}/{account}", url=switched.url)
    return switched
