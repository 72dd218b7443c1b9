"""What every observer shares: a named source on the Clock that reports to a sink, and its one way to run.

`Source.run` is how every observer runs: it calls the observer's `follow` until cancelled. A
source that fails (``follow`` raises, or ends when it should run on) is a failed Heartbeat, so
the analysis sees nodata rather than silence, and is followed again after an exponential backoff
on the Clock; a run that lasted a whole ``interval`` starts the backoff afresh. Reads that fail
without ending the run (a refused scrape, an unreadable file) report themselves the same way,
through `fail`; a read that succeeds reports `beat`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from controller.analysis.observation import Heartbeat, Sink
from controller.clock import Backoff, Clock
from controller.logs import get_logger

log = get_logger(__name__)


class SourceEnded(Exception):
    """A source's `follow` ended; the message says why, for the failed heartbeat."""


class Source:
    """One source of observations: ``source`` names it in every Observation and Heartbeat;
    ``target`` is what it reads (a URL, a file, a unit, an account), for its log events."""

    def __init__(self, *, source: str, target: str, clock: Clock, sink: Sink, interval: float,
                 backoff: float = 1.0, max_backoff: float = 30.0) -> None:
        if interval <= 0:
            raise ValueError("interval is a positive number of seconds")
        if backoff <= 0 or max_backoff < backoff:
            raise ValueError("backoff is a positive number of seconds, max_backoff >= backoff")
        self.source = source
        self.target = target
        self.clock = clock
        self.sink = sink
        self.interval = interval
        self.restart_backoff = Backoff(clock, initial=backoff, maximum=max_backoff)
        self.failing = False

    async def run(self) -> None:
        """Follow until cancelled; each failure is a failed heartbeat, then a restart after backoff."""
        while True:
            started = self.clock.time()
            try:
                await self.follow()
                reason = "ended"
            except Exception as exc:  # noqa: BLE001 - whatever ends a source, it must report and come back
                cause = _first_error(exc)
                if isinstance(cause, SourceEnded):
                    reason = str(cause)
                else:  # a bug rather than the world: keep its traceback
                    log.exception("source_crashed", source=self.source, target=self.target)
                    reason = f"{type(cause).__name__}: {cause}"
            if self.clock.time() - started >= self.interval:  # it ran a while: a new failure, not the same one
                self.restart_backoff.reset()
            delay = self.restart_backoff.next()
            self.fail(self.clock.time(), f"{reason}; restarting in {delay:g} s", restarting=True)
            await self.clock.sleep(delay)

    async def follow(self) -> None:
        """Read the source until cancelled, reporting to the sink; raise SourceEnded to say why it stopped."""
        raise NotImplementedError

    def beat(self, ts: float) -> None:
        """A successful read at ``ts``."""
        self.sink(Heartbeat(self.source, ts))
        if self.failing:
            self.failing = False
            log.info("source_recovered", source=self.source, target=self.target)

    def fail(self, ts: float, error: str, *, restarting: bool = False) -> None:
        """A failed read at ``ts``: nodata downstream. Logged as a warning once per run of failures.
        ``restarting``: the whole source stopped and follows again after a backoff."""
        self.sink(Heartbeat(self.source, ts, ok=False, error=error, restarting=restarting))
        level = logging.DEBUG if self.failing else logging.WARNING
        self.failing = True
        log.log(level, "source_failed", source=self.source, target=self.target, error=error)


class PollingSource(Source):
    """A source read once every ``interval`` Clock seconds by `read_once`, which reports its own
    outcome (`beat` or `fail`) and raises only for what it cannot report."""

    async def follow(self) -> None:
        # The next read starts ``interval`` after the previous one started: a slow read does not
        # stretch the cadence.
        async with self.holding():
            while True:
                started = self.clock.time()
                await self.read_once()
                await self.clock.sleep(started + self.interval - self.clock.time())

    @asynccontextmanager
    async def holding(self) -> AsyncIterator[None]:
        """What the reads of one run share and release when it ends (a session, an open file)."""
        yield

    async def read_once(self) -> object:
        """One read: its observations, then `beat` or `fail`."""
        raise NotImplementedError


def _first_error(exc: BaseException) -> BaseException:
    """The error itself, out of the groups a TaskGroup wraps it in."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
