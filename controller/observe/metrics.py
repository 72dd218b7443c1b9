"""The bot's own metrics, scraped from its ``/metrics`` (Prometheus text exposition format).

Every sample becomes one Observation named as exposed (``strategy_orders_total``,
``strategy_signal_latency_seconds_bucket`` with its ``le`` label, ...) and stamped with the
Clock's time at the scrape, as Prometheus stamps a scrape with its start; a scrape's
observations go to the sink in one `Batch`, then its Heartbeat. Counters are observed
as the running totals the bot exposes; windows and rates are the analysis' business. A scrape
that fails for any reason (refused, timed out, HTTP error, a body that is not the exposition
format) emits no Observation at all, only a failed Heartbeat: a half-read page is never data.
A ``NaN`` or ``+Inf`` value is passed on as read: the evaluator refuses it from every source
alike, counts it and leaves its group without data (skipping it here would hide that).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from controller.analysis.observation import Batch, Labels, Observation, Sink, labels_of
from controller.clock import Clock
from controller.observe.source import PollingSource

ACCEPT = "text/plain;version=0.0.4;q=1.0, */*;q=0.1"
Sample = tuple[str, Labels, float]

MAX_BODY = 16 * 1024 * 1024  # a bot's page is kilobytes; anything this large is not a bot's page


class MetricsScraper(PollingSource):
    """Scrapes ``url`` every ``interval`` Clock seconds; each request is bounded by ``timeout`` seconds.
    ``trace_configs`` go on its HTTP sessions (the synthetic harness counts the scrapes in flight:
    its stepped clock must not jump while one is out)."""

    def __init__(self, url: str, *, clock: Clock, sink: Sink, interval: float = 15.0, timeout: float = 5.0,
                 source: str = "bot", trace_configs: Sequence[aiohttp.TraceConfig] = ()) -> None:
        super().__init__(source=source, target=url, clock=clock, sink=sink, interval=interval)
        if timeout <= 0:
            raise ValueError("timeout is a positive number of seconds")
        self.url = url
        self.timeout = timeout
        self.trace_configs = list(trace_configs)
        self._session: aiohttp.ClientSession | None = None

    @asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        """One HTTP session for every scrape of a run."""
        async with aiohttp.ClientSession(trace_configs=self.trace_configs) as session:
            self._session = session
            try:
                yield
            finally:
                self._session = None

    async def read_once(self) -> bool:
        """One scrape: its Observations then a Heartbeat. Returns whether it succeeded."""
        ts = self.clock.time()
        try:
            samples = await self._fetch()
        except (aiohttp.ClientError, OSError, TimeoutError, ScrapeError) as exc:
            self.fail(ts, _describe(exc, self.timeout))
            return False
        if samples:  # in one call: the evaluator judges what the scrape touched once it is all in
            self.sink(Batch(self.source, tuple(Observation(self.source, name, labels, value, ts)
                                               for name, labels, value in samples)))
        self.beat(ts)
        return True

    async def _fetch(self) -> list[Sample]:
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        if self._session is not None:
            return await self._get(self._session, timeout)
        async with aiohttp.ClientSession(trace_configs=self.trace_configs) as session:
            return await self._get(session, timeout)

    async def _get(self, session: aiohttp.ClientSession, timeout: aiohttp.ClientTimeout) -> list[Sample]:
        async with session.get(self.url, timeout=timeout, headers={"Accept": ACCEPT}) as response:
            if response.status != 200:
                raise ScrapeError(f"HTTP {response.status} {response.reason or ''}".rstrip())
            body = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                body += chunk
                if len(body) > MAX_BODY:
                    raise ScrapeError(f"the page is larger than {MAX_BODY} bytes")
        return parse(body.decode("utf-8", errors="replace"))


class ScrapeError(Exception):
    """The page could not be read as the exposition format; the message says why."""


def parse(text: str) -> list[Sample]:
    """Every sample of an exposition page as ``(name, labels, value)``; ScrapeError if any line is bad."""
    try:
        return [(sample.name, labels_of(sample.labels), float(sample.value))
                for family in text_string_to_metric_families(text) for sample in family.samples]
    except (ValueError, TypeError, IndexError, KeyError) as exc:  # what the parser raises on a bad line
        raise ScrapeError(f"not the Prometheus text format: {exc}") from None


def _describe(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, ScrapeError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout} s"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
