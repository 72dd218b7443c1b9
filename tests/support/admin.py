"""A daemon's admin server as the tests read it: a probe's status and body, one series of /metrics."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


async def probe(port: int, path: str) -> tuple[int, dict]:
    """/healthz or /readyz of the admin server on ``port``: status and JSON body."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}{path}") as response:
        return response.status, await response.json()


async def scraped(port: int, name: str, **labels: str) -> float | None:
    """The value of the series ``name`` with (at least) ``labels`` on the admin server's /metrics; None:
    absent."""
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    return next((sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                 if sample.name == name and labels.items() <= sample.labels.items()), None)
